#!/usr/bin/env bash
# Checks that every C++ source follows .clang-format (Google, 120 columns); --fix rewrites them.
# Usage: scripts/format.sh [--fix] [SOURCE_DIR]
# Exits 1 listing the files that differ, 77 (CTest's "skipped") when clang-format is not installed
# (it is a developer tool, not a build dependency: apt-get install clang-format).
set -euo pipefail
fix=0
[ "${1:-}" = --fix ] && { fix=1; shift; }
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
if ! command -v clang-format > /dev/null; then
  echo "skipped: clang-format is not installed (apt-get install clang-format)"
  exit 77
fi
dirs=()
for d in core autograd layers optim quant data models train deploy cli tests bench examples; do
  [ -d "$d" ] && dirs+=("$d")
done
mapfile -t files < <( (ls lowbit.h; find "${dirs[@]}" -name '*.cpp' -o -name '*.h') | sort)
[ "${#files[@]}" -gt 0 ] || { echo "format: no sources under $root"; exit 2; }
if [ "$fix" = 1 ]; then
  clang-format -i "${files[@]}"
  echo "format: ${#files[@]} files formatted"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run --Werror "$f" > /dev/null 2>&1 || bad+=("$f")
done
if [ "${#bad[@]}" -gt 0 ]; then
  echo "format: ${#bad[@]} of ${#files[@]} files differ from .clang-format (fix: scripts/format.sh --fix):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "format: ${#files[@]} files follow .clang-format"
