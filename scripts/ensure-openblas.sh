#!/usr/bin/env bash
# Makes sure OpenBLAS is there to link against on Linux: the CPU path's f32 matmuls run in its
# sgemm (vendor/README.md). Installs Debian's libopenblas-dev when it is missing.
set -euo pipefail
[ "$(uname -s)" = Linux ] || exit 0
if ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so '; then
  exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "no OpenBLAS found: installing libopenblas-dev" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq libopenblas-dev >/dev/null
else
  echo "error: building rrhf on Linux needs OpenBLAS (libopenblas.so): install libopenblas-dev" \
       "(Debian/Ubuntu) or openblas-devel (Fedora)" >&2
  exit 1
fi
