"""One RRHF optimizer step in PyTorch eager with Hugging Face transformers: the twin of
`rrhf bench step`, on the same model, the same tokens and the same loss, printing the same JSON
fields, so the two can be compared side by side:

    rrhf bench step --model M --device cpu --k 6 --t 192
    python3 benches/rrhf_step.py --model M --device cpu --k 6 --t 192

M is a model directory (its weights are loaded) or a bare config.json (random weights; speed and
memory do not depend on the values), e.g. benches/configs/tinyllama-1.1b.json.

The step is the original RRHF implementation's (GanjinZero/RRHF, train.py): logits of every
sequence, the length-normalised log-probability of each response, the hinge ranking loss over
the pairs the rewards order, and cross-entropy on the best response (token mean), then
clip_grad_norm_(1.0) and AdamW (lr 2e-5, betas 0.9/0.999, eps 1e-8, no weight decay).
--precision f16|bf16 runs the forward under torch.autocast (f32 weights, matmuls in half), f16
with a GradScaler, as the trainer's mixed precision does.
Needs torch and transformers; --lora-rank needs peft.
"""

import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM


def load_model(path, device):
    if os.path.isdir(path):
        model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
    else:
        config = LlamaConfig.from_json_file(path)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return model.to(device).train()


def synthetic_batch(queries, k, t, vocab):
    """The token ids `rrhf bench step` builds (src/bench.rs, synthetic_examples)."""
    ids = lambda i: (i * 7919 + 13) % (vocab - 2) + 2
    query_len = t // 4
    response_len = t - query_len
    nxt = 0
    rows, labels, rewards = [], [], []
    for _ in range(queries):
        query = [ids(i) for i in range(nxt, nxt + query_len)]
        nxt += query_len
        for r in range(k):
            response = [ids(i) for i in range(nxt, nxt + response_len)]
            nxt += response_len
            rows.append(query + response)
            labels.append([-100] * query_len + response)
            rewards.append(float(r))
    return torch.tensor(rows), torch.tensor(labels), torch.tensor(rewards).view(queries, k)


def rrhf_loss(model, input_ids, labels, rewards):
    logits = model(input_ids=input_ids).logits[:, :-1]
    targets = labels[:, 1:]
    mask = targets != -100
    logp = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.clamp(min=0).unsqueeze(2)).squeeze(2)
    sums = (logp * mask).sum(-1)
    lengths = mask.sum(-1)
    scores = (sums / lengths).view(rewards.shape)  # length penalty 1
    total = 0.0
    for q in range(rewards.shape[0]):
        s, r = scores[q], rewards[q]
        diff = s.unsqueeze(0) - s.unsqueeze(1)  # [i, j] = s_j - s_i
        ordered = (r.unsqueeze(0) - r.unsqueeze(1)) > 0  # r_j > r_i
        rank = torch.relu(-diff[ordered]).sum()  # max(0, s_i - s_j)
        best = int(torch.argmax(r))
        row = q * rewards.shape[1] + best
        ft = -sums[row] / lengths[row]
        total = total + rank + ft
    return total / rewards.shape[0]


def peak_memory_mib(device):
    if device.startswith("cuda"):
        return torch.cuda.max_memory_reserved() / 2**20, "cuda caching allocator peak reserved"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak resident set"


# Op name fragments -> the categories `scripts/profile-cpu.sh` sorts rrhf's profile into.
CATEGORIES = [
    ("matmul", ("mm", "matmul", "linear", "addmm", "bmm", "baddbmm", "dot")),
    ("attention", ("scaled_dot_product", "flash_attention")),
    ("exp, softmax, log", ("softmax", "exp", "log", "silu", "sigmoid")),
    ("copies, layout", ("copy_", "contiguous", "clone", "cat", "index", "gather", "scatter", "to", "view", "transpose", "expand", "embedding")),
    ("allocation", ("empty", "zeros", "zero_", "fill_", "ones")),
    ("elementwise", ("mul", "add", "sub", "div", "neg", "pow", "sqrt", "rsqrt", "relu", "where", "lerp", "clamp", "foreach")),
    ("reductions", ("sum", "mean", "norm", "max", "min", "argmax")),
]


def category(name):
    op = name.split("::")[-1].lower()
    for label, fragments in CATEGORIES:
        if any(f in op for f in fragments):
            return label
    return "other"


def print_profile(profiler, step_seconds):
    """The profiled step's ops by self time (wall time in the op on the calling thread, its intra-op threads within it), then by category."""
    events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
    events.sort(key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1
    print(f"profiled step: {step_seconds:.2f} s wall; ops by self CPU time", file=sys.stderr)
    for e in events[:25]:
        print(f"  {100 * e.self_cpu_time_total / total:5.1f}%  {e.self_cpu_time_total / 1e6:7.3f} s  {e.count:6d}x  {e.key}", file=sys.stderr)
    by_category = {}
    for e in events:
        by_category[category(e.key)] = by_category.get(category(e.key), 0) + e.self_cpu_time_total
    print("by category:", file=sys.stderr)
    for label, t in sorted(by_category.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * t / total:5.1f}%  {label}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--t", type=int, default=192)
    ap.add_argument("--queries", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--precision", choices=["f32", "f16", "bf16"], default="f32")
    ap.add_argument("--lora-rank", type=int)
    ap.add_argument("--lora-dropout", type=float, default=0.0)
    # transformers checkpoints by decoder layer only: the same as `rrhf bench step
    # --gradient-checkpointing layer`.
    ap.add_argument("--gradient-checkpointing", choices=["off", "layer"], default="off")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed steps, one more under torch.profiler: its ops by self time on stderr")
    args = ap.parse_args()

    device = args.device
    model = load_model(args.model, device)
    params = sum(p.numel() for p in model.parameters())
    checkpointing = args.gradient_checkpointing == "layer"
    if checkpointing:
        model.gradient_checkpointing_enable()
    if args.lora_rank:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=args.lora_rank,
                lora_alpha=16,
                lora_dropout=args.lora_dropout,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                task_type="CAUSAL_LM",
            ),
        )
        if checkpointing:
            model.enable_input_require_grads()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    vocab = model.config.vocab_size
    input_ids, labels, rewards = synthetic_batch(args.queries, args.k, args.t, vocab)
    input_ids, labels, rewards = input_ids.to(device), labels.to(device), rewards.to(device)

    half = {"f16": torch.float16, "bf16": torch.bfloat16}.get(args.precision)
    autocast = lambda: torch.autocast(device.split(":")[0], dtype=half, enabled=half is not None)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=args.precision == "f16")
    skipped = 0
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    phases, losses = [], []
    profiler = None
    for i in range(args.steps + 2 if args.profile else args.steps + 1):  # the first is a warm-up
        if i == args.steps + 1:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            profiler.__enter__()
        sync()
        start = time.perf_counter()
        with autocast():
            loss = rrhf_loss(model, input_ids, labels, rewards)
        losses.append(loss.item())
        forward = time.perf_counter() - start
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        sync()
        backward = time.perf_counter() - start - forward
        scale = scaler.get_scale() if scaler.is_enabled() else 1.0
        scaler.step(optimizer)
        scaler.update()
        if scaler.is_enabled() and scaler.get_scale() < scale:
            skipped += 1
        optimizer.zero_grad(set_to_none=True)
        sync()
        total = time.perf_counter() - start
        if profiler is not None:
            profiler.__exit__(None, None, None)
            print_profile(profiler, total)
            break
        phases.append((forward, backward, total - forward - backward))
    timed = phases[1:]
    median = lambda f: sorted(f(p) for p in timed)[len(timed) // 2]
    step_seconds = [sum(p) for p in timed]
    step = median(sum)
    tokens = args.queries * args.k * args.t
    peak, measure = peak_memory_mib(device)
    device_name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU (torch, {torch.get_num_threads()} threads)"
    print(json.dumps({
        "bench": "rrhf_step", "impl": f"pytorch {torch.__version__} eager", "device": device_name,
        "model": args.model, "params": params, "trainable_params": sum(p.numel() for p in trainable),
        "queries": args.queries, "k": args.k, "T": args.t, "tokens": tokens,
        "precision": args.precision, "skipped_steps": skipped, "lora_rank": args.lora_rank,
        "lora_dropout": args.lora_dropout if args.lora_rank else None,
        "gradient_checkpointing": args.gradient_checkpointing, "fused_head": False,
        "step_seconds": step, "step_seconds_all": step_seconds,
        "forward_seconds": median(lambda p: p[0]), "backward_seconds": median(lambda p: p[1]),
        "optimizer_seconds": median(lambda p: p[2]),
        "tokens_per_sec": tokens / step,
        "peak_mem_mib": peak, "peak_mem_measure": measure,
        "first_loss": losses[0], "loss": losses[-1],
    }, sort_keys=True))


if __name__ == "__main__":
    main()
