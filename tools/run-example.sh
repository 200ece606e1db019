#!/usr/bin/env bash
# Sets up and builds qkscope, then runs the main job on the built-in example: a small BERT
# trained on the King James Version (models/example/), over its corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
build/tools/capture/capture --model models/example/bert_kjv.pt --text models/example/corpus.txt \
    --vocab models/example/vocab.txt --out out/example
echo "First rows of out/example/heads.csv (heatmap: out/example/heatmaps.svg):" >&2
head -n 6 out/example/heads.csv
