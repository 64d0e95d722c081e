#!/usr/bin/env bash
# System libraries the ModernGL renderer needs for a headless OpenGL context:
#   libegl1        libEGL.so.1 (glvnd EGL dispatcher)
#   libgl1         libGL.so.1  (glvnd; glcontext loads GL entry points from it)
#   libegl-mesa0   Mesa's EGL vendor (pulls in libgbm1); surfaceless/device platforms
#   libgl1-mesa-dri  Mesa drivers incl. llvmpipe (swrast_dri.so) for CPU-only machines
# On GPU machines the NVIDIA driver's EGL vendor is preferred when the container exposes it;
# Mesa stays the fallback. Idempotent: calls apt-get only when a package is missing.
set -euo pipefail

PKGS=(libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
else
  # not Debian-like: check the libraries themselves and say what is missing
  for lib in libEGL.so.1 libGL.so.1; do
    ldconfig -p 2>/dev/null | grep -q "$lib" || missing+=("$lib")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install-system-deps: no dpkg here; missing ${missing[*]} (install EGL + Mesa by hand)" >&2
  fi
  exit 0
fi

[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "install-system-deps: need root to install ${missing[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-system-deps: installing ${missing[*]}"
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
