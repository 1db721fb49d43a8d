// rank_loss_backward_hinge.wgsl: generated from src/kernels/cube_kernels.rs by cubecl's WGSL compiler
// (scripts/update-shaders.sh); do not edit.
@group(0) @binding(4) var<storage, read_write> v25: array<f32>;
@group(0) @binding(3) var<storage, read_write> v19: array<f32>;
@group(0) @binding(2) var<storage, read_write> v13: array<f32>;
@group(0) @binding(1) var<storage, read_write> v7: array<f32>;
@group(0) @binding(0) var<storage, read_write> v1: array<f32>;
struct info_st { scalars_usize: array<u32, 10>, scalars_f32: array<f32, 2>, scalars_u32: array<u32, 2>, static_meta: array<u32, 16>, dynamic_meta: array<u32> }
@group(0) @binding(5) var<storage, read> info_var: info_st;
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) v147: vec3<u32>, @builtin(num_workgroups) v149: vec3<u32>, @builtin(local_invocation_index) v156: u32) {
let v159 = &v25;
let v160 = &v19;
let v161 = &v13;
let v162 = &v7;
let v163 = &v1;
let v5 = u32(0);
let v31 = info_var.scalars_u32[0];
let v32 = info_var.scalars_u32[1];
let v33 = info_var.scalars_f32[0];
let v148 = v147[2];
let v125 = u32(v148);
let v150 = v149[1];
let v127 = u32(v150);
let v128 = v125 * v127;
let v151 = v149[0];
let v130 = u32(v151);
let v131 = v128 * v130;
let v152 = v147[1];
let v133 = u32(v152);
let v136 = v133 * v130;
let v137 = v131 + v136;
let v154 = v147[0];
let v139 = u32(v154);
let v140 = v137 + v139;
let v158 = u32(64);
let v143 = v140 * v158;
let v157 = v156;
let v145 = u32(v157);
let v146 = v143 + v145;
let v35 = u32(v32);
let v36 = u32(v31);
let v37 = v36 * v35;
let v38 = v146 < v37;
if v38 {
let v39 = v146 / v35;
let v40 = v39 * v35;
let v41 = f32(0.0);
var<function> v122_store: f32;
let v122 = &v122_store;
*v122 = v41;
let v47 = &(*v161)[v146];
let v48 = *v47;
let v50 = v48 != v41;
if v50 {
let v54 = &(*v163)[v146];
let v55 = *v54;
let v59 = &(*v162)[v146];
let v60 = *v59;
let v62 = u32(1);
for(var v63: u32 = v5; v63 < v35; v63 += v62) {
let v65 = v40 + v63;
let v69 = &(*v161)[v65];
let v70 = *v69;
let v72 = v70 != v41;
if v72 {
let v77 = &(*v163)[v65];
let v78 = *v77;
let v83 = &(*v162)[v65];
let v84 = *v83;
let v85 = v60 < v84;
if v85 {
let v86 = v55 - v78;
let v87 = v86 + v33;
let v89 = v87 > v41;
let v90 = f32(1.0);
let v92 = select(v41, v90, v89);
let v93 = *v122;
let v94 = v93 + v92;
*v122 = v94;

}
let v95 = v84 < v60;
if v95 {
let v96 = v78 - v55;
let v97 = v96 + v33;
let v99 = v97 > v41;
let v100 = f32(1.0);
let v102 = select(v41, v100, v99);
let v103 = *v122;
let v104 = v103 - v102;
*v122 = v104;

}

}

}

}
let v108 = &(*v160)[v39];
let v109 = *v108;
let v110 = *v122;
let v111 = v110 * v109;
let v115 = &(*v159)[v146];
*v115 = v111;

}
return;

}
