// seq_logprob_backward.wgsl: generated from src/kernels/cube_kernels.rs by cubecl's WGSL compiler
// (scripts/update-shaders.sh); do not edit.
@group(0) @binding(5) var<storage, read_write> v31: array<f32>;
@group(0) @binding(4) var<storage, read_write> v25: array<f32>;
@group(0) @binding(3) var<storage, read_write> v19: array<f32>;
@group(0) @binding(2) var<storage, read_write> v13: array<f32>;
@group(0) @binding(1) var<storage, read_write> v7: array<i32>;
@group(0) @binding(0) var<storage, read_write> v1: array<f32>;
struct info_st { scalars_usize: array<u32, 12>, scalars_u32: array<u32, 4>, static_meta: array<u32, 18>, dynamic_meta: array<u32> }
@group(0) @binding(6) var<storage, read> info_var: info_st;
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_id) v132: vec3<u32>, @builtin(workgroup_id) v134: vec3<u32>, @builtin(num_workgroups) v136: vec3<u32>) {
let v142 = &v31;
let v143 = &v25;
let v144 = &v19;
let v145 = &v13;
let v146 = &v7;
let v147 = &v1;
let v37 = info_var.scalars_u32[0];
let v38 = info_var.scalars_u32[1];
let v39 = info_var.scalars_u32[2];
let v135 = v134[2];
let v116 = u32(v135);
let v137 = v136[1];
let v118 = u32(v137);
let v119 = v116 * v118;
let v138 = v136[0];
let v121 = u32(v138);
let v122 = v119 * v121;
let v139 = v134[1];
let v124 = u32(v139);
let v127 = v124 * v121;
let v128 = v122 + v127;
let v141 = v134[0];
let v130 = u32(v141);
let v131 = v128 + v130;
let v41 = u32(v37);
let v42 = v131 < v41;
if v42 {
let v43 = u32(v38);
let v44 = u32(v39);
let v45 = v131 / v44;
let v49 = &(*v143)[v45];
let v50 = *v49;
let v54 = &(*v145)[v131];
let v55 = *v54;
let v56 = v50 * v55;
let v60 = &(*v144)[v131];
let v61 = *v60;
let v65 = &(*v146)[v131];
let v66 = *v65;
let v67 = v131 * v43;
let v133 = v132[0];
let v69 = u32(v133);
var<function> v112_store: u32;
let v112 = &v112_store;
*v112 = v69;
loop {
let v71 = *v112;
let v72 = v71 < v43;
if !v72 { break; }
let v74 = f32(0.0);
var<function> v114_store: f32;
let v114 = &v114_store;
*v114 = v74;
let v78 = v56 != v74;
if v78 {
let v79 = -v56;
let v80 = *v112;
let v81 = v67 + v80;
let v85 = &(*v147)[v81];
let v86 = *v85;
let v87 = v86 - v61;
let v88 = exp(v87);
let v89 = v79 * v88;
*v114 = v89;
let v90 = *v112;
let v91 = i32(v90);
let v92 = v91 == v66;
if v92 {
let v93 = *v114;
let v94 = v93 + v56;
*v114 = v94;

}

}
let v95 = *v112;
let v96 = v67 + v95;
let v100 = &(*v142)[v96];
let v101 = *v114;
*v100 = v101;
let v103 = u32(256);
let v104 = v95 + v103;
*v112 = v104;

}

}
return;

}
