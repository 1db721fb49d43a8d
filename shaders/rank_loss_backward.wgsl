// Ranking loss, backward: one thread per (query, slot).
//
// A pair (i, j) with r_i < r_j and gap g = p_i - p_j adds +f'(g) * grad to dp_i and -f'(g) * grad
// to dp_j. Hinge (kind 0): f'(g) = 1 for g > 0, else 0 (flat at g == 0, as in the reference made
// of burn ops). Logistic (kind 1): f'(g) = sigmoid(g).

@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read_write> rewards: array<f32>;
@group(0) @binding(2) var<storage, read_write> valid: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad_loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_p: array<f32>;
// info: queries, slots per query, kind
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

fn slope(g: f32, logistic: bool) -> f32 {
    if (logistic) {
        return 1.0 / (1.0 + exp(-g));
    }
    return select(0.0, 1.0, g > 0.0);
}

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let queries = info[0];
    let k = info[1];
    let logistic = info[2] == 1u;
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
            if (ri < rj) {
                d = d + slope(pi - pj, logistic);
            }
            if (rj < ri) {
                d = d - slope(pj - pi, logistic);
            }
        }
    }
    grad_p[at] = d * grad_loss[q];
}
