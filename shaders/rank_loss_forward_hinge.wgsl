// rank_loss_forward_hinge.wgsl: generated from src/kernels/cube_kernels.rs by cubecl's WGSL compiler
// (scripts/update-shaders.sh); do not edit.
@group(0) @binding(3) var<storage, read_write> v19: array<f32>;
@group(0) @binding(2) var<storage, read_write> v13: array<f32>;
@group(0) @binding(1) var<storage, read_write> v7: array<f32>;
@group(0) @binding(0) var<storage, read_write> v1: array<f32>;
struct info_st { scalars_usize: array<u32, 8>, scalars_f32: array<f32, 2>, scalars_u32: array<u32, 2>, static_meta: array<u32, 12>, dynamic_meta: array<u32> }
@group(0) @binding(4) var<storage, read> info_var: info_st;
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) v131: vec3<u32>, @builtin(num_workgroups) v133: vec3<u32>, @builtin(local_invocation_index) v140: u32) {
let v143 = &v19;
let v144 = &v13;
let v145 = &v7;
let v146 = &v1;
let v5 = u32(0);
let v25 = info_var.scalars_u32[0];
let v26 = info_var.scalars_u32[1];
let v27 = info_var.scalars_f32[0];
let v132 = v131[2];
let v109 = u32(v132);
let v134 = v133[1];
let v111 = u32(v134);
let v112 = v109 * v111;
let v135 = v133[0];
let v114 = u32(v135);
let v115 = v112 * v114;
let v136 = v131[1];
let v117 = u32(v136);
let v120 = v117 * v114;
let v121 = v115 + v120;
let v138 = v131[0];
let v123 = u32(v138);
let v124 = v121 + v123;
let v142 = u32(64);
let v127 = v124 * v142;
let v141 = v140;
let v129 = u32(v141);
let v130 = v127 + v129;
let v29 = u32(v25);
let v30 = v130 < v29;
if v30 {
let v31 = u32(v26);
let v32 = v130 * v31;
let v33 = f32(0.0);
var<function> v104_store: f32;
let v104 = &v104_store;
*v104 = v33;
let v37 = u32(1);
for(var v38: u32 = v5; v38 < v31; v38 += v37) {
let v40 = v32 + v38;
let v44 = &(*v144)[v40];
let v45 = *v44;
let v47 = v45 != v33;
if v47 {
for(var v50: u32 = v5; v50 < v31; v50 += v37) {
let v52 = v32 + v50;
let v56 = &(*v144)[v52];
let v57 = *v56;
let v59 = v57 != v33;
var<function> v107_store: bool;
let v107 = &v107_store;
if v59 {
let v64 = &(*v145)[v40];
let v65 = *v64;
let v70 = &(*v145)[v52];
let v71 = *v70;
let v72 = v65 < v71;
*v107 = v72;

} else {
let v74 = false;
*v107 = v74;

}
let v75 = *v107;
if v75 {
let v80 = &(*v146)[v40];
let v81 = *v80;
let v86 = &(*v146)[v52];
let v87 = *v86;
let v88 = v81 - v87;
let v89 = v88 + v27;
let v91 = max(v89, v33);
let v92 = *v104;
let v93 = v92 + v91;
*v104 = v93;

}

}

}

}
let v97 = &(*v143)[v130];
let v98 = *v104;
*v97 = v98;

}
return;

}
