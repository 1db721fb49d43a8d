// RRHF ranking loss, forward: one thread per query.
//
// loss[q] = sum over slot pairs (i, j) with r_i < r_j of max(0, p_i - p_j). Tied rewards and
// padded slots (valid == 0) contribute nothing.

@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read_write> rewards: array<f32>;
@group(0) @binding(2) var<storage, read_write> valid: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
// info: queries, slots per query
@group(0) @binding(4) var<storage, read_write> info: array<u32>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let queries = info[0];
    let k = info[1];
    let q = gid.x;
    if (q >= queries) {
        return;
    }
    let base = q * k;
    var total = 0.0;
    for (var i = 0u; i < k; i = i + 1u) {
        if (valid[base + i] == 0.0) {
            continue;
        }
        for (var j = 0u; j < k; j = j + 1u) {
            if (valid[base + j] != 0.0 && rewards[base + i] < rewards[base + j]) {
                total = total + max(0.0, p[base + i] - p[base + j]);
            }
        }
    }
    loss[q] = total;
}
