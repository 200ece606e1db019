#!/usr/bin/env bash
# Load comparison of the HTTP server (tools/http_server), interleaved: for each round, one wrk
# run against each of four servers started in turn (order rotated every round, so that a change
# in the machine's load falls on all four alike):
#   uninstrumented  the original model (--uninstrumented: no capture ops in the graph)
#   off             the instrumented model, capture off (compiled in, not used)
#   10, 100         capture 1 in 10, 1 in 100
# Each server: a warm-up wrk run (not counted), then the measured run; the server's latency log
# splits its requests into captured and uncaptured. bench/http/summarise.py prints the table.
#
#   bench/http/run_load.sh [BUILD_DIR]     (environment: ROUNDS DURATION CONNECTIONS WORKERS
#                                           MAX_LENGTH PER_THREAD WARMUP MODEL OUT)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-build}"
server="$build/tools/http_server/qkscope_http_server"
model="${MODEL:-$build/models/bert.pt}"
rounds="${ROUNDS:-3}"
duration="${DURATION:-10}"        # seconds of each measured run (the time bound)
per_thread="${PER_THREAD:-0}"     # requests per wrk thread (the request bound; 0: none)
connections="${CONNECTIONS:-4}"
workers="${WORKERS:-2}"
max_length="${MAX_LENGTH:-64}"
warmup="${WARMUP:-2}"
out="${OUT:-$(mktemp -d /tmp/qkscope_http_load.XXXXXX)}"
[ -x "$server" ] || { echo "run_load: no $server (build the qkscope_http_server target)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "run_load: wrk not found (apt-get install wrk)" >&2; exit 2; }
mkdir -p "$out"
modes=(uninstrumented off 10 100)

run_one() {  # mode round
  local mode=$1 round=$2 tag="$1-$2" port pid
  local args=(--model "$model" --out "$out/reports-$tag" --port 0 --threads "$workers"
              --latency-log "$out/$tag.log")
  case $mode in
    uninstrumented) args+=(--uninstrumented) ;;
    off) ;;
    *) args+=(--sample-every "$mode") ;;
  esac
  "$server" "${args[@]}" >"$out/$tag.stdout" 2>"$out/$tag.stderr" &
  pid=$!
  for _ in $(seq 600); do
    port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$out/$tag.stdout")
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "run_load: $tag did not start: $(cat "$out/$tag.stderr")" >&2; exit 1; }
  wrk -t2 -c"$connections" -d"${warmup}s" -s "$here/mixed.lua" "http://127.0.0.1:$port" \
    -- "$max_length" 100 0 99 >/dev/null
  # Requests served so far are warm-up: the summary skips their numbers.
  python3 -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())" \
    "http://127.0.0.1:$port/v1/health" >"$out/$tag.health"
  # The server's CPU time (user + system, clock ticks) around the measured run: on a shared
  # machine, CPU per request moves far less with other processes' load than requests/s does.
  cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
  local cpu_before; cpu_before=$(cpu)
  wrk -t2 -c"$connections" -d"${duration}s" -s "$here/mixed.lua" "http://127.0.0.1:$port" \
    -- "$max_length" 100 "$per_thread" "$round" >"$out/$tag.wrk"
  echo "$(( $(cpu) - cpu_before )) $(getconf CLK_TCK)" >"$out/$tag.cpu"
  kill -TERM "$pid"
  wait "$pid"
  echo "run_load: $tag $(grep wrk-summary "$out/$tag.wrk") load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  echo "$tag $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/load.txt"
}

for round in $(seq 1 "$rounds"); do
  for i in 0 1 2 3; do
    run_one "${modes[$(( (i + round) % 4 ))]}" "$round"
  done
done
python3 "$here/summarise.py" "$out"
