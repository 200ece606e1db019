#!/usr/bin/env bash
# Sets up and builds qkscope, then runs the main job on the built-in example.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
build/tools/capture/capture --qk examples/example_qk.safetensors --out out/example
echo "First rows of out/example/heads.csv:" >&2
head -n 5 out/example/heads.csv
