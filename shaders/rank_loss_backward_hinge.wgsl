// rank_loss_backward_hinge.wgsl: generated from src/kernels/cube_kernels.rs by cubecl's WGSL compiler
// (scripts/update-shaders.sh); do not edit.
@group(0) @binding(4) var<storage, read_write> v25: array<f32>;
@group(0) @binding(3) var<storage, read_write> v19: array<f32>;
@group(0) @binding(2) var<storage, read_write> v13: array<f32>;
@group(0) @binding(1) var<storage, read_write> v7: array<f32>;
@group(0) @binding(0) var<storage, read_write> v1: array<f32>;
struct info_st { scalars_usize: array<u32, 10>, scalars_u32: array<u32, 2>, static_meta: array<u32, 16>, dynamic_meta: array<u32> }
@group(0) @binding(5) var<storage, read> info_var: info_st;
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) v144: vec3<u32>, @builtin(num_workgroups) v146: vec3<u32>, @builtin(local_invocation_index) v153: u32) {
let v156 = &v25;
let v157 = &v19;
let v158 = &v13;
let v159 = &v7;
let v160 = &v1;
let v5 = u32(0);
let v31 = info_var.scalars_u32[0];
let v32 = info_var.scalars_u32[1];
let v145 = v144[2];
let v122 = u32(v145);
let v147 = v146[1];
let v124 = u32(v147);
let v125 = v122 * v124;
let v148 = v146[0];
let v127 = u32(v148);
let v128 = v125 * v127;
let v149 = v144[1];
let v130 = u32(v149);
let v133 = v130 * v127;
let v134 = v128 + v133;
let v151 = v144[0];
let v136 = u32(v151);
let v137 = v134 + v136;
let v155 = u32(64);
let v140 = v137 * v155;
let v154 = v153;
let v142 = u32(v154);
let v143 = v140 + v142;
let v34 = u32(v32);
let v35 = u32(v31);
let v36 = v35 * v34;
let v37 = v143 < v36;
if v37 {
let v38 = v143 / v34;
let v39 = v38 * v34;
let v40 = f32(0.0);
var<function> v119_store: f32;
let v119 = &v119_store;
*v119 = v40;
let v46 = &(*v158)[v143];
let v47 = *v46;
let v49 = v47 != v40;
if v49 {
let v53 = &(*v160)[v143];
let v54 = *v53;
let v58 = &(*v159)[v143];
let v59 = *v58;
let v61 = u32(1);
for(var v62: u32 = v5; v62 < v34; v62 += v61) {
let v64 = v39 + v62;
let v68 = &(*v158)[v64];
let v69 = *v68;
let v71 = v69 != v40;
if v71 {
let v76 = &(*v160)[v64];
let v77 = *v76;
let v82 = &(*v159)[v64];
let v83 = *v82;
let v84 = v59 < v83;
if v84 {
let v85 = v54 - v77;
let v87 = v85 > v40;
let v88 = f32(1.0);
let v90 = select(v40, v88, v87);
let v91 = *v119;
let v92 = v91 + v90;
*v119 = v92;

}
let v93 = v83 < v59;
if v93 {
let v94 = v77 - v54;
let v96 = v94 > v40;
let v97 = f32(1.0);
let v99 = select(v40, v97, v96);
let v100 = *v119;
let v101 = v100 - v99;
*v119 = v101;

}

}

}

}
let v105 = &(*v157)[v38];
let v106 = *v105;
let v107 = *v119;
let v108 = v107 * v106;
let v112 = &(*v156)[v143];
*v112 = v108;

}
return;

}
