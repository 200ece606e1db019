#!/usr/bin/env bash
# Sanitizer and fuzzing checks (tests/fuzz/README.md says what runs where and why), each in
# its own build tree next to ./build (the default steps build without LibTorch):
#   asan  GCC, ASan + UBSan (build-asan): the core, text and cli test suites, and one pass over
#         every fuzz corpus;
#   tsan  GCC, TSan (build-tsan): the core and cli test suites (the store's concurrent adds,
#         the engine's worker threads, capture --qk);
#   fuzz  clang + libFuzzer, ASan + UBSan (build-fuzz): every fuzz target for
#         $QKSCOPE_FUZZ_SECONDS seconds (default 60), $JOBS at a time, on a copy of its corpus.
#   asan-plugin, tsan-plugin  (not in the default set: 5-10 CPU-minutes more) the same
#         sanitizers with LibTorch (build-asan-plugin, build-tsan-plugin): the plugin and
#         model-mode CLI tests.
# Usage: tools/run-hardening.sh [asan|tsan|fuzz|asan-plugin|tsan-plugin]...
#        (no argument: asan tsan fuzz)
# Exits non-zero on any test failure, sanitizer report or fuzzer crash; a crashing input is left
# in build-fuzz/tests/fuzz/artifacts/. Needs what tools/setup.sh installs, plus clang and
# libclang-rt-14-dev for `fuzz` (installed here when missing, as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${QKSCOPE_FUZZ_SECONDS:-60}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(asan tsan fuzz)

# Any report fails the process: ASan and UBSan stop at the first error, TSan exits non-zero.
export ASAN_OPTIONS=${ASAN_OPTIONS:-check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}

# -O1 -g1: line numbers in reports, and a third of the compile time of -O2 -g (Eigen).
configure() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DQKSCOPE_BUILD_PLUGIN=OFF \
    -DQKSCOPE_BUILD_BENCH=OFF "$@" >/dev/null
}

step_asan() {
  configure build-asan -DQKSCOPE_SANITIZE=address -DQKSCOPE_BUILD_FUZZERS=ON
  cmake --build build-asan -j"$JOBS"
  ctest --test-dir build-asan --output-on-failure -j"$JOBS" -L 'core|text|cli|fuzz'
}

step_tsan() {
  configure build-tsan -DQKSCOPE_SANITIZE=thread
  cmake --build build-tsan -j"$JOBS" --target qkscope_core_tests qkscope_cli_tests \
    qkscope_engine_isa_tests qkscope_checkpoint_tests qkscope_metrics_parts_tests
  ctest --test-dir build-tsan --output-on-failure -j"$JOBS" -L 'core|cli'
}

step_fuzz() {
  local packages=(clang libclang-rt-14-dev) missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "run-hardening: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
  # Symbolised stacks in crash reports, when an llvm-symbolizer is around.
  if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && ! command -v llvm-symbolizer >/dev/null &&
    [ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]; then
    export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
  fi
  local compiler=()  # only on the first configure: changing it later would wipe the cache
  [ -f build-fuzz/CMakeCache.txt ] || compiler=(-DCMAKE_CXX_COMPILER=clang++)
  configure build-fuzz "${compiler[@]}" -DQKSCOPE_SANITIZE=fuzzer \
    -DQKSCOPE_FUZZ_SECONDS="$FUZZ_SECONDS"
  cmake --build build-fuzz -j"$JOBS" --target qkscope_fuzzers
  ctest --test-dir build-fuzz --output-on-failure -j"$JOBS" -L fuzzing
  awk '/Testing: fuzz\..*\.run/ { name = $3 }
       /^Done [0-9]+ runs in/ { printf "run-hardening: %s: %s executions in %s s\n", name, $2, $5 }' \
    build-fuzz/Testing/Temporary/LastTest.log >&2
}

# $1: address or thread. LibTorch itself is not instrumented (see the README).
plugin_step() {
  local dir=build-${1:0:1}san-plugin
  configure "$dir" -DQKSCOPE_SANITIZE="$1" -DQKSCOPE_BUILD_PLUGIN=ON
  cmake --build "$dir" -j"$JOBS" --target qkscope_plugin_tests qkscope_cli_model_tests
  # The consumer test builds an installed copy with the system's flags: not a sanitizer build.
  ctest --test-dir "$dir" --output-on-failure -j"$JOBS" -L 'plugin|model' \
    -E InstalledPackageConsumer
}
step_asan_plugin() { plugin_step address; }
step_tsan_plugin() { plugin_step thread; }

for step in "${steps[@]}"; do
  case "$step" in
    asan | tsan | fuzz | asan-plugin | tsan-plugin)
      echo "== run-hardening: $step" >&2
      SECONDS=0
      "step_${step//-/_}"
      echo "== run-hardening: $step passed in ${SECONDS}s" >&2
      ;;
    *)
      echo "run-hardening: unknown step '$step' (expected asan, tsan, fuzz, asan-plugin or tsan-plugin)" >&2
      exit 2
      ;;
  esac
done
