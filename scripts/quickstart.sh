#!/usr/bin/env bash
# The README's main job: get SmolLM2-135M-Instruct (converted from its GGUF), ask it a question,
# then align it online with a built-in rule (answer within 30 words): eval on held-out prompts,
# a few rounds of online RRHF, and eval of the trained model against the start model.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/ensure-vulkan.sh
scripts/ensure-openblas.sh
scripts/ensure-font.sh
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
cargo build --release
scripts/fetch-smollm2.sh
rrhf=target/release/rrhf
model=models/SmolLM2-135M-Instruct
reward=rule:length:max_words=30
$rrhf devices
$rrhf generate --model $model --prompt "What is the capital of France?" --max-new-tokens 64
echo "== the start model on held-out prompts"
$rrhf eval --model $model --queries data/prompts/eval.jsonl --reward $reward --batch-queries 12
echo "== online RRHF (configs/online-length.toml)"
$rrhf train --config configs/online-length.toml --set output.dir=runs/quickstart --force
echo "== the trained model against the start model"
$rrhf eval --model runs/quickstart/final --against $model --queries data/prompts/eval.jsonl \
  --reward $reward --batch-queries 12
echo "metrics per step: runs/quickstart/metrics.jsonl; samples per round: runs/quickstart/samples/"
