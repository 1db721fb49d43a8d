// rank_loss_forward_hinge.wgsl: generated from src/kernels/cube_kernels.rs by cubecl's WGSL compiler
// (scripts/update-shaders.sh); do not edit.
@group(0) @binding(3) var<storage, read_write> v19: array<f32>;
@group(0) @binding(2) var<storage, read_write> v13: array<f32>;
@group(0) @binding(1) var<storage, read_write> v7: array<f32>;
@group(0) @binding(0) var<storage, read_write> v1: array<f32>;
struct info_st { scalars_usize: array<u32, 8>, scalars_u32: array<u32, 2>, static_meta: array<u32, 12>, dynamic_meta: array<u32> }
@group(0) @binding(4) var<storage, read> info_var: info_st;
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) v129: vec3<u32>, @builtin(num_workgroups) v131: vec3<u32>, @builtin(local_invocation_index) v138: u32) {
let v141 = &v19;
let v142 = &v13;
let v143 = &v7;
let v144 = &v1;
let v5 = u32(0);
let v25 = info_var.scalars_u32[0];
let v26 = info_var.scalars_u32[1];
let v130 = v129[2];
let v107 = u32(v130);
let v132 = v131[1];
let v109 = u32(v132);
let v110 = v107 * v109;
let v133 = v131[0];
let v112 = u32(v133);
let v113 = v110 * v112;
let v134 = v129[1];
let v115 = u32(v134);
let v118 = v115 * v112;
let v119 = v113 + v118;
let v136 = v129[0];
let v121 = u32(v136);
let v122 = v119 + v121;
let v140 = u32(64);
let v125 = v122 * v140;
let v139 = v138;
let v127 = u32(v139);
let v128 = v125 + v127;
let v28 = u32(v25);
let v29 = v128 < v28;
if v29 {
let v30 = u32(v26);
let v31 = v128 * v30;
let v32 = f32(0.0);
var<function> v102_store: f32;
let v102 = &v102_store;
*v102 = v32;
let v36 = u32(1);
for(var v37: u32 = v5; v37 < v30; v37 += v36) {
let v39 = v31 + v37;
let v43 = &(*v142)[v39];
let v44 = *v43;
let v46 = v44 != v32;
if v46 {
for(var v49: u32 = v5; v49 < v30; v49 += v36) {
let v51 = v31 + v49;
let v55 = &(*v142)[v51];
let v56 = *v55;
let v58 = v56 != v32;
var<function> v105_store: bool;
let v105 = &v105_store;
if v58 {
let v63 = &(*v143)[v39];
let v64 = *v63;
let v69 = &(*v143)[v51];
let v70 = *v69;
let v71 = v64 < v70;
*v105 = v71;

} else {
let v73 = false;
*v105 = v73;

}
let v74 = *v105;
if v74 {
let v79 = &(*v144)[v39];
let v80 = *v79;
let v85 = &(*v144)[v51];
let v86 = *v85;
let v87 = v80 - v86;
let v89 = max(v87, v32);
let v90 = *v102;
let v91 = v90 + v89;
*v102 = v91;

}

}

}

}
let v95 = &(*v141)[v128];
let v96 = *v102;
*v95 = v96;

}
return;

}
