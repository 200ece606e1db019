#!/bin/sh
# Builds the benchmark targets and runs every figure of the README's Performance section,
# writing JSON to out/bench/ and the plot to bench/engine_time.svg.
#
#   bench/run_all.sh                    # everything at full size (the end-to-end run alone
#                                       # takes ~30 min at 2,000 sequences on 2 cores)
#   E2E_SEQUENCES=256 E2E_ROUNDS=2 FORWARD_PAIRS=16 bench/run_all.sh   # the README's figures
#
# Environment (defaults in brackets):
#   STEPS              parts to run ["engine forward blas memory e2e"]; plot and summary always
#   BUILD, OUT, JOBS   [build-bench], [out/bench], [2]
#   FORWARD_PAIRS      interleaved plain/variant pairs per BM_Forward variant [12]
#   E2E_SEQUENCES      corpus size of the end-to-end run [2000]
#   E2E_ROUNDS         ABBA rounds, each 2 plain + 2 capture runs [1]
#   MEMORY_TOKENS      sequence-scope sizes [25000 50000], MEMORY_SITES x MEMORY_HEADS [12 x 12]
#   MEMORY_ALL_TOKENS  all-scope sizes (2 heads, one thread) [4000 8000 16000 32000]
#   SKIP_REFERENCE_BLAS  set to skip the reference-BLAS forward (about a minute)
#
# The reference BLAS is picked for one process with LD_LIBRARY_PATH; the system's
# libblas.so.3 alternative (OpenBLAS) is never changed.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-bench}
OUT=${OUT:-out/bench}
JOBS=${JOBS:-2}
REFERENCE_BLAS=/usr/lib/x86_64-linux-gnu/blas:/usr/lib/x86_64-linux-gnu/lapack

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" --target qkscope_bench_models bench_engine bench_forward bench_memory \
  bench_e2e capture -j"$JOBS"
mkdir -p "$OUT"
lscpu | sed -n 's/^Model name: *//p' >"$OUT/machine.txt"
nproc >>"$OUT/machine.txt"

STEPS=${STEPS:-engine forward blas memory e2e}
step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if step engine; then
echo "== engine against the Gram GEMMs (bench_engine)"
"$BUILD/bench/bench_engine" --benchmark_out="$OUT/engine.json" --benchmark_out_format=json
fi

if step forward; then
echo "== forward ratios and the capture's parts (bench_forward)"
QKSCOPE_BENCH_PAIRS=${FORWARD_PAIRS:-12} "$BUILD/bench/bench_forward" \
  --benchmark_filter='^BM_(Forward/|GraphDiff|CaptureOp)' \
  --benchmark_out="$OUT/forward.json" --benchmark_out_format=json
# In a process of its own: after the forwards, malloc would hand the store pages already touched.
"$BUILD/bench/bench_forward" --benchmark_filter='^BM_StoreAdd' \
  --benchmark_out="$OUT/store.json" --benchmark_out_format=json
fi

if step blas; then
echo "== BLAS: one forward with OpenBLAS (the system's choice) and with the reference BLAS"
QKSCOPE_BENCH_ONCE=3 "$BUILD/bench/bench_forward" --benchmark_filter='^BM_ForwardOnce' \
  --benchmark_out="$OUT/blas_openblas.json" --benchmark_out_format=json
if [ -z "${SKIP_REFERENCE_BLAS:-}" ]; then
  LD_LIBRARY_PATH=$REFERENCE_BLAS QKSCOPE_BENCH_ONCE=1 "$BUILD/bench/bench_forward" \
    --benchmark_filter='^BM_ForwardOnce' --benchmark_out="$OUT/blas_reference.json" \
    --benchmark_out_format=json
fi
fi

if step memory; then
echo "== engine peak memory (bench_memory, one size per process)"
for tokens in ${MEMORY_TOKENS:-25000 50000}; do
  "$BUILD/bench/bench_memory" --tokens "$tokens" --sites "${MEMORY_SITES:-12}" \
    --heads "${MEMORY_HEADS:-12}" --scope sequence | tee "$OUT/memory_sequence_$tokens.json"
done
for tokens in ${MEMORY_ALL_TOKENS:-4000 8000 16000 32000}; do  # the all scope, 2 heads, one thread
  "$BUILD/bench/bench_memory" --tokens "$tokens" --sites 1 --heads 2 --scope all --threads 1 |
    tee "$OUT/memory_all_$tokens.json"
done
# The bounded-memory passes at a size the one-pass path would also take: the cost of bounding.
"$BUILD/bench/bench_memory" --tokens 8000 --sites 1 --heads 2 --scope all --threads 1 \
  --item-memory-mb 1 | tee "$OUT/memory_all_8000_bounded.json"
fi

if step e2e; then
echo "== end to end: capture --ids against plain inference"
/usr/bin/python3 bench/e2e.py --build "$BUILD" --sequences "${E2E_SEQUENCES:-2000}" \
  --rounds "${E2E_ROUNDS:-1}" --out "$OUT"
fi

/usr/bin/python3 tools/bench_plot.py "$OUT" --svg bench/engine_time.svg --summary
