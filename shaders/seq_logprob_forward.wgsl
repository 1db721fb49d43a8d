// Sequence log-prob, forward: one workgroup per (sequence, position) row of the logits.
//
// Each thread folds a strided slice of the vocabulary into a running (max, sum of exp) pair,
// the pairs are merged in workgroup memory, and thread 0 writes the row's logsumexp and the
// masked log-prob of its target. log_softmax over the vocabulary is never stored.
//
// Bindings are bounds-checked by hand: burn creates WGSL modules without runtime checks.
// Nothing returns early, so every thread reaches every barrier (uniform control flow).

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> token_logp: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse_out: array<f32>;
// info: rows, vocab, rows per grid line (the x extent of the dispatch)
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

const WG: u32 = {{ wg }}u;
const LOWEST: f32 = -3.4028235e38;

var<workgroup> part_max: array<f32, WG>;
var<workgroup> part_sum: array<f32, WG>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = info[0];
    let vocab = info[1];
    let row = wid.y * info[2] + wid.x;
    let in_range = row < rows;
    let scored = in_range && mask[min(row, rows - 1u)] != 0.0;
    // Masked rows (query, padding) skip the vocabulary: their log-prob is 0 by definition.
    let end = select(0u, vocab, scored);
    let base = row * vocab;

    var m = LOWEST;
    var s = 0.0;
    for (var v = lid.x; v < end; v = v + WG) {
        let x = logits[base + v];
        if (x > m) {
            s = s * exp(m - x) + 1.0;
            m = x;
        } else {
            s = s + exp(x - m);
        }
    }
    part_max[lid.x] = m;
    part_sum[lid.x] = s;
    workgroupBarrier();

    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid.x < stride) {
            let m1 = part_max[lid.x];
            let m2 = part_max[lid.x + stride];
            let mm = max(m1, m2);
            part_sum[lid.x] = part_sum[lid.x] * exp(m1 - mm) + part_sum[lid.x + stride] * exp(m2 - mm);
            part_max[lid.x] = mm;
        }
        workgroupBarrier();
    }

    if (lid.x == 0u && in_range) {
        var lse = 0.0;
        var logp = 0.0;
        if (scored) {
            lse = part_max[0] + log(part_sum[0]);
            let t = u32(clamp(targets[row], 0, i32(vocab) - 1));
            logp = logits[base + t] - lse;
        }
        lse_out[row] = lse;
        token_logp[row] = logp;
    }
}
