#!/usr/bin/env bash
# Installs the Debian packages sparsellm builds against (OpenBLAS with LAPACK, cmake, a C++ compiler).
# Skips apt entirely when they are already present; uses sudo when not root.
set -euo pipefail
need=()
for pkg in libopenblas-dev liblapacke-dev cmake g++ ninja-build; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
