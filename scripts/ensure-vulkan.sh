#!/usr/bin/env bash
# Makes sure a Vulkan driver is present, so wgpu has an adapter: on a machine without a GPU
# driver this installs Mesa's lavapipe (a conformant Vulkan device running on the CPU).
set -euo pipefail
if compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null || compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null; then
  exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "no Vulkan driver found: installing mesa-vulkan-drivers (lavapipe)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
else
  echo "warning: no Vulkan driver found and cannot install one (need root and apt-get);" \
       "wgpu tests will be skipped" >&2
fi
