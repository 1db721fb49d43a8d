#!/usr/bin/env bash
# Regenerates shaders/: the WGSL the CubeCL kernels (src/kernels/cube_kernels.rs) compile to, for
# reading and review. tests/kernels.rs fails while shaders/ is stale. Needs a Vulkan device (the
# test command's lavapipe will do) for the compiler's device properties.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-vulkan.sh
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
RRHF_UPDATE_SHADERS=1 cargo test --release --test kernels shaders_are_current
