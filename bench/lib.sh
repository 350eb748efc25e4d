# Helpers sourced by bench/run.sh: background processes we own, ports, /proc readings, the CSV.
# Every process started here is remembered by PID and stopped by PID in stop_all (never by name).

declare -A PID=()      # name -> pid of a background process started by start_bg
STARTED=()             # names in start order (stopped in reverse)
TCK=$(getconf CLK_TCK)

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# start_bg NAME cmd...   start in the background, stdout+stderr to $LOGS/NAME.log
start_bg() {
  local name=$1; shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  PID[$name]=$!
  STARTED+=("$name")
  echo "$name ${PID[$name]}" >> "$RUN/pids.txt"
}

alive() { kill -0 "$1" 2>/dev/null; }

# stop NAME [SIGNAL]   signal the process, wait (bounded) for it, then SIGKILL
stop_one() {
  local name=$1 sig=${2:-TERM} pid=${PID[$1]:-}
  [ -n "$pid" ] || return 0
  if alive "$pid"; then
    # forked per-connection children (socat fork) go with their parent
    local c; for c in $(pgrep -P "$pid" 2>/dev/null); do kill "$c" 2>/dev/null; done
    kill "-$sig" "$pid" 2>/dev/null
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  unset "PID[$name]"
}

stop_all() {
  local i name
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    name=${STARTED[$i]}
    case $name in connect_*) stop_one "$name" INT ;; *) stop_one "$name" TERM ;; esac
  done
  STARTED=()
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# waitport PORT [NAME]   wait up to 10 s for a listener; fail if the named process died meanwhile
waitport() {
  local p=$1 name=${2:-}
  for _ in $(seq 1 200); do
    port_open "$p" && return 0
    if [ -n "$name" ] && ! alive "${PID[$name]:-0}"; then log "$name exited:"; tail -20 "$LOGS/$name.log" >&2; return 1; fi
    sleep 0.05
  done
  log "port $p not up${name:+ ($name)}"; [ -n "$name" ] && tail -20 "$LOGS/$name.log" >&2
  return 1
}

# waitlog NAME REGEX SECONDS   wait for a line in the process's log (e.g. "Connected to")
waitlog() {
  local name=$1 re=$2 t=$3
  for _ in $(seq 1 $((t * 10))); do
    grep -qE "$re" "$LOGS/$name.log" 2>/dev/null && return 0
    alive "${PID[$name]:-0}" || break
    sleep 0.1
  done
  log "$name: no /$re/ after ${t}s:"; tail -20 "$LOGS/$name.log" >&2
  return 1
}

# CPU seconds (utime+stime+cutime+cstime, the last two for reaped children) of the named processes
cpu_s() {
  local t=0 name pid
  for name in "$@"; do
    pid=${PID[$name]:-}
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || continue
    t=$((t + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12+$13+$14+$15}')))
  done
  awk -v t=$t -v k=$TCK 'BEGIN{printf "%.3f", t/k}'
}

rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/${PID[$1]}/status" 2>/dev/null || echo 0; }

now_ns() { date +%s%N; }
elapsed_s() { awk -v a=$1 -v b=$2 'BEGIN{printf "%.3f", (b-a)/1e9}'; }
sub() { awk -v a=$1 -v b=$2 'BEGIN{printf "%.3f", b-a}'; }

# row BENCH VARIANT PATH REP VALUE UNIT WORK CPU_CLIENT_S CPU_SERVER_S [EXTRA]
#   WORK: transactions / connections / seconds / rows the CPU is divided by; EXTRA: a second figure (latency)
row() { echo "$1,$2,$3,$4,$5,$6,$7,$8,$9,${10:-}" >> "$CSV"; }
