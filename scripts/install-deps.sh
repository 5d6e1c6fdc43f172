#!/usr/bin/env bash
# Installs, from Debian's archive, whatever lowbit needs that this machine lacks.
# Usage: scripts/install-deps.sh [--with-torch]   (run as root; --with-torch adds the PyTorch reference)
set -euo pipefail
pkgs=(build-essential cmake pkg-config libeigen3-dev libopenblas-dev libtbb-dev libstb-dev doctest-dev
      libbenchmark-dev zlib1g-dev dataset-fashion-mnist
      libopenmpi-dev openmpi-bin    # data-parallel training (docs/distributed.md) and its 2-rank test
      clang-14 libclang-rt-14-dev)  # the fuzz smoke test (scripts/fuzz_smoke.sh): clang with libFuzzer
[ "${1:-}" = "--with-torch" ] && pkgs+=(python3-torch)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
