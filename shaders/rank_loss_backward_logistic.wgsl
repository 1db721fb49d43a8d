// rank_loss_backward_logistic.wgsl: generated from src/kernels/cube_kernels.rs by cubecl's WGSL compiler
// (scripts/update-shaders.sh); do not edit.
@group(0) @binding(4) var<storage, read_write> v25: array<f32>;
@group(0) @binding(3) var<storage, read_write> v19: array<f32>;
@group(0) @binding(2) var<storage, read_write> v13: array<f32>;
@group(0) @binding(1) var<storage, read_write> v7: array<f32>;
@group(0) @binding(0) var<storage, read_write> v1: array<f32>;
struct info_st { scalars_usize: array<u32, 10>, scalars_u32: array<u32, 2>, static_meta: array<u32, 16>, dynamic_meta: array<u32> }
@group(0) @binding(5) var<storage, read> info_var: info_st;
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) v146: vec3<u32>, @builtin(num_workgroups) v148: vec3<u32>, @builtin(local_invocation_index) v155: u32) {
let v158 = &v25;
let v159 = &v19;
let v160 = &v13;
let v161 = &v7;
let v162 = &v1;
let v5 = u32(0);
let v31 = info_var.scalars_u32[0];
let v32 = info_var.scalars_u32[1];
let v147 = v146[2];
let v124 = u32(v147);
let v149 = v148[1];
let v126 = u32(v149);
let v127 = v124 * v126;
let v150 = v148[0];
let v129 = u32(v150);
let v130 = v127 * v129;
let v151 = v146[1];
let v132 = u32(v151);
let v135 = v132 * v129;
let v136 = v130 + v135;
let v153 = v146[0];
let v138 = u32(v153);
let v139 = v136 + v138;
let v157 = u32(64);
let v142 = v139 * v157;
let v156 = v155;
let v144 = u32(v156);
let v145 = v142 + v144;
let v34 = u32(v32);
let v35 = u32(v31);
let v36 = v35 * v34;
let v37 = v145 < v36;
if v37 {
let v38 = v145 / v34;
let v39 = v38 * v34;
let v40 = f32(0.0);
var<function> v121_store: f32;
let v121 = &v121_store;
*v121 = v40;
let v46 = &(*v160)[v145];
let v47 = *v46;
let v49 = v47 != v40;
if v49 {
let v53 = &(*v162)[v145];
let v54 = *v53;
let v58 = &(*v161)[v145];
let v59 = *v58;
let v61 = u32(1);
for(var v62: u32 = v5; v62 < v34; v62 += v61) {
let v64 = v39 + v62;
let v68 = &(*v160)[v64];
let v69 = *v68;
let v71 = v69 != v40;
if v71 {
let v76 = &(*v162)[v64];
let v77 = *v76;
let v82 = &(*v161)[v64];
let v83 = *v82;
let v84 = v59 < v83;
if v84 {
let v85 = v54 - v77;
let v86 = -v85;
let v87 = exp(v86);
let v88 = f32(1.0);
let v89 = v88 + v87;
let v91 = v88 / v89;
let v92 = *v121;
let v93 = v92 + v91;
*v121 = v93;

}
let v94 = v83 < v59;
if v94 {
let v95 = v77 - v54;
let v96 = -v95;
let v97 = exp(v96);
let v98 = f32(1.0);
let v99 = v98 + v97;
let v101 = v98 / v99;
let v102 = *v121;
let v103 = v102 - v101;
*v121 = v103;

}

}

}

}
let v107 = &(*v159)[v38];
let v108 = *v107;
let v109 = *v121;
let v110 = v109 * v108;
let v114 = &(*v158)[v145];
*v114 = v110;

}
return;

}
