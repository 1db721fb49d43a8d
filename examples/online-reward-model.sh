#!/usr/bin/env bash
# Online RRHF with a trained reward model:
#   1. sample 4 responses per training and held-out query from SmolLM2 (top-p);
#   2. label them with a reward you trust (here the `length` rule; an external scorer or human
#      labels in the same {query, responses, scores} lines work the same way);
#   3. `rrhf train-rm` trains a reward model on the training queries' rankings
#      (configs/reward-model.toml) and reports its pairwise accuracy on the held-out queries;
#   4. online RRHF with `model:DIR` as the reward (configs/online-reward-model.toml);
#   5. the result against the start model, judged by the reward model and by the rule.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-openblas.sh
cargo build --release
scripts/fetch-smollm2.sh
rrhf=target/release/rrhf
model=models/SmolLM2-135M-Instruct
label=${LABEL:-rule:length:max_words=30}
out=runs/example-online-rm
mkdir -p "$out"

for split in train eval; do
  $rrhf sample --model $model --queries data/prompts/$split.jsonl --policy top-p --k 4 \
    --temperature 1.0 --max-new-tokens 96 --seed 7 --out "$out/$split-samples.jsonl"
  $rrhf score --reward "$label" --in "$out/$split-samples.jsonl" --out "$out/$split-ranked.jsonl"
done
$rrhf train-rm --config configs/reward-model.toml \
  --set data.train="\"$out/train-ranked.jsonl\"" --set data.eval="\"$out/eval-ranked.jsonl\"" \
  --set output.dir="\"$out/rm\"" --force
$rrhf train --config configs/online-reward-model.toml \
  --set online.reward="\"model:$out/rm/final\"" --set output.dir="\"$out/policy\"" --force
for judge in "model:$out/rm/final" "$label"; do
  $rrhf eval --model "$out/policy/final" --against $model --queries data/prompts/eval.jsonl \
    --reward "$judge" --batch-queries 12
done
echo "plots: $out/rm/metrics.png $out/policy/metrics.png"
