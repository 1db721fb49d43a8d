#!/usr/bin/env bash
# Offline RRHF from a JSONL file, the paper's workflow end to end: sample 4 responses per query
# from the start model (diverse beam search, as the paper did), score them with a reward, train on
# the ranked file (configs/offline-rrhf.toml), and compare the result with the start model.
#
#     examples/offline-rrhf.sh                 # REWARD=rule:contains:word=... to change the reward
#
# To train on a ranked file you already have, skip to the `train` line and set data.train.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-openblas.sh
cargo build --release
scripts/fetch-smollm2.sh
rrhf=target/release/rrhf
model=models/SmolLM2-135M-Instruct
reward=${REWARD:-rule:length:max_words=30}
out=runs/example-offline
mkdir -p "$out"

$rrhf sample --model $model --queries data/prompts/train.jsonl --policy diverse-beam --k 4 \
  --max-new-tokens 96 --out "$out/samples.jsonl"
$rrhf score --reward "$reward" --in "$out/samples.jsonl" --out "$out/ranked.jsonl"
$rrhf train --config configs/offline-rrhf.toml --set data.train="\"$out/ranked.jsonl\"" \
  --set output.dir="\"$out/run\"" --force
$rrhf eval --model "$out/run/final" --against $model --queries data/prompts/eval.jsonl \
  --reward "$reward" --batch-queries 12
echo "plot: $out/run/metrics.png"
