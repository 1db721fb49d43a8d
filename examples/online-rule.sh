#!/usr/bin/env bash
# Online RRHF with a built-in rule (configs/online-length.toml): every 2 steps the policy samples
# 4 responses per query from its current weights, `rule:length:max_words=30` scores them, and
# RRHF trains on the ranking. The start model and the result are evaluated on held-out prompts.
# This is the quick start's job, on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-openblas.sh
cargo build --release
scripts/fetch-smollm2.sh
rrhf=target/release/rrhf
model=models/SmolLM2-135M-Instruct
reward=rule:length:max_words=30
out=runs/example-online-rule

$rrhf eval --model $model --queries data/prompts/eval.jsonl --reward $reward --batch-queries 12
$rrhf train --config configs/online-length.toml --set output.dir="\"$out\"" --force
$rrhf eval --model "$out/final" --against $model --queries data/prompts/eval.jsonl \
  --reward $reward --batch-queries 12
echo "plot: $out/metrics.png"
