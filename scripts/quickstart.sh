#!/usr/bin/env bash
# The README's main job: get SmolLM2-135M-Instruct, convert it from GGUF, ask it a question,
# train it a few RRHF steps on a small ranked set and score an answer before and after.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/ensure-vulkan.sh
cargo build --release
scripts/fetch-smollm2.sh
target/release/rrhf devices
target/release/rrhf generate --model models/SmolLM2-135M-Instruct \
  --prompt "What is the capital of France?" --max-new-tokens 64
target/release/rrhf logprob --model models/SmolLM2-135M-Instruct \
  --query "What is the capital of France?" --response "The capital of France is Paris."
target/release/rrhf train --config configs/smollm2-test.toml \
  --set train.device=auto --set output.dir=runs/quickstart
target/release/rrhf logprob --model runs/quickstart/final \
  --query "What is the capital of France?" --response "The capital of France is Paris."
