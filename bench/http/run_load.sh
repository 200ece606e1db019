#!/usr/bin/env bash
# Load comparison of the HTTP server (tools/http_server), interleaved finely: four servers run
# side by side (only the one under load uses the CPU):
#   uninstrumented  the original model (--uninstrumented: no capture ops in the graph)
#   off             the instrumented model, capture off (compiled in, not used)
#   10, 100         capture 1 in 10, 1 in 100
# Each is warmed up (not counted); then every round runs one short wrk load against each, in an
# order rotated every round, so that the machine's load, which on a shared machine changes from
# second to second, falls on all four alike. Ratios are taken round by round. The servers'
# latency logs split their requests into captured and uncaptured. bench/http/summarise.py
# prints the table.
#
#   bench/http/run_load.sh [BUILD_DIR]   (environment: ROUNDS DURATION CONNECTIONS WORKERS
#                                         MAX_LENGTH PER_THREAD WARMUP MODEL OUT)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-build}"
server="$build/tools/http_server/qkscope_http_server"
model="${MODEL:-$build/models/bert.pt}"
rounds="${ROUNDS:-30}"
duration="${DURATION:-2}"         # seconds of each measured load (the time bound)
per_thread="${PER_THREAD:-0}"     # requests per wrk thread (a request bound; 0: none)
connections="${CONNECTIONS:-4}"
workers="${WORKERS:-2}"
max_length="${MAX_LENGTH:-64}"
warmup="${WARMUP:-3}"
out="${OUT:-$(mktemp -d /tmp/qkscope_http_load.XXXXXX)}"
[ -x "$server" ] || { echo "run_load: no $server (build the qkscope_http_server target)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "run_load: wrk not found (apt-get install wrk)" >&2; exit 2; }
mkdir -p "$out"
modes=(uninstrumented off 10 100)
declare -A pids ports

stop_all() { for m in "${!pids[@]}"; do kill -TERM "${pids[$m]}" 2>/dev/null || true; done; wait; }
trap stop_all EXIT

for mode in "${modes[@]}"; do
  args=(--model "$model" --out "$out/reports-$mode" --port 0 --threads "$workers"
        --latency-log "$out/$mode.log")
  case $mode in
    uninstrumented) args+=(--uninstrumented) ;;
    off) ;;
    *) args+=(--sample-every "$mode") ;;
  esac
  "$server" "${args[@]}" >"$out/$mode.stdout" 2>"$out/$mode.stderr" &
  pids[$mode]=$!
done
for mode in "${modes[@]}"; do
  port=""
  for _ in $(seq 600); do
    port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$out/$mode.stdout")
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "run_load: $mode did not start: $(cat "$out/$mode.stderr")" >&2; exit 1; }
  ports[$mode]=$port
  wrk -t2 -c"$connections" -d"${warmup}s" -s "$here/mixed.lua" "http://127.0.0.1:$port" \
    -- "$max_length" 100 0 99 >/dev/null
  # Requests served so far are warm-up: the summary skips their numbers.
  python3 -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())" \
    "http://127.0.0.1:$port/v1/health" >"$out/$mode.health"
done

# The server's CPU time (user + system, clock ticks) around each load: CPU per request moves
# less with other processes' load than requests/s does.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for round in $(seq 1 "$rounds"); do
  for i in 0 1 2 3; do
    mode=${modes[$(( (i + round) % 4 ))]}
    before=$(cpu "${pids[$mode]}")
    wrk -t2 -c"$connections" -d"${duration}s" -s "$here/mixed.lua" \
      "http://127.0.0.1:${ports[$mode]}" -- "$max_length" 100 "$per_thread" "$round" \
      >"$out/$mode-$round.wrk"
    echo "$(( $(cpu "${pids[$mode]}") - before )) $(getconf CLK_TCK)" >"$out/$mode-$round.cpu"
  done
  echo "round $round $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/load.txt"
done
stop_all
trap - EXIT
python3 "$here/summarise.py" "$out"
