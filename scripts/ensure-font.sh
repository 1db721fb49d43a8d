#!/usr/bin/env bash
# Makes sure a TrueType font is present for the text of the plots train writes (plotters brings
# none): installs Debian's fonts-dejavu-core when no DejaVu Sans is found and apt is usable.
set -euo pipefail
if [ -n "${RRHF_FONT:-}" ] || compgen -G "/usr/share/fonts/*/dejavu/DejaVuSans.ttf" >/dev/null \
  || compgen -G "/usr/share/fonts/*/DejaVuSans.ttf" >/dev/null; then
  exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "no DejaVu Sans font found: installing fonts-dejavu-core for the plots" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq fonts-dejavu-core >/dev/null
else
  echo "warning: no font for the plots' text (install fonts-dejavu-core or set RRHF_FONT)" >&2
fi
