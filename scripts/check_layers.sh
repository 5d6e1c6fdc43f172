#!/usr/bin/env bash
# Checks the architecture's layering by the includes each folder makes:
#   core      -> core only (kernels: core only, no graph)
#   autograd  -> core, autograd
#   layers    -> core, autograd, layers
#   optim     -> core, autograd, layers, optim
#   data      -> core, data
#   quant     -> core, autograd, layers, optim, quant
#   models    -> core, autograd, layers, models
#   train     -> everything above but cli (fit loop, quantization context)
#   deploy    -> core, autograd, layers, optim, quant, models, deploy (export: floor 5 beside train,
#                which it does not use); the integer engine and the model file (deploy/engine.*,
#                deploy/model_file.*) -> core only (and each other): they read the exported file, never
#                the training graph, so they build without the rest of lowbit
# Exits non-zero and lists every include that points up the stack.
set -u
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root" || exit 2
declare -A allowed=(
  [core]="core"
  [autograd]="core autograd"
  [layers]="core autograd layers"
  [optim]="core autograd layers optim"
  [data]="core data"
  [quant]="core autograd layers optim quant"
  [models]="core autograd layers models"
  [train]="core autograd layers optim quant data models train"
  [deploy]="core autograd layers optim quant models deploy"
)
# Files held to a narrower list than their folder's (the includes they may make, by path prefix).
declare -A file_allowed=(
  [deploy/engine.h]="core/ deploy/engine.h deploy/model_file.h"
  [deploy/engine.cpp]="core/ deploy/engine.h deploy/model_file.h"
  [deploy/model_file.h]="core/ deploy/model_file.h"
  [deploy/model_file.cpp]="core/ deploy/model_file.h deploy/entropy.h"
  [deploy/entropy.h]="core/ deploy/entropy.h"
  [deploy/entropy.cpp]="core/ deploy/entropy.h"
)
bad=0
for layer in "${!allowed[@]}"; do
  [ -d "$layer" ] || continue
  while IFS= read -r line; do
    file=${line%%:*}
    inc=$(sed -E 's/.*#include +"([^"]+)".*/\1/' <<<"${line#*:}")
    top=${inc%%/*}
    [ "$top" = "$inc" ] && continue  # same-folder include
    if [ -n "${file_allowed[$file]+x}" ]; then
      ok=0
      for prefix in ${file_allowed[$file]}; do [[ "$inc" == "$prefix"* ]] && ok=1; done
      [ $ok -eq 1 ] || { echo "layering violation: $file includes \"$inc\" (it may use: ${file_allowed[$file]})"; bad=1; }
      continue
    fi
    case " ${allowed[$layer]} " in
      *" $top "*) ;;
      *) [ -d "$top" ] && { echo "layering violation: $file includes \"$inc\" ($layer may use: ${allowed[$layer]})"; bad=1; } ;;
    esac
  done < <(grep -rHE '^\s*#include +"' "$layer" --include='*.h' --include='*.cpp' 2>/dev/null)
done
if [ $bad -eq 0 ]; then echo "layering: ok"; fi
exit $bad
