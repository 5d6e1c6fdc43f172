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
)
bad=0
for layer in "${!allowed[@]}"; do
  [ -d "$layer" ] || continue
  while IFS= read -r line; do
    file=${line%%:*}
    inc=$(sed -E 's/.*#include +"([^"]+)".*/\1/' <<<"${line#*:}")
    top=${inc%%/*}
    [ "$top" = "$inc" ] && continue  # same-folder include
    case " ${allowed[$layer]} " in
      *" $top "*) ;;
      *) [ -d "$top" ] && { echo "layering violation: $file includes \"$inc\" ($layer may use: ${allowed[$layer]})"; bad=1; } ;;
    esac
  done < <(grep -rHE '^\s*#include +"' "$layer" --include='*.h' --include='*.cpp' 2>/dev/null)
done
if [ $bad -eq 0 ]; then echo "layering: ok"; fi
exit $bad
