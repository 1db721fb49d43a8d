#!/usr/bin/env bash
# The GPU benchmark: `rrhf bench step` against its PyTorch twin (benches/rrhf_step.py, eager
# transformers, the original RRHF code's stack) side by side on one GPU, on the bare configs of
# benches/configs (random weights: nothing to download), and one table of both.
#
#     scripts/gpu-bench.sh [RRHF_BINARY] [OUT.jsonl]
#
# RRHF_BINARY defaults to target/release/rrhf (a binary built elsewhere works: the GPU machine
# needs no Rust; a Linux build links libopenblas.so.0, the CPU path's matmuls: where it is missing,
# carry Debian's libopenblas0-pthread with the Vulkan loader and put its library directory in
# LD_LIBRARY_PATH). Needs python3 with torch (CUDA, ROCm or MPS), transformers and peft. Each line
# of both sides goes to OUT.jsonl (default runs/gpu-bench.jsonl); the table goes to stdout.
# RRHF_BENCH_CASES=smollm2 (a substring of the case names) runs some cases only; STEPS (3) sets
# the timed steps per case.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rrhf=${1:-$root/target/release/rrhf}
out=${2:-$root/runs/gpu-bench.jsonl}
steps=${STEPS:-3}
filter=${RRHF_BENCH_CASES:-}
configs=$root/benches/configs
mkdir -p "$(dirname "$out")"
: > "$out"
if ! torch_device=$(python3 -c 'import torch; print("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "none")' 2>/dev/null); then
  echo "gpu-bench: python3 cannot import torch (pip install torch transformers peft)" >&2
  exit 1
fi
if [ "$torch_device" = none ]; then
  echo "gpu-bench: PyTorch sees no GPU (CUDA, ROCm or MPS); nothing to compare with" >&2
  exit 1
fi
"$rrhf" devices >&2 || { echo "gpu-bench: $rrhf does not run" >&2; exit 1; }

# name | config | extra arguments of both sides (k=6 and T=192: the paper's RRHF step)
cases=(
  "smollm2-full|smollm2-135m.json|--queries 4"
  "smollm2-lora-layer|smollm2-135m.json|--queries 4 --lora-rank 8 --gradient-checkpointing layer"
  "1.1b-full|tinyllama-1.1b.json|--queries 1"
  "1.1b-lora-layer|tinyllama-1.1b.json|--queries 4 --lora-rank 8 --gradient-checkpointing layer"
  "7b-lora-layer|llama-2-7b.json|--queries 1 --lora-rank 8 --gradient-checkpointing layer"
)
precisions=(f32 f16 bf16)

run() { # side case precision command...
  local side=$1 case=$2 precision=$3
  shift 3
  local line
  if line=$("$@" 2>"$out.err" | tail -n 1) && [ -n "$line" ]; then
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["case"]=sys.argv[2]; d["side"]=sys.argv[3]; print(json.dumps(d))' \
      "$line" "$case" "$side" >> "$out"
  else
    python3 -c 'import json,sys; print(json.dumps({"case":sys.argv[1],"side":sys.argv[2],"precision":sys.argv[3],"error":sys.argv[4][-400:]}))' \
      "$case" "$side" "$precision" "$(cat "$out.err")" >> "$out"
  fi
}

for c in "${cases[@]}"; do
  IFS='|' read -r name config extra <<< "$c"
  [ -n "$filter" ] && [[ $name != *$filter* ]] && continue
  for p in "${precisions[@]}"; do
    # shellcheck disable=SC2086
    common="--model $configs/$config --k 6 --t 192 --steps $steps --precision $p $extra"
    echo "== $name $p" >&2
    # shellcheck disable=SC2086
    run rrhf "$name" "$p" "$rrhf" bench step --device gpu $common
    # shellcheck disable=SC2086
    run pytorch "$name" "$p" python3 "$root/benches/rrhf_step.py" --device "$torch_device" $common
  done
done
rm -f "$out.err"

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault((r["case"], r.get("precision")), {})[r["side"]] = r
print("| case | precision | rrhf tok/s | PyTorch tok/s | rrhf / PyTorch | rrhf peak MiB | PyTorch peak MiB | memory ratio | rrhf TFLOP/s | rrhf MFU | launches/step | host syncs/step |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for (case, precision), sides in by.items():
    a, b = sides.get("rrhf", {}), sides.get("pytorch", {})
    f = lambda d, k, fmt: (fmt.format(d[k]) if isinstance(d.get(k), (int, float)) else ("failed" if "error" in d else "-"))
    ratio = lambda x, y: f"{x / y:.2f}x" if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y else "-"
    print(f"| {case} | {precision} | {f(a,'tokens_per_sec','{:.0f}')} | {f(b,'tokens_per_sec','{:.0f}')} | "
          f"{ratio(a.get('tokens_per_sec'), b.get('tokens_per_sec'))} | {f(a,'peak_mem_mib','{:.0f}')} | "
          f"{f(b,'peak_mem_mib','{:.0f}')} | {ratio(a.get('peak_mem_mib'), b.get('peak_mem_mib'))} | "
          f"{f(a,'tflops','{:.1f}')} | {f(a,'mfu','{:.3f}')} | {f(a,'kernel_launches_per_step','{}')} | "
          f"{f(a,'host_syncs_per_step','{}')} |")
errors = [r for r in rows if "error" in r]
for r in errors:
    print(f"\n{r['side']} {r['case']} {r['precision']} failed: ...{r['error'][-300:]}", file=sys.stderr)
PY
