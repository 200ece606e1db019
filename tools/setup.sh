#!/usr/bin/env bash
# Installs what qkscope needs from Debian 12 (as root, or with sudo), then configures and builds
# it in ./build. Idempotent: a second run installs nothing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config git          # toolchain
  libtorch-dev python3-torch                    # LibTorch 1.13 (plugin) and torch for models/
  libopenblas0-pthread                          # fast BLAS for LibTorch (reference BLAS is ~30x slower)
  libopenblas-dev                               # cblas.h: bench_engine's OpenBLAS sgemm floor
  libeigen3-dev libfmt-dev                      # core: Gram GEMMs, formatting
  libcli11-dev nlohmann-json3-dev               # capture CLI, JSON (ctable.json, tokenizer.json, safetensors)
  libutf8proc-dev libpcre2-dev                  # tokenizers: Unicode data, GPT-2 split regex
  libsentencepiece-dev sentencepiece            # SentencePiece tokenizers (and spm_encode for a test)
  googletest libgtest-dev libgmock-dev libbenchmark-dev   # tests and benchmarks
  chromium                                      # headless check of report.html (tests/tools/report_browser_test.cpp)
  openmpi-bin libopenmpi-dev                    # mpirun -np K capture (tests/tools/mpi_test.cpp)
  libcpp-httplib-dev                            # HTTP inference server (tools/http_server)
  wrk                                           # HTTP load generator (bench/http)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${QKSCOPE_CMAKE_ARGS:-} >/dev/null
cmake --build build -j"$(nproc)"
