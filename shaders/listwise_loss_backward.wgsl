// listwise_loss_backward.wgsl: generated from src/kernels/cube_kernels.rs by cubecl's WGSL compiler
// (scripts/update-shaders.sh); do not edit.
@group(0) @binding(4) var<storage, read_write> v25: array<f32>;
@group(0) @binding(3) var<storage, read_write> v19: array<f32>;
@group(0) @binding(2) var<storage, read_write> v13: array<f32>;
@group(0) @binding(1) var<storage, read_write> v7: array<f32>;
@group(0) @binding(0) var<storage, read_write> v1: array<f32>;
struct info_st { scalars_usize: array<u32, 10>, scalars_u32: array<u32, 2>, static_meta: array<u32, 16>, dynamic_meta: array<u32> }
@group(0) @binding(5) var<storage, read> info_var: info_st;
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) v267: vec3<u32>, @builtin(num_workgroups) v269: vec3<u32>, @builtin(local_invocation_index) v276: u32) {
let v279 = &v25;
let v280 = &v19;
let v281 = &v13;
let v282 = &v7;
let v283 = &v1;
let v5 = u32(0);
let v31 = info_var.scalars_u32[0];
let v32 = info_var.scalars_u32[1];
let v268 = v267[2];
let v245 = u32(v268);
let v270 = v269[1];
let v247 = u32(v270);
let v248 = v245 * v247;
let v271 = v269[0];
let v250 = u32(v271);
let v251 = v248 * v250;
let v272 = v267[1];
let v253 = u32(v272);
let v256 = v253 * v250;
let v257 = v251 + v256;
let v274 = v267[0];
let v259 = u32(v274);
let v260 = v257 + v259;
let v278 = u32(64);
let v263 = v260 * v278;
let v277 = v276;
let v265 = u32(v277);
let v266 = v263 + v265;
let v34 = u32(v32);
let v35 = u32(v31);
let v36 = v35 * v34;
let v37 = v266 < v36;
if v37 {
let v38 = v266 / v34;
let v39 = v38 * v34;
let v40 = v266 - v39;
let v41 = f32(0.0);
var<function> v231_store: f32;
let v231 = &v231_store;
*v231 = v41;
let v47 = &(*v281)[v266];
let v48 = *v47;
let v50 = v48 != v41;
if v50 {
let v52 = u32(1);
for(var v53: u32 = v5; v53 < v34; v53 += v52) {
let v55 = false;
var<function> v233_store: bool;
let v233 = &v233_store;
*v233 = v55;
let v58 = v39 + v53;
let v62 = &(*v281)[v58];
let v63 = *v62;
let v65 = v63 != v41;
if v65 {
for(var v68: u32 = v5; v68 < v34; v68 += v52) {
let v70 = v39 + v68;
let v74 = &(*v281)[v70];
let v75 = *v74;
let v77 = v75 != v41;
var<function> v235_store: bool;
let v235 = &v235_store;
if v77 {
let v82 = &(*v282)[v70];
let v83 = *v82;
let v88 = &(*v282)[v58];
let v89 = *v88;
let v90 = v83 < v89;
*v235 = v90;

} else {
*v235 = v55;

}
let v93 = *v235;
if v93 {
let v94 = true;
*v233 = v94;

}

}

}
let v95 = *v233;
if v95 {
let v96 = v53 == v40;
let v97 = true;
var<function> v236_store: bool;
let v236 = &v236_store;
if v96 {
*v236 = v97;

} else {
let v103 = &(*v282)[v266];
let v104 = *v103;
let v109 = &(*v282)[v58];
let v110 = *v109;
let v111 = v104 < v110;
*v236 = v111;

}
let v112 = *v236;
if v112 {
let v117 = &(*v282)[v58];
let v118 = *v117;
let v123 = &(*v283)[v58];
let v124 = *v123;
var<function> v237_store: f32;
let v237 = &v237_store;
*v237 = v124;
for(var v128: u32 = v5; v128 < v34; v128 += v52) {
let v130 = v39 + v128;
let v134 = &(*v281)[v130];
let v135 = *v134;
let v137 = v135 != v41;
var<function> v239_store: bool;
let v239 = &v239_store;
if v137 {
let v142 = &(*v282)[v130];
let v143 = *v142;
let v144 = v143 < v118;
*v239 = v144;

} else {
*v239 = v55;

}
let v147 = *v239;
if v147 {
let v152 = &(*v283)[v130];
let v153 = *v152;
let v154 = *v237;
let v155 = max(v154, v153);
*v237 = v155;

}

}
var<function> v240_store: f32;
let v240 = &v240_store;
*v240 = v41;
for(var v161: u32 = v5; v161 < v34; v161 += v52) {
let v163 = v161 == v53;
var<function> v242_store: bool;
let v242 = &v242_store;
if v163 {
*v242 = v97;

} else {
let v167 = v39 + v161;
let v171 = &(*v281)[v167];
let v172 = *v171;
let v174 = v172 != v41;
var<function> v243_store: bool;
let v243 = &v243_store;
if v174 {
let v179 = &(*v282)[v167];
let v180 = *v179;
let v181 = v180 < v118;
*v243 = v181;

} else {
*v243 = v55;

}
let v184 = *v243;
*v242 = v184;

}
let v185 = *v242;
if v185 {
let v186 = v39 + v161;
let v190 = &(*v283)[v186];
let v191 = *v190;
let v192 = *v237;
let v193 = v191 - v192;
let v194 = exp(v193);
let v195 = *v240;
let v196 = v195 + v194;
*v240 = v196;

}

}
let v197 = *v240;
let v198 = log(v197);
let v199 = *v237;
let v200 = v199 + v198;
let v204 = &(*v283)[v266];
let v205 = *v204;
let v206 = v205 - v200;
let v207 = exp(v206);
let v208 = *v231;
let v209 = v208 + v207;
*v231 = v209;
if v96 {
let v211 = *v231;
let v212 = f32(1.0);
let v213 = v211 - v212;
*v231 = v213;

}

}

}

}

}
let v217 = &(*v280)[v38];
let v218 = *v217;
let v219 = *v231;
let v220 = v219 * v218;
let v224 = &(*v279)[v266];
*v224 = v220;

}
return;

}
