#!/usr/bin/env bash
# One-time install of the public tools the benchmarks compare against (Debian packages).
# Not needed by tests or CI. Runs as root (apt-get); a no-op for tools already present.
#   iperf3 socat pgbouncer haproxy websockify hyperfine (linux-perf optional: BENCH_PERF=1)
set -euo pipefail
need=()
for t in iperf3:iperf3 socat:socat pgbouncer:pgbouncer haproxy:haproxy websockify:websockify hyperfine:hyperfine; do
  command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t##*:}")
done
[ "${BENCH_PERF:-0}" = 1 ] && ! command -v perf >/dev/null 2>&1 && need+=(linux-perf)
if [ ${#need[@]} -eq 0 ]; then echo "bench tools present"; exit 0; fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
# Keep the packages' own daemons (pgbouncer, haproxy, iperf3) from being started by their postinst:
# the benchmark starts its own instances on its own ports.
added_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d; added_policy=1
fi
trap '[ $added_policy = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
echo "installed: ${need[*]}"
