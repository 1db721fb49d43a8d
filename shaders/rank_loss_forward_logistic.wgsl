// rank_loss_forward_logistic.wgsl: generated from src/kernels/cube_kernels.rs by cubecl's WGSL compiler
// (scripts/update-shaders.sh); do not edit.
@group(0) @binding(3) var<storage, read_write> v19: array<f32>;
@group(0) @binding(2) var<storage, read_write> v13: array<f32>;
@group(0) @binding(1) var<storage, read_write> v7: array<f32>;
@group(0) @binding(0) var<storage, read_write> v1: array<f32>;
struct info_st { scalars_usize: array<u32, 8>, scalars_f32: array<f32, 2>, scalars_u32: array<u32, 2>, static_meta: array<u32, 12>, dynamic_meta: array<u32> }
@group(0) @binding(4) var<storage, read> info_var: info_st;
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) v138: vec3<u32>, @builtin(num_workgroups) v140: vec3<u32>, @builtin(local_invocation_index) v147: u32) {
let v150 = &v19;
let v151 = &v13;
let v152 = &v7;
let v153 = &v1;
let v5 = u32(0);
let v25 = info_var.scalars_u32[0];
let v26 = info_var.scalars_u32[1];
let v27 = info_var.scalars_f32[0];
let v139 = v138[2];
let v116 = u32(v139);
let v141 = v140[1];
let v118 = u32(v141);
let v119 = v116 * v118;
let v142 = v140[0];
let v121 = u32(v142);
let v122 = v119 * v121;
let v143 = v138[1];
let v124 = u32(v143);
let v127 = v124 * v121;
let v128 = v122 + v127;
let v145 = v138[0];
let v130 = u32(v145);
let v131 = v128 + v130;
let v149 = u32(64);
let v134 = v131 * v149;
let v148 = v147;
let v136 = u32(v148);
let v137 = v134 + v136;
let v29 = u32(v25);
let v30 = v137 < v29;
if v30 {
let v31 = u32(v26);
let v32 = v137 * v31;
let v33 = f32(0.0);
var<function> v111_store: f32;
let v111 = &v111_store;
*v111 = v33;
let v37 = u32(1);
for(var v38: u32 = v5; v38 < v31; v38 += v37) {
let v40 = v32 + v38;
let v44 = &(*v151)[v40];
let v45 = *v44;
let v47 = v45 != v33;
if v47 {
for(var v50: u32 = v5; v50 < v31; v50 += v37) {
let v52 = v32 + v50;
let v56 = &(*v151)[v52];
let v57 = *v56;
let v59 = v57 != v33;
var<function> v114_store: bool;
let v114 = &v114_store;
if v59 {
let v64 = &(*v152)[v40];
let v65 = *v64;
let v70 = &(*v152)[v52];
let v71 = *v70;
let v72 = v65 < v71;
*v114 = v72;

} else {
let v74 = false;
*v114 = v74;

}
let v75 = *v114;
if v75 {
let v80 = &(*v153)[v40];
let v81 = *v80;
let v86 = &(*v153)[v52];
let v87 = *v86;
let v88 = v81 - v87;
let v89 = v88 + v27;
let v91 = max(v89, v33);
let v92 = abs(v89);
let v93 = -v92;
let v94 = exp(v93);
let v95 = f32(1.0);
let v96 = v95 + v94;
let v97 = log(v96);
let v98 = v91 + v97;
let v99 = *v111;
let v100 = v99 + v98;
*v111 = v100;

}

}

}

}
let v104 = &(*v150)[v137];
let v105 = *v111;
*v104 = v105;

}
return;

}
