// rank_loss_forward_logistic.wgsl: generated from src/kernels/cube_kernels.rs by cubecl's WGSL compiler
// (scripts/update-shaders.sh); do not edit.
@group(0) @binding(3) var<storage, read_write> v19: array<f32>;
@group(0) @binding(2) var<storage, read_write> v13: array<f32>;
@group(0) @binding(1) var<storage, read_write> v7: array<f32>;
@group(0) @binding(0) var<storage, read_write> v1: array<f32>;
struct info_st { scalars_usize: array<u32, 8>, scalars_u32: array<u32, 2>, static_meta: array<u32, 12>, dynamic_meta: array<u32> }
@group(0) @binding(4) var<storage, read> info_var: info_st;
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) v136: vec3<u32>, @builtin(num_workgroups) v138: vec3<u32>, @builtin(local_invocation_index) v145: u32) {
let v148 = &v19;
let v149 = &v13;
let v150 = &v7;
let v151 = &v1;
let v5 = u32(0);
let v25 = info_var.scalars_u32[0];
let v26 = info_var.scalars_u32[1];
let v137 = v136[2];
let v114 = u32(v137);
let v139 = v138[1];
let v116 = u32(v139);
let v117 = v114 * v116;
let v140 = v138[0];
let v119 = u32(v140);
let v120 = v117 * v119;
let v141 = v136[1];
let v122 = u32(v141);
let v125 = v122 * v119;
let v126 = v120 + v125;
let v143 = v136[0];
let v128 = u32(v143);
let v129 = v126 + v128;
let v147 = u32(64);
let v132 = v129 * v147;
let v146 = v145;
let v134 = u32(v146);
let v135 = v132 + v134;
let v28 = u32(v25);
let v29 = v135 < v28;
if v29 {
let v30 = u32(v26);
let v31 = v135 * v30;
let v32 = f32(0.0);
var<function> v109_store: f32;
let v109 = &v109_store;
*v109 = v32;
let v36 = u32(1);
for(var v37: u32 = v5; v37 < v30; v37 += v36) {
let v39 = v31 + v37;
let v43 = &(*v149)[v39];
let v44 = *v43;
let v46 = v44 != v32;
if v46 {
for(var v49: u32 = v5; v49 < v30; v49 += v36) {
let v51 = v31 + v49;
let v55 = &(*v149)[v51];
let v56 = *v55;
let v58 = v56 != v32;
var<function> v112_store: bool;
let v112 = &v112_store;
if v58 {
let v63 = &(*v150)[v39];
let v64 = *v63;
let v69 = &(*v150)[v51];
let v70 = *v69;
let v71 = v64 < v70;
*v112 = v71;

} else {
let v73 = false;
*v112 = v73;

}
let v74 = *v112;
if v74 {
let v79 = &(*v151)[v39];
let v80 = *v79;
let v85 = &(*v151)[v51];
let v86 = *v85;
let v87 = v80 - v86;
let v89 = max(v87, v32);
let v90 = abs(v87);
let v91 = -v90;
let v92 = exp(v91);
let v93 = f32(1.0);
let v94 = v93 + v92;
let v95 = log(v94);
let v96 = v89 + v95;
let v97 = *v109;
let v98 = v97 + v96;
*v109 = v98;

}

}

}

}
let v102 = &(*v148)[v135];
let v103 = *v109;
*v102 = v103;

}
return;

}
