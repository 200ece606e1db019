#!/usr/bin/env bash
# Sets up and builds qkscope, then runs every test (ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
