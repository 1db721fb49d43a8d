#!/usr/bin/env bash
# Where the CPU path's step time goes, rrhf beside PyTorch, on the same step:
#   scripts/profile-cpu.sh MODEL [bench step options, e.g. --lora-rank 8]
# rrhf: `rrhf bench step` under perf (Debian's linux-perf, installed if missing), its samples
# summed by symbol into categories (matmul, allocation, copies, elementwise, ...): samples of
# both threads, so the shares are of CPU time. PyTorch: benches/rrhf_step.py --profile, one step
# under torch.profiler, ops by self time (needs torch and transformers; PYTHON picks the
# interpreter). RRHF_BIN picks the binary (default: target/release/rrhf, built if missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:?usage: scripts/profile-cpu.sh MODEL [bench step options]}
shift
bin=${RRHF_BIN:-$root/target/release/rrhf}
python=${PYTHON:-python3}
if [ ! -x "$bin" ]; then
  (cd "$root" && scripts/ensure-openblas.sh && cargo build --release --bin rrhf)
fi
if ! command -v perf >/dev/null; then
  apt-get install -y linux-perf >/dev/null
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== rrhf ($bin): perf samples by category, both threads (CPU time)"
perf record -q -F 499 -o "$out/perf.data" "$bin" bench step --model "$model" --device cpu "$@" \
  >"$out/rrhf.json" 2>/dev/null
perf report -i "$out/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
  | awk '/^ +[0-9.]+%/ { pct = $1; sub(/%/, "", pct); $1 = ""; $2 = ""; print pct "\t" $0 }' \
  | "$python" -c '
import sys
rules = [
    ("matmul (gemm)", ("gemm",)),
    ("allocation: page faults, zeroing, malloc", ("clear_page", "page_fault", "alloc_folio", "memset", "malloc", "_int_free", "free_", "mmap", "munmap", "zap_", "do_anonymous")),
    ("copies, layout", ("memmove", "memcpy", "copy_", "contiguous", "transpose", "gather", "scatter", "cat")),
    ("exp, log (softmax, SiLU, logsumexp)", ("exp", "log")),
    ("elementwise (flex binary/unary/zip, SIMD)", ("binary", "unary", "scalar_op", "zip", "macerator", "simd")),
    ("reductions", ("reduce", "sum", "max")),
    ("threads (rayon scheduling, futex, idle)", ("rayon", "futex", "crossbeam", "sched", "spin", "switch")),
]
totals, top = {}, []
for line in sys.stdin:
    pct, name = line.rstrip("\n").split("\t", 1)
    pct, name = float(pct), name.strip()
    label = next((l for l, keys in rules if any(k in name for k in keys)), "other")
    totals[label] = totals.get(label, 0.0) + pct
    top.append((pct, name))
for label, pct in sorted(totals.items(), key=lambda kv: -kv[1]):
    print(f"  {pct:5.1f}%  {label}")
print("top symbols:")
for pct, name in sorted(top, reverse=True)[:12]:
    print(f"  {pct:5.1f}%  {name[:100]}")
'
"$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("  step %.2f s: forward %.2f, backward %.2f, optimizer %.2f; %s" % (d["step_seconds"], d["forward_seconds"], d["backward_seconds"], d["optimizer_seconds"], d["device"]))' "$out/rrhf.json"

echo "== PyTorch: one step under torch.profiler, ops by self time"
"$python" "$root/benches/rrhf_step.py" --model "$model" --device cpu --profile "$@" 2>&1 >/dev/null \
  | grep -v "Loading weights"
