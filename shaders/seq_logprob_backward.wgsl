// Sequence log-prob, backward: one workgroup per (sequence, position) row.
//
// d logits[v] = g[s] * mask * ([v == target] - softmax[v]), with the softmax recomputed from the
// logsumexp the forward pass saved. (The forward sums log-probs; the negated form
// softmax - onehot is the gradient of the loss -log p.) Rows whose mask is 0 get zeros: the output buffer is fresh.

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_seq: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad_logits: array<f32>;
// info: rows, vocab, rows per grid line, positions per sequence
@group(0) @binding(6) var<storage, read_write> info: array<u32>;

const WG: u32 = {{ wg }}u;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = info[0];
    let vocab = info[1];
    let row = wid.y * info[2] + wid.x;
    if (row >= rows) {
        return;
    }
    let g = grad_seq[row / info[3]] * mask[row];
    let row_lse = lse[row];
    // Compared as given, not clamped: a target outside this vocabulary (the fused head passes
    // each vocabulary chunk with the targets shifted to it) matches no column.
    let t = targets[row];
    let base = row * vocab;
    for (var v = lid.x; v < vocab; v = v + WG) {
        var d = 0.0;
        if (g != 0.0) {
            d = -g * exp(logits[base + v] - row_lse);
            if (i32(v) == t) {
                d = d + g;
            }
        }
        grad_logits[base + v] = d;
    }
}
