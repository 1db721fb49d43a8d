// Ranking loss, forward: one thread per query.
//
// loss[q] = sum over slot pairs (i, j) with r_i < r_j of f(p_i - p_j), where f is RRHF's hinge
// max(0, g) (kind 0) or the logistic log(1 + exp(g)) (kind 1). Tied rewards and padded slots
// (valid == 0) contribute nothing.

@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read_write> rewards: array<f32>;
@group(0) @binding(2) var<storage, read_write> valid: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
// info: queries, slots per query, kind
@group(0) @binding(4) var<storage, read_write> info: array<u32>;

// log(1 + exp(g)) without overflow for large g.
fn softplus(g: f32) -> f32 {
    return max(g, 0.0) + log(1.0 + exp(-abs(g)));
}

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let queries = info[0];
    let k = info[1];
    let logistic = info[2] == 1u;
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
                let g = p[base + i] - p[base + j];
                if (logistic) {
                    total = total + softplus(g);
                } else {
                    total = total + max(0.0, g);
                }
            }
        }
    }
    loss[q] = total;
}
