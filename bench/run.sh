#!/usr/bin/env bash
# hoopctl benchmarks against public anchors (direct, socat, haproxy, pgbouncer, a bare pair of Node ws
# relays with and without bufferutil), all measured in this same invocation, ratios vs direct.
#
#   bash bench/run.sh [startup] [idle] [iperf] [connsetup] [pgbench] [bulk]     (none = all; npm run bench)
#
# Needs: bench/setup.sh once (iperf3 socat pgbouncer haproxy hyperfine from Debian), PostgreSQL 15
# binaries (initdb pg_ctl psql pgbench), Node >= 22.18 as `node` on PATH (or NODE=/path/to/node).
# Knobs (env): BENCH_RUNS=3  IPERF_T=5  PGB_T=6  PGBC_T=6  STARTUP_RUNS=20  IDLE_N=1000
#   (the defaults keep a full run near 10 minutes on 2 cores; PGB_T=10 PGBC_T=10 adds ~4 minutes)
#              BENCH_DIR=/tmp/hoop-bench (PostgreSQL cluster kept between runs, runs/<date>/ results)  BENCH_KEEP=1
#              BENCH_ONLY="hoop-tcp hoop-pg": only these paths (and direct, for the ratios)
#              IPERF_DIRS="up down": iperf directions to run (e.g. only "up" for a profile of one direction)
#              BENCH_PORT_OFFSET=0: add this to every port (a second run beside another one, with its own BENCH_DIR)
#              BENCH_PROF=1: V8 CPU profiles of the gateway and each `hoopctl connect` (runs/<date>/prof/,
#              top functions in prof-top.md; profiling slows them, so figures of such a run are not comparable)
#              PGB_CLIENTS="1 16": the pgbench -c values of the pgbench section
#              BENCH_NODE_OPTS="--trace-gc": extra node flags for the gateway and each `hoopctl connect`
# Every listener binds 127.0.0.1 on fixed ports 27009-27451 (below the ephemeral range, so no outgoing connection holds them; checked free first); every loop is bounded;
# every process started here is stopped on exit.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=lib.sh
source "$HERE/lib.sh"

RUNS=${BENCH_RUNS:-3}; IPERF_T=${IPERF_T:-5}; PGB_T=${PGB_T:-6}; PGBC_T=${PGBC_T:-6}
STARTUP_RUNS=${STARTUP_RUNS:-20}; IDLE_N=${IDLE_N:-1000}
B=${BENCH_DIR:-${TMPDIR:-/tmp}/hoop-bench}
# idle runs right after startup so its first run sees a gateway no other benchmark has grown
ALL="startup idle iperf connsetup pgbench bulk"
SECTIONS=${*:-$ALL}
for s in $SECTIONS; do [[ " $ALL " == *" $s "* ]] || die "unknown benchmark '$s' (one of: $ALL)"; done
NODE=${NODE:-node}
"$NODE" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=18)?0:1)' 2>/dev/null \
  || die "needs Node >= 22.18 as 'node' on PATH or NODE=... (found $("$NODE" --version 2>/dev/null || echo none))"
NODE=$(command -v "$NODE")
[ "$(ulimit -n)" -ge 8192 ] 2>/dev/null || ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ports
P_GW=27009
P_IPERF=27201 P_SOCAT_IP=27202 P_NSRV_IP=27203 P_NCLI_IP=27204 P_HAPROXY_IP=27207 P_NBSRV_IP=27208 P_NBCLI_IP=27209 P_HOOP_IP=27210
P_ECHO=27300 P_HOOP_IDLE=27301
P_PG=27432 P_PGBOUNCER=27434 P_NSRV_PG=27438 P_NCLI_PG=27439 P_HOOP_PGTCP=27450 P_HOOP_PG=27451
# BENCH_PORT_OFFSET=N shifts every port by N, so two runs (e.g. with different BENCH_DIR) can share a machine
if [ -n "${BENCH_PORT_OFFSET:-}" ]; then
  for v in P_GW P_IPERF P_SOCAT_IP P_NSRV_IP P_NCLI_IP P_HAPROXY_IP P_NBSRV_IP P_NBCLI_IP P_HOOP_IP P_ECHO P_HOOP_IDLE \
           P_PG P_PGBOUNCER P_NSRV_PG P_NCLI_PG P_HOOP_PGTCP P_HOOP_PG; do printf -v "$v" %d $((${!v} + BENCH_PORT_OFFSET)); done
fi

RUN=$B/runs/$(date +%Y%m%d-%H%M%S); OUT=$RUN; LOGS=$RUN/logs; CONF=$RUN/conf
mkdir -p "$LOGS" "$CONF" "$RUN/gw"
CSV=$OUT/raw.csv
echo "bench,variant,path,rep,value,unit,work,cpu_client_s,cpu_server_s,extra" > "$CSV"
PGDIR=$B/pg; PGDATA=$PGDIR/data; PGSOCK=$PGDIR/sock; PGLOG=$PGDIR/server.log; PG_STARTED=0
PG_ENGINE=unknown; PG_ENGINE_WHY=""

cleanup() {
  trap - EXIT INT TERM
  stop_all
  if [ "$PG_STARTED" = 1 ]; then as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null 2>&1; fi
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$RUN/gw" "$RUN/home"
  if [ -d "$RUN/prof" ]; then "$NODE" "$HERE/profile-top.ts" "$RUN/prof" "$RUN/pids.txt" > "$RUN/prof-top.md" && log "profiles: $RUN/prof-top.md"; fi
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PSQL=(psql -X -q -h 127.0.0.1 -p $P_PG -U postgres -v ON_ERROR_STOP=1)

for p in $P_GW $P_IPERF $P_SOCAT_IP $P_NSRV_IP $P_NCLI_IP $P_HAPROXY_IP $P_NBSRV_IP $P_NBCLI_IP $P_HOOP_IP \
         $P_ECHO $P_HOOP_IDLE $P_PGBOUNCER $P_NSRV_PG $P_NCLI_PG $P_HOOP_PGTCP $P_HOOP_PG; do
  port_open $p && die "port 127.0.0.1:$p is in use (another bench run?)"
done

# ---------------------------------------------------------------- services (started on first use)
pg_up() {
  [ -n "${PG_UP:-}" ] && return 0
  # initdb and the server run as the non-root "postgres" user when we are root; it owns $PGDIR
  if [ "$(id -u)" = 0 ]; then install -d -o postgres -g postgres "$PGDIR" "$PGSOCK"; install -d -m 700 -o postgres -g postgres "$PGDATA"; else mkdir -p "$PGDATA" "$PGSOCK"; fi
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    log "initdb $PGDATA"
    as_pg initdb -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null || die "initdb failed"
    cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $P_PG
unix_socket_directories = '$PGSOCK'
max_connections = 200
shared_buffers = 512MB
logging_collector = off
CONF
    # the gateway's postgres connection logs in as "bench" with SCRAM; everything else is trust like the anchors
    printf 'local all all trust\nhost all bench 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n' > "$PGDATA/pg_hba.conf"
  fi
  if ! as_pg pg_ctl -D "$PGDATA" status >/dev/null 2>&1; then
    port_open $P_PG && die "port $P_PG is in use by another server"
    as_pg pg_ctl -D "$PGDATA" -l "$PGLOG" -o "-p $P_PG" -w start >/dev/null || die "PostgreSQL did not start (see $PGLOG)"
    PG_STARTED=1
  fi
  if [ "$("${PSQL[@]}" -Atc "select 1 from pg_database where datname='bench'")" != 1 ]; then
    log "pgbench -i -s 10 (once; kept in $PGDATA)"
    "${PSQL[@]}" -c "create database bench" || die "createdb"
    pgbench -q -h 127.0.0.1 -p $P_PG -U postgres -i -s 10 bench >"$LOGS/pgbench-init.log" 2>&1 || die "pgbench -i failed"
    "${PSQL[@]}" -d bench -c 'vacuum analyze' \
      -c "do \$\$begin if not exists (select from pg_roles where rolname='bench') then create role bench login password 'bench-secret'; end if; end\$\$" \
      -c 'grant select on all tables in schema public to bench' || die "bench role"
  fi
  PG_UP=1
}

relay() { # name port target...  (node+node anchors; *_nb* use bufferutil, the others pure-JS masking as in the reference run)
  local name=$1 script=$2; shift 2
  case $name in nb*) start_bg "$name" "$NODE" "$HERE/anchors/$script" "$@" ;;
                *)   start_bg "$name" env WS_NO_BUFFER_UTIL=1 "$NODE" "$HERE/anchors/$script" "$@" ;; esac
  waitport "$1" "$name"
}

PROF_OPTS=()
[ "${BENCH_PROF:-0}" = 1 ] && { mkdir -p "$RUN/prof"; PROF_OPTS=(--cpu-prof --cpu-prof-dir="$RUN/prof"); }
# BENCH_NODE_OPTS="--trace-gc": extra node flags for the gateway and each `hoopctl connect` (their logs)
[ -n "${BENCH_NODE_OPTS:-}" ] && read -r -a extra_opts <<< "$BENCH_NODE_OPTS" && PROF_OPTS+=("${extra_opts[@]}")
CLI_ENV=(HOOP_CONFIG_DIR="$RUN/home" HOOP_GATEWAY="http://127.0.0.1:$P_GW" NO_COLOR=1
         DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent/hoop-bench-bus)

gateway_config() { # with_pg(0|1)
  cat <<YAML
listen: 127.0.0.1:$P_GW
store: sqlite:./data/hoop.db
auth: { issuer: dev, client_id: hoopctl, groups_claim: groups }
dev_idp:
  clients:
    - { client_id: ci-bot, client_secret: ci-secret, groups: [ci] }
connections:
  - { name: ip-tcp, type: tcp, target: { host: 127.0.0.1, port: $P_IPERF }, access: { groups: [ci] }, lease: { default: 2h, max: 4h } }
  - { name: pg-tcp, type: tcp, target: { host: 127.0.0.1, port: $P_PG }, access: { groups: [ci] }, lease: { default: 2h, max: 4h } }
  - { name: idle-tcp, type: tcp, target: { host: 127.0.0.1, port: $P_ECHO }, access: { groups: [ci] }, lease: { default: 2h, max: 4h } }
YAML
  [ "$1" = 1 ] && cat <<YAML
  - name: pg
    type: postgres
    target: { host: 127.0.0.1, port: $P_PG, database: bench, user: bench, password_env: BENCH_PG_PASSWORD }
    access: { groups: [ci] }
    lease: { default: 2h, max: 4h }
    guardrails:
      deny: [drop, truncate, delete_without_where, update_without_where]
      deny_patterns: ['pg_read_file']
    masking:
      columns: [email, '*ssn*', card_number]
      detectors: [email, credit_card, ssn]
    recording: { results: true }
YAML
}

gateway_up() {
  [ -n "${PID[gateway]:-}" ] && return 0
  local with_pg=0
  [ -f "$ROOT/src/gateway/engines/postgres/postgres-engine.ts" ] && with_pg=1
  for attempt in $with_pg 0; do
    gateway_config "$attempt" > "$CONF/gateway.yaml"
    start_bg gateway env -C "$RUN/gw" BENCH_PG_PASSWORD=bench-secret "$NODE" "${PROF_OPTS[@]}" "$ROOT/bin/hoopctl" gateway --config "$CONF/gateway.yaml"
    local ok=0
    for _ in $(seq 1 300); do
      curl -fsS "http://127.0.0.1:$P_GW/healthz" >/dev/null 2>&1 && { ok=1; break; }
      alive "${PID[gateway]}" || break
      sleep 0.1
    done
    [ $ok = 1 ] && break
    stop_one gateway
    if [ "$attempt" = 1 ]; then
      PG_ENGINE=0; PG_ENGINE_WHY="the gateway did not start with a postgres connection (see logs/gateway-with-pg.log)"
      cp "$LOGS/gateway.log" "$LOGS/gateway-with-pg.log"
    else
      tail -20 "$LOGS/gateway.log" >&2; die "gateway did not start"
    fi
  done
  [ "$with_pg" = 0 ] && { PG_ENGINE=0; PG_ENGINE_WHY="src/gateway/engines/postgres/postgres-engine.ts does not exist"; }
  env "${CLI_ENV[@]}" HOOP_CLIENT_ID=ci-bot HOOP_CLIENT_SECRET=ci-secret "$NODE" "$ROOT/bin/hoopctl" login --client-credentials \
    >"$LOGS/login.log" 2>&1 || { cat "$LOGS/login.log" >&2; die "hoopctl login --client-credentials failed"; }
}

connect_up() { # svc conn port
  [ -n "${PID[$1]:-}" ] && return 0
  gateway_up
  start_bg "$1" env "${CLI_ENV[@]}" "$NODE" "${PROF_OPTS[@]}" "$ROOT/bin/hoopctl" connect "$2" --port "$3" --duration 2h
  waitlog "$1" "^Connected to" 30 || die "hoopctl connect $2 did not start"
}

need() { # service names
  local s
  for s in "$@"; do
    [ -n "${PID[$s]:-}" ] && continue
    case $s in
      pg) pg_up ;;
      iperf3) start_bg iperf3 iperf3 -s -B 127.0.0.1 -p $P_IPERF; waitport $P_IPERF iperf3 ;;
      socat_ip) start_bg socat_ip socat TCP-LISTEN:$P_SOCAT_IP,bind=127.0.0.1,reuseaddr,fork,nodelay TCP:127.0.0.1:$P_IPERF,nodelay; waitport $P_SOCAT_IP socat_ip ;;
      haproxy)
        printf 'global\n    maxconn 2000\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\nlisten iperf\n    bind 127.0.0.1:%s\n    server ip1 127.0.0.1:%s\n' $P_HAPROXY_IP $P_IPERF > "$CONF/haproxy.cfg"
        start_bg haproxy haproxy -db -f "$CONF/haproxy.cfg"; waitport $P_HAPROXY_IP haproxy ;;
      nsrv_ip)  relay nsrv_ip server-relay.cjs $P_NSRV_IP 127.0.0.1 $P_IPERF ;;
      ncli_ip)  relay ncli_ip client-relay.cjs $P_NCLI_IP ws://127.0.0.1:$P_NSRV_IP/ ;;
      nbsrv_ip) relay nbsrv_ip server-relay.cjs $P_NBSRV_IP 127.0.0.1 $P_IPERF ;;
      nbcli_ip) relay nbcli_ip client-relay.cjs $P_NBCLI_IP ws://127.0.0.1:$P_NBSRV_IP/ ;;
      nsrv_pg)  relay nsrv_pg server-relay.cjs $P_NSRV_PG 127.0.0.1 $P_PG ;;
      ncli_pg)  relay ncli_pg client-relay.cjs $P_NCLI_PG ws://127.0.0.1:$P_NSRV_PG/ ;;
      pgbouncer)
        printf '"postgres" ""\n' > "$CONF/userlist.txt"
        printf '[databases]\nbench = host=127.0.0.1 port=%s dbname=bench\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %s\nunix_socket_dir =\nauth_type = trust\nauth_file = %s\npool_mode = session\ndefault_pool_size = 40\nmax_client_conn = 200\nlog_connections = 0\nlog_disconnections = 0\nignore_startup_parameters = extra_float_digits\n' \
          $P_PG $P_PGBOUNCER "$CONF/userlist.txt" > "$CONF/pgbouncer.ini"
        chmod 755 "$RUN" "$CONF"; chmod 644 "$CONF"/*
        if [ "$(id -u)" = 0 ]; then start_bg pgbouncer setpriv --reuid=postgres --regid=postgres --init-groups pgbouncer "$CONF/pgbouncer.ini"
        else start_bg pgbouncer pgbouncer "$CONF/pgbouncer.ini"; fi
        waitport $P_PGBOUNCER pgbouncer ;;
      echo) start_bg echo "$NODE" "$HERE/echo-server.ts" $P_ECHO; waitport $P_ECHO echo ;;
      gateway) gateway_up ;;
      connect_ip)    connect_up connect_ip ip-tcp $P_HOOP_IP ;;
      connect_pgtcp) connect_up connect_pgtcp pg-tcp $P_HOOP_PGTCP ;;
      connect_idle)  connect_up connect_idle idle-tcp $P_HOOP_IDLE ;;
      connect_pg)    connect_up connect_pg pg $P_HOOP_PG ;;
      *) die "unknown service $s" ;;
    esac || die "could not start $s"
  done
}

# is the postgres engine there, and does a psql through it answer?
pg_engine_ok() {
  [ "$PG_ENGINE" = unknown ] || { [ "$PG_ENGINE" = 1 ]; return; }
  need pg gateway
  if [ "$PG_ENGINE" = unknown ]; then
    need connect_pg
    local r; r=$(PGCONNECT_TIMEOUT=10 timeout 20 psql -X -Atw -h 127.0.0.1 -p $P_HOOP_PG -U bench -d bench -c 'select count(*) from pgbench_branches' 2>"$LOGS/pg-engine-check.log")
    if [ "$r" = 10 ]; then PG_ENGINE=1; else PG_ENGINE=0; PG_ENGINE_WHY="psql through the postgres connection failed: $(head -c 300 "$LOGS/pg-engine-check.log")"; fi
  fi
  [ "$PG_ENGINE" = 1 ] || log "skipped: postgres engine not available ($PG_ENGINE_WHY)"
  [ "$PG_ENGINE" = 1 ]
}

# paths: name|port|client-side processes|server-side processes (CPU is read from these)
IPERF_PATHS=("direct|$P_IPERF||" "socat|$P_SOCAT_IP|socat_ip|" "haproxy|$P_HAPROXY_IP|haproxy|"
  "node+node|$P_NCLI_IP|ncli_ip|nsrv_ip" "node+node+bu|$P_NBCLI_IP|nbcli_ip|nbsrv_ip" "hoop-tcp|$P_HOOP_IP|connect_ip|gateway")
PG_DIRECT="direct|$P_PG||"; PG_BOUNCER="pgbouncer|$P_PGBOUNCER|pgbouncer|"; PG_NODE="node+node|$P_NCLI_PG|ncli_pg|nsrv_pg"
PG_HTCP="hoop-tcp|$P_HOOP_PGTCP|connect_pgtcp|gateway"; PG_HPG="hoop-pg|$P_HOOP_PG|connect_pg|gateway"
# direct as the SCRAM role the gateway's postgres connection logs in with (what hoop-pg pays per connection)
PG_SCRAM="direct-scram|$P_PG|||bench"
path_field() { echo "$1" | cut -d'|' -f"$2"; }
path_user() { local u; u=$(path_field "$1" 5); echo "${u:-postgres}"; }
# keep_paths ARRAY_NAME: drop paths not named in BENCH_ONLY (direct stays: it is what ratios divide by)
keep_paths() {
  [ -n "${BENCH_ONLY:-}" ] || return 0
  local -n arr=$1; local kept=() p n
  for p in "${arr[@]}"; do n=$(path_field "$p" 1); [[ $n == direct || " $BENCH_ONLY " == *" $n "* ]] && kept+=("$p"); done
  arr=("${kept[@]}")
}
need_path() { local c s; c=$(path_field "$1" 3); s=$(path_field "$1" 4); need $c $s; }

# ---------------------------------------------------------------- benchmarks
bench_startup() {
  log "startup: ${STARTUP_RUNS} runs each (hyperfine: $(command -v hyperfine >/dev/null && echo yes || echo no))"
  mkdir -p "$RUN/home-startup"
  local spec name cmd i
  for spec in "node -e 0|$NODE -e 0" "hoopctl --version|$NODE $ROOT/bin/hoopctl --version" "hoopctl --help|$NODE $ROOT/bin/hoopctl --help"; do
    name=${spec%%|*}; cmd=${spec#*|}
    if command -v hyperfine >/dev/null; then
      HOOP_CONFIG_DIR=$RUN/home-startup hyperfine -N --warmup 3 --runs "$STARTUP_RUNS" --export-json "$RUN/startup.json" "$cmd" >/dev/null 2>&1 \
        || { log "hyperfine failed for $cmd"; continue; }
      i=0
      for t in $("$NODE" -e 'for (const t of JSON.parse(require("fs").readFileSync(process.argv[1])).results[0].times) console.log((t*1000).toFixed(2))' "$RUN/startup.json"); do
        i=$((i + 1)); row startup wall "$name" $i "$t" ms 1 0 0
      done
    else
      for i in 1 2 3; do HOOP_CONFIG_DIR=$RUN/home-startup $cmd >/dev/null 2>&1; done
      for i in $(seq 1 "$STARTUP_RUNS"); do
        local s; s=$(now_ns); HOOP_CONFIG_DIR=$RUN/home-startup $cmd >/dev/null 2>&1
        row startup wall "$name" "$i" "$(awk -v a=$s -v b=$(now_ns) 'BEGIN{printf "%.2f",(b-a)/1e6}')" ms 1 0 0
      done
    fi
  done
}

bench_iperf() {
  need iperf3
  keep_paths IPERF_PATHS
  log "iperf: ${#IPERF_PATHS[@]} paths x up/down x $RUNS runs x ${IPERF_T}s"
  local p; for p in "${IPERF_PATHS[@]}"; do need_path "$p"; done
  for p in "${IPERF_PATHS[@]}"; do timeout 20 iperf3 -c 127.0.0.1 -p "$(path_field "$p" 2)" -t 2 >/dev/null 2>&1; done # warm-up (JIT: a cold Node relay runs at half speed)
  local rep dir name port js R c0 s0 c1 s1 g t0 t1
  for rep in $(seq 1 "$RUNS"); do for dir in ${IPERF_DIRS:-up down}; do for p in "${IPERF_PATHS[@]}"; do
    name=$(path_field "$p" 1); port=$(path_field "$p" 2); js=$LOGS/iperf_${name}_${dir}_$rep.json; R=""; [ $dir = down ] && R=-R
    c0=$(cpu_s $(path_field "$p" 3)); s0=$(cpu_s $(path_field "$p" 4)); t0=$(now_ns)
    timeout $((IPERF_T + 30)) iperf3 -c 127.0.0.1 -p "$port" -t "$IPERF_T" $R -J > "$js" 2>&1
    t1=$(now_ns); sleep 0.3
    c1=$(cpu_s $(path_field "$p" 3)); s1=$(cpu_s $(path_field "$p" 4))
    g=$("$NODE" -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1])); console.log((j.end.sum_received.bits_per_second/1e9).toFixed(3))' "$js" 2>/dev/null || echo NaN)
    row iperf "$dir" "$name" "$rep" "$g" Gbit/s "$(elapsed_s $t0 $t1)" "$(sub $c0 $c1)" "$(sub $s0 $s1)"
    log "iperf $name $dir #$rep ${g} Gbit/s  cpu client $(sub $c0 $c1)s server $(sub $s0 $s1)s"
  done; done; done
}

# pgbench_row BENCH VARIANT PATH REP USER -- pgbench args...
pgbench_run() {
  local bench=$1 variant=$2 p=$3 rep=$4; shift 4
  local name port logf c0 s0 c1 s1 tps lat tx
  name=$(path_field "$p" 1); port=$(path_field "$p" 2); logf=$LOGS/${bench}_${name}_${variant}_$rep.log
  c0=$(cpu_s $(path_field "$p" 3)); s0=$(cpu_s $(path_field "$p" 4))
  PGPASSWORD=bench-secret timeout 120 pgbench -h 127.0.0.1 -p "$port" -U "$(path_user "$p")" -n "$@" bench > "$logf" 2>&1
  sleep 0.3
  c1=$(cpu_s $(path_field "$p" 3)); s1=$(cpu_s $(path_field "$p" 4))
  tps=$(grep -oP 'tps = \K[0-9.]+' "$logf" | head -1); lat=$(grep -oP 'latency average = \K[0-9.]+' "$logf")
  tx=$(grep -oP 'actually processed: \K[0-9]+' "$logf")
  local failed; failed=$(grep -oP 'number of failed transactions: \K[0-9]+' "$logf")
  [ -n "$tps" ] || log "pgbench $name failed: $(tail -3 "$logf" | tr '\n' ' ')"
  [ "${failed:-0}" = 0 ] || log "pgbench $name: $failed failed transactions"
  row "$bench" "$variant" "$name" "$rep" "${tps:-NaN}" tps "${tx:-0}" "$(sub $c0 $c1)" "$(sub $s0 $s1)" "${lat:-}"
  log "$bench $name $variant #$rep tps=${tps:-FAILED} lat=${lat:-?}ms tx=${tx:-0} cpu client $(sub $c0 $c1)s server $(sub $s0 $s1)s"
}

bench_connsetup() {
  need pg
  local paths=("$PG_DIRECT" "$PG_NODE" "$PG_HTCP") p rep
  pg_engine_ok && paths+=("$PG_HPG" "$PG_SCRAM")
  keep_paths paths
  for p in "${paths[@]}"; do need_path "$p"; done
  log "connsetup: pgbench -S -C -c 1 -T $PGBC_T, ${#paths[@]} paths x $RUNS runs"
  for p in "${paths[@]}"; do PGPASSWORD=bench-secret timeout 30 pgbench -h 127.0.0.1 -p "$(path_field "$p" 2)" -U "$(path_user "$p")" -n -S -C -c 1 -T 2 bench >/dev/null 2>&1; done
  for rep in $(seq 1 "$RUNS"); do for p in "${paths[@]}"; do
    pgbench_run connsetup c1 "$p" "$rep" -S -C -c 1 -j 1 -T "$PGBC_T"
  done; done
}

bench_pgbench() {
  pg_engine_ok || { row pgbench skipped hoop-pg 0 NaN tps 0 0 0 "$PG_ENGINE_WHY"; return 0; }
  local paths=("$PG_DIRECT" "$PG_BOUNCER" "$PG_NODE" "$PG_HTCP" "$PG_HPG") p rep c
  keep_paths paths
  for p in "${paths[@]}"; do need_path "$p"; done
  log "pgbench: -S -c 1 / -c 16 -T $PGB_T, ${#paths[@]} paths x $RUNS runs"
  for p in "${paths[@]}"; do timeout 30 pgbench -h 127.0.0.1 -p "$(path_field "$p" 2)" -U postgres -n -S -c 16 -j 2 -T 2 bench >/dev/null 2>&1; done
  for rep in $(seq 1 "$RUNS"); do for c in ${PGB_CLIENTS:-1 16}; do for p in "${paths[@]}"; do
    pgbench_run pgbench "c$c" "$p" "$rep" -S -c "$c" -j 2 -T "$PGB_T"
  done; done; done
}

bench_idle() {
  need echo connect_idle
  log "idle: $IDLE_N idle connections through hoopctl connect, $RUNS runs"
  local rep g0 c0 g1 c1 g2 c2 ipid t cpu0 cpu1
  for rep in $(seq 1 "$RUNS"); do
    g0=$(rss_kb gateway); c0=$(rss_kb connect_idle); cpu0=$(cpu_s connect_idle gateway)
    start_bg idle "$NODE" "$HERE/idle-conns.ts" $P_HOOP_IDLE "$IDLE_N" 50 120
    waitlog idle '^open ' 120 || { stop_one idle; log "idle: connections did not open"; continue; }
    sleep 2
    g1=$(rss_kb gateway); c1=$(rss_kb connect_idle); cpu1=$(cpu_s connect_idle gateway)
    t=$(grep -oP '^open \d+ in \K[0-9]+' "$LOGS/idle.log"); local opened; opened=$(grep -oP '^open \K\d+' "$LOGS/idle.log")
    stop_one idle INT
    sleep 3
    g2=$(rss_kb gateway); c2=$(rss_kb connect_idle)
    row idle rss_before gateway "$rep" "$g0" KB 0 0 0; row idle rss_before cli "$rep" "$c0" KB 0 0 0
    row idle rss_open gateway "$rep" "$g1" KB 0 0 0;   row idle rss_open cli "$rep" "$c1" KB 0 0 0
    row idle rss_after_close gateway "$rep" "$g2" KB 0 0 0; row idle rss_after_close cli "$rep" "$c2" KB 0 0 0
    row idle kb_per_conn gateway "$rep" "$(awk -v a=$g0 -v b=$g1 -v n=$opened 'BEGIN{printf "%.1f",(b-a)/n}')" KB/conn "$opened" 0 0
    row idle kb_per_conn cli "$rep" "$(awk -v a=$c0 -v b=$c1 -v n=$opened 'BEGIN{printf "%.1f",(b-a)/n}')" KB/conn "$opened" 0 0
    row idle open_rate hoop-tcp "$rep" "$(awk -v t=$t -v n=$opened 'BEGIN{printf "%.0f", (t>0 ? n*1000/t : 0)}')" conn/s "$opened" 0 "$(sub $cpu0 $cpu1)"
    log "idle #$rep opened $opened/$IDLE_N in ${t}ms; gateway RSS ${g0}->${g1}->${g2} KB, CLI RSS ${c0}->${c1}->${c2} KB"
  done
}

bench_bulk() {
  pg_engine_ok || { row bulk skipped hoop-pg 0 NaN s 0 0 0 "$PG_ENGINE_WHY"; return 0; }
  local paths=("$PG_DIRECT" "$PG_HTCP" "$PG_HPG") p rep v name port q s e c0 s0 c1 s1 n
  keep_paths paths
  for p in "${paths[@]}"; do need_path "$p"; done
  local rows bytes
  rows=$("${PSQL[@]}" -d bench -Atc 'select count(*) from pgbench_accounts')
  bytes=$("${PSQL[@]}" -d bench -c 'copy pgbench_accounts to stdout' | wc -c)
  log "bulk: copy / select of $rows rows ($bytes bytes as COPY text), ${#paths[@]} paths x $RUNS runs"
  # warm-up, and proof that every path delivers every row (masking must not drop or add any)
  for p in "${paths[@]}"; do
    n=$(timeout 120 psql -X -h 127.0.0.1 -p "$(path_field "$p" 2)" -U postgres -d bench -c 'copy pgbench_accounts to stdout' 2>>"$LOGS/bulk-check.log" | wc -l)
    [ "$n" = "$rows" ] || log "bulk: $(path_field "$p" 1) delivered $n of $rows COPY rows"
  done
  for rep in $(seq 1 "$RUNS"); do for v in copy select; do for p in "${paths[@]}"; do
    name=$(path_field "$p" 1); port=$(path_field "$p" 2)
    case $v in copy) q='copy pgbench_accounts to stdout' ;; select) q='select * from pgbench_accounts' ;; esac
    c0=$(cpu_s $(path_field "$p" 3)); s0=$(cpu_s $(path_field "$p" 4)); s=$(now_ns)
    timeout 300 psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d bench -c "$q" > /dev/null 2>>"$LOGS/bulk_${name}.log" \
      || log "bulk $name $v failed: $(tail -2 "$LOGS/bulk_${name}.log")"
    e=$(now_ns); sleep 0.3
    c1=$(cpu_s $(path_field "$p" 3)); s1=$(cpu_s $(path_field "$p" 4))
    row bulk "$v" "$name" "$rep" "$(elapsed_s $s $e)" s "$rows" "$(sub $c0 $c1)" "$(sub $s0 $s1)" "$bytes"
    log "bulk $name $v #$rep $(elapsed_s $s $e)s cpu client $(sub $c0 $c1)s server $(sub $s0 $s1)s"
  done; done; done
}

# ---------------------------------------------------------------- main
T0=$(now_ns)
{ echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"; echo "command: bash bench/run.sh $* (BENCH_RUNS=$RUNS IPERF_T=$IPERF_T PGB_T=$PGB_T PGBC_T=$PGBC_T STARTUP_RUNS=$STARTUP_RUNS IDLE_N=$IDLE_N)"
  echo "load average at the start: $(cut -d" " -f1-3 /proc/loadavg) (other work on the machine adds noise)"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GB", $2/1048576}' /proc/meminfo), $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "node: $("$NODE" --version); hoopctl: $("$NODE" "$ROOT/bin/hoopctl" --version 2>/dev/null); commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "tools: $(pgbench --version 2>/dev/null); $(iperf3 --version 2>/dev/null | head -1); $(socat -V 2>/dev/null | sed -n 2p); $(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3); $(pgbouncer --version 2>/dev/null | head -1); $(hyperfine --version 2>/dev/null)"
} > "$OUT/env.txt"
for s in $ALL; do [[ " $SECTIONS " == *" $s "* ]] && "bench_$s"; done
echo "wall: $(elapsed_s $T0 $(now_ns)) s; load average at the end: $(cut -d" " -f1-3 /proc/loadavg)" >> "$OUT/env.txt"
[ "$PG_ENGINE" = 0 ] && echo "postgres engine: skipped: postgres engine not available ($PG_ENGINE_WHY)" >> "$OUT/env.txt"
"$NODE" "$HERE/summarize.ts" "$CSV" "$OUT/env.txt" > "$OUT/summary.md"
cat "$OUT/summary.md"
log "results: $OUT (raw.csv, summary.md, logs/)"
