// RRHF ranking loss, backward: one thread per (query, slot).
//
// A pair (i, j) with r_i < r_j and p_i > p_j adds +g to dp_i and -g to dp_j; at p_i == p_j the
// hinge is flat (gradient 0), as in the reference made of burn ops.

@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read_write> rewards: array<f32>;
@group(0) @binding(2) var<storage, read_write> valid: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad_loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_p: array<f32>;
// info: queries, slots per query
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let queries = info[0];
    let k = info[1];
    let at = gid.x;
    if (at >= queries * k) {
        return;
    }
    let q = at / k;
    let base = q * k;
    var d = 0.0;
    if (valid[at] != 0.0) {
        let pi = p[at];
        let ri = rewards[at];
        for (var j = 0u; j < k; j = j + 1u) {
            if (valid[base + j] == 0.0) {
                continue;
            }
            let pj = p[base + j];
            let rj = rewards[base + j];
            if (ri < rj && pi > pj) {
                d = d + 1.0;
            }
            if (rj < ri && pj > pi) {
                d = d - 1.0;
            }
        }
    }
    grad_p[at] = d * grad_loss[q];
}
