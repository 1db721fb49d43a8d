#!/usr/bin/env bash
# The test command of the README (and of CI): installs what the tests need, then runs them all.
#  - a Vulkan driver (lavapipe when there is no GPU), so the wgpu path is tested, not skipped;
#  - SmolLM2-135M-Instruct, for the tests against transformers on a real model (skipped with a
#    message if it cannot be downloaded);
#  - the tensorboard Python package, whose reader tests/tensorboard.rs checks the event files with;
#  - OpenBLAS, which the CPU path's matmuls link against (Linux);
#  - Open MPI, for the data parallel build (`--features mpi`) and tests/data_parallel.rs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/ensure-vulkan.sh
scripts/ensure-openblas.sh
scripts/ensure-font.sh
scripts/ensure-mpi.sh
export RRHF_TEST_REQUIRE_WGPU=${RRHF_TEST_REQUIRE_WGPU:-1}
# One feature set for every cargo command here (fetch-smollm2.sh's conversion included): a build
# with another rebuilds most of the dependency tree (bindgen's features reach cubecl through turso).
export RRHF_FEATURES=mpi
# Vulkan drivers print a Wayland warning on headless machines without it.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
if ! python3 -c "import tensorboard" 2>/dev/null; then
  python3 -m pip install --quiet tensorboard \
    || echo "warning: could not install tensorboard; tests/tensorboard.rs will fail" >&2
fi
if ! scripts/fetch-smollm2.sh; then
  echo "warning: could not get SmolLM2-135M-Instruct; its tests will be skipped" >&2
fi
cargo test --release --features "$RRHF_FEATURES" -- --test-threads=1 "$@"
