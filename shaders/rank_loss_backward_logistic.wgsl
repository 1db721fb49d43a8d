// rank_loss_backward_logistic.wgsl: generated from src/kernels/cube_kernels.rs by cubecl's WGSL compiler
// (scripts/update-shaders.sh); do not edit.
@group(0) @binding(4) var<storage, read_write> v25: array<f32>;
@group(0) @binding(3) var<storage, read_write> v19: array<f32>;
@group(0) @binding(2) var<storage, read_write> v13: array<f32>;
@group(0) @binding(1) var<storage, read_write> v7: array<f32>;
@group(0) @binding(0) var<storage, read_write> v1: array<f32>;
struct info_st { scalars_usize: array<u32, 10>, scalars_f32: array<f32, 2>, scalars_u32: array<u32, 2>, static_meta: array<u32, 16>, dynamic_meta: array<u32> }
@group(0) @binding(5) var<storage, read> info_var: info_st;
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) v149: vec3<u32>, @builtin(num_workgroups) v151: vec3<u32>, @builtin(local_invocation_index) v158: u32) {
let v161 = &v25;
let v162 = &v19;
let v163 = &v13;
let v164 = &v7;
let v165 = &v1;
let v5 = u32(0);
let v31 = info_var.scalars_u32[0];
let v32 = info_var.scalars_u32[1];
let v33 = info_var.scalars_f32[0];
let v150 = v149[2];
let v127 = u32(v150);
let v152 = v151[1];
let v129 = u32(v152);
let v130 = v127 * v129;
let v153 = v151[0];
let v132 = u32(v153);
let v133 = v130 * v132;
let v154 = v149[1];
let v135 = u32(v154);
let v138 = v135 * v132;
let v139 = v133 + v138;
let v156 = v149[0];
let v141 = u32(v156);
let v142 = v139 + v141;
let v160 = u32(64);
let v145 = v142 * v160;
let v159 = v158;
let v147 = u32(v159);
let v148 = v145 + v147;
let v35 = u32(v32);
let v36 = u32(v31);
let v37 = v36 * v35;
let v38 = v148 < v37;
if v38 {
let v39 = v148 / v35;
let v40 = v39 * v35;
let v41 = f32(0.0);
var<function> v124_store: f32;
let v124 = &v124_store;
*v124 = v41;
let v47 = &(*v163)[v148];
let v48 = *v47;
let v50 = v48 != v41;
if v50 {
let v54 = &(*v165)[v148];
let v55 = *v54;
let v59 = &(*v164)[v148];
let v60 = *v59;
let v62 = u32(1);
for(var v63: u32 = v5; v63 < v35; v63 += v62) {
let v65 = v40 + v63;
let v69 = &(*v163)[v65];
let v70 = *v69;
let v72 = v70 != v41;
if v72 {
let v77 = &(*v165)[v65];
let v78 = *v77;
let v83 = &(*v164)[v65];
let v84 = *v83;
let v85 = v60 < v84;
if v85 {
let v86 = v55 - v78;
let v87 = v86 + v33;
let v88 = -v87;
let v89 = exp(v88);
let v90 = f32(1.0);
let v91 = v90 + v89;
let v93 = v90 / v91;
let v94 = *v124;
let v95 = v94 + v93;
*v124 = v95;

}
let v96 = v84 < v60;
if v96 {
let v97 = v78 - v55;
let v98 = v97 + v33;
let v99 = -v98;
let v100 = exp(v99);
let v101 = f32(1.0);
let v102 = v101 + v100;
let v104 = v101 / v102;
let v105 = *v124;
let v106 = v105 - v104;
*v124 = v106;

}

}

}

}
let v110 = &(*v162)[v39];
let v111 = *v110;
let v112 = *v124;
let v113 = v112 * v111;
let v117 = &(*v161)[v148];
*v117 = v113;

}
return;

}
