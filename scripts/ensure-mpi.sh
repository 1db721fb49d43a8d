#!/usr/bin/env bash
# Makes sure an MPI is present for `--features mpi` (data parallel): `mpirun`, the library and
# headers the mpi crate links against, and libclang for its bindgen. Installs Open MPI when
# missing (as root, with apt-get).
set -euo pipefail
have_clang() { compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null || compgen -G "/usr/lib/*/libclang*.so*" >/dev/null; }
if command -v mpirun >/dev/null && command -v mpicc >/dev/null && have_clang; then
  exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "no MPI found: installing Open MPI (openmpi-bin, libopenmpi-dev) and libclang-dev" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq openmpi-bin libopenmpi-dev libclang-dev >/dev/null
else
  echo "error: --features mpi needs an MPI (mpirun, mpicc) and libclang; install Open MPI or" \
       "MPICH and libclang-dev, or build without --features mpi" >&2
  exit 1
fi
