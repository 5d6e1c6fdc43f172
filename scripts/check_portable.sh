#!/usr/bin/env bash
# Compiles every source that branches on the compiler's ISA macros (__AVX512F__, __AVX2__, ...) for
# plain x86-64 with the project's warnings, so a build with -DLOWBIT_NATIVE=OFF (or any other ISA
# than the build machine's) cannot break unnoticed under -Werror.
# Usage: check_portable.sh SOURCE_ROOT CXX [-I... -isystem ...]
set -u
root=$1 cxx=$2
shift 2
cd "$root" || exit 2
files=$(grep -rlE '__(AVX|AVX2|AVX512[A-Z]*|FMA|SSE[0-9_]*)__' --include=*.cpp core autograd layers optim quant data models cli)
[ -n "$files" ] || { echo "check_portable: no ISA-conditional sources"; exit 0; }
status=0
for f in $files; do
  if ! "$cxx" -std=c++20 -Wall -Wextra -Werror -march=x86-64 -O0 -I"$root" "$@" -c "$f" -o /dev/null; then
    echo "check_portable: $f does not compile for plain x86-64 (LOWBIT_NATIVE=OFF)"
    status=1
  fi
done
[ $status = 0 ] && echo "check_portable: $(echo $files | wc -w) ISA-conditional source(s) compile for plain x86-64"
exit $status
