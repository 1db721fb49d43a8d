// listwise_loss_forward.wgsl: generated from src/kernels/cube_kernels.rs by cubecl's WGSL compiler
// (scripts/update-shaders.sh); do not edit.
@group(0) @binding(3) var<storage, read_write> v19: array<f32>;
@group(0) @binding(2) var<storage, read_write> v13: array<f32>;
@group(0) @binding(1) var<storage, read_write> v7: array<f32>;
@group(0) @binding(0) var<storage, read_write> v1: array<f32>;
struct info_st { scalars_usize: array<u32, 8>, scalars_u32: array<u32, 2>, static_meta: array<u32, 12>, dynamic_meta: array<u32> }
@group(0) @binding(4) var<storage, read> info_var: info_st;
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) v222: vec3<u32>, @builtin(num_workgroups) v224: vec3<u32>, @builtin(local_invocation_index) v231: u32) {
let v234 = &v19;
let v235 = &v13;
let v236 = &v7;
let v237 = &v1;
let v5 = u32(0);
let v25 = info_var.scalars_u32[0];
let v26 = info_var.scalars_u32[1];
let v223 = v222[2];
let v200 = u32(v223);
let v225 = v224[1];
let v202 = u32(v225);
let v203 = v200 * v202;
let v226 = v224[0];
let v205 = u32(v226);
let v206 = v203 * v205;
let v227 = v222[1];
let v208 = u32(v227);
let v211 = v208 * v205;
let v212 = v206 + v211;
let v229 = v222[0];
let v214 = u32(v229);
let v215 = v212 + v214;
let v233 = u32(64);
let v218 = v215 * v233;
let v232 = v231;
let v220 = u32(v232);
let v221 = v218 + v220;
let v28 = u32(v25);
let v29 = v221 < v28;
if v29 {
let v30 = u32(v26);
let v31 = v221 * v30;
let v32 = f32(0.0);
var<function> v187_store: f32;
let v187 = &v187_store;
*v187 = v32;
let v36 = u32(1);
for(var v37: u32 = v5; v37 < v30; v37 += v36) {
let v39 = false;
var<function> v189_store: bool;
let v189 = &v189_store;
*v189 = v39;
let v42 = v31 + v37;
let v46 = &(*v235)[v42];
let v47 = *v46;
let v49 = v47 != v32;
if v49 {
for(var v52: u32 = v5; v52 < v30; v52 += v36) {
let v54 = v31 + v52;
let v58 = &(*v235)[v54];
let v59 = *v58;
let v61 = v59 != v32;
var<function> v191_store: bool;
let v191 = &v191_store;
if v61 {
let v66 = &(*v236)[v54];
let v67 = *v66;
let v72 = &(*v236)[v42];
let v73 = *v72;
let v74 = v67 < v73;
*v191 = v74;

} else {
*v191 = v39;

}
let v77 = *v191;
if v77 {
let v78 = true;
*v189 = v78;

}

}

}
let v79 = *v189;
if v79 {
let v84 = &(*v236)[v42];
let v85 = *v84;
let v90 = &(*v237)[v42];
let v91 = *v90;
var<function> v192_store: f32;
let v192 = &v192_store;
*v192 = v91;
for(var v95: u32 = v5; v95 < v30; v95 += v36) {
let v97 = v31 + v95;
let v101 = &(*v235)[v97];
let v102 = *v101;
let v104 = v102 != v32;
var<function> v194_store: bool;
let v194 = &v194_store;
if v104 {
let v109 = &(*v236)[v97];
let v110 = *v109;
let v111 = v110 < v85;
*v194 = v111;

} else {
*v194 = v39;

}
let v114 = *v194;
if v114 {
let v119 = &(*v237)[v97];
let v120 = *v119;
let v121 = *v192;
let v122 = max(v121, v120);
*v192 = v122;

}

}
var<function> v195_store: f32;
let v195 = &v195_store;
*v195 = v32;
for(var v128: u32 = v5; v128 < v30; v128 += v36) {
let v130 = v128 == v37;
let v131 = true;
var<function> v197_store: bool;
let v197 = &v197_store;
if v130 {
*v197 = v131;

} else {
let v134 = v31 + v128;
let v138 = &(*v235)[v134];
let v139 = *v138;
let v141 = v139 != v32;
var<function> v198_store: bool;
let v198 = &v198_store;
if v141 {
let v146 = &(*v236)[v134];
let v147 = *v146;
let v148 = v147 < v85;
*v198 = v148;

} else {
*v198 = v39;

}
let v151 = *v198;
*v197 = v151;

}
let v152 = *v197;
if v152 {
let v153 = v31 + v128;
let v157 = &(*v237)[v153];
let v158 = *v157;
let v159 = *v192;
let v160 = v158 - v159;
let v161 = exp(v160);
let v162 = *v195;
let v163 = v162 + v161;
*v195 = v163;

}

}
let v164 = *v195;
let v165 = log(v164);
let v166 = *v192;
let v167 = v166 + v165;
let v173 = *v90;
let v174 = v167 - v173;
let v175 = *v187;
let v176 = v175 + v174;
*v187 = v176;

}

}
let v180 = &(*v234)[v221];
let v181 = *v187;
*v180 = v181;

}
return;

}
