// seq_logprob_forward.wgsl: generated from src/kernels/cube_kernels.rs by cubecl's WGSL compiler
// (scripts/update-shaders.sh); do not edit.
var<workgroup> shared_v52: array<f32, 256>;
var<workgroup> shared_v56: array<f32, 256>;
@group(0) @binding(4) var<storage, read_write> v25: array<f32>;
@group(0) @binding(3) var<storage, read_write> v19: array<f32>;
@group(0) @binding(2) var<storage, read_write> v13: array<f32>;
@group(0) @binding(1) var<storage, read_write> v7: array<i32>;
@group(0) @binding(0) var<storage, read_write> v1: array<f32>;
struct info_st { scalars_usize: array<u32, 10>, scalars_u32: array<u32, 2>, static_meta: array<u32, 16>, dynamic_meta: array<u32> }
@group(0) @binding(5) var<storage, read> info_var: info_st;
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_id) v246: vec3<u32>, @builtin(workgroup_id) v249: vec3<u32>, @builtin(num_workgroups) v251: vec3<u32>) {
let v263 = &v25;
let v264 = &v19;
let v265 = &v13;
let v266 = &v7;
let v267 = &v1;
let v5 = u32(0);
let v31 = info_var.scalars_u32[0];
let v32 = info_var.scalars_u32[1];
let v250 = v249[2];
let v230 = u32(v250);
let v252 = v251[1];
let v232 = u32(v252);
let v233 = v230 * v232;
let v253 = v251[0];
let v235 = u32(v253);
let v236 = v233 * v235;
let v254 = v249[1];
let v238 = u32(v254);
let v241 = v238 * v235;
let v242 = v236 + v241;
let v256 = v249[0];
let v244 = u32(v256);
let v245 = v242 + v244;
let v34 = u32(v31);
let v35 = u32(v32);
let v247 = v246[0];
let v37 = u32(v247);
let v38 = v245 < v34;
var<function> v218_store: bool;
let v218 = &v218_store;
if v38 {
let v42 = &(*v265)[v245];
let v43 = *v42;
let v44 = f32(0.0);
let v45 = v43 != v44;
*v218 = v45;

} else {
let v47 = false;
*v218 = v47;

}
let v48 = *v218;
let v50 = select(v5, v35, v48);
let v51 = v245 * v35;
let v219 = &shared_v52;
let v54 = u32(256);
let v220 = &shared_v56;
let v60 = f32(-3.4028234663852886e38);
var<function> v221_store: f32;
let v221 = &v221_store;
*v221 = v60;
let v63 = f32(0.0);
var<function> v222_store: f32;
let v222 = &v222_store;
*v222 = v63;
var<function> v223_store: u32;
let v223 = &v223_store;
*v223 = v37;
loop {
let v67 = *v223;
let v68 = v67 < v50;
if !v68 { break; }
let v70 = *v223;
let v71 = v51 + v70;
let v75 = &(*v267)[v71];
let v76 = *v75;
let v77 = *v221;
let v78 = v76 > v77;
if v78 {
let v80 = v77 - v76;
let v81 = exp(v80);
let v82 = *v222;
let v84 = f32(1.0);
let v261 = fma(v82, v81, v84);
*v222 = v261;
*v221 = v76;

} else {
let v87 = v76 - v77;
let v88 = exp(v87);
let v89 = *v222;
let v90 = v89 + v88;
*v222 = v90;

}
let v91 = *v223;
let v93 = v91 + v54;
*v223 = v93;

}
let v97 = &(*v219)[v37];
let v98 = *v221;
*v97 = v98;
let v102 = &(*v220)[v37];
let v103 = *v222;
*v102 = v103;
workgroupBarrier();
let v106 = u32(2);
let v257 = u32(128);
var<function> v225_store: u32;
let v225 = &v225_store;
*v225 = v257;
loop {
let v109 = *v225;
let v111 = v109 > v5;
if !v111 { break; }
let v113 = *v225;
let v114 = v37 < v113;
if v114 {
let v119 = *v97;
let v121 = v37 + v113;
let v125 = &(*v219)[v121];
let v126 = *v125;
let v127 = max(v119, v126);
let v132 = *v102;
let v133 = v119 - v127;
let v134 = exp(v133);
let v141 = &(*v220)[v121];
let v142 = *v141;
let v143 = v126 - v127;
let v144 = exp(v143);
let v145 = v142 * v144;
let v262 = fma(v132, v134, v145);
*v102 = v262;
*v97 = v127;

}
workgroupBarrier();
let v155 = *v225;
let v157 = v155 / v106;
*v225 = v157;

}
let v159 = v37 == v5;
let v160 = v159 && v38;
if v160 {
var<function> v227_store: f32;
let v227 = &v227_store;
*v227 = v63;
var<function> v228_store: f32;
let v228 = &v228_store;
*v228 = v63;
let v167 = *v218;
if v167 {
let v172 = &(*v219)[v5];
let v173 = *v172;
let v178 = &(*v220)[v5];
let v179 = *v178;
let v180 = log(v179);
let v181 = v173 + v180;
*v227 = v181;
let v185 = &(*v266)[v245];
let v186 = *v185;
let v187 = i32(v35);
let v188 = i32(1);
let v189 = v187 - v188;
let v190 = min(v186, v189);
let v191 = i32(0);
let v192 = max(v190, v191);
let v193 = u32(v192);
let v194 = v51 + v193;
let v198 = &(*v267)[v194];
let v199 = *v198;
let v200 = *v227;
let v201 = v199 - v200;
*v228 = v201;

}
let v205 = &(*v263)[v245];
let v206 = *v227;
*v205 = v206;
let v210 = &(*v264)[v245];
let v211 = *v228;
*v210 = v211;

}
return;

}
