# Sourced by the CLI test scripts (scripts/test_*.sh BUILD_DIR ...):
#   cli_test_init "USAGE" BUILD_DIR   sets build (absolute), lowbit (the command) and work (a temporary
#                                     folder, removed on exit)
#   require_fashion_mnist             exits 77 (CTest: skipped) without the Debian package's data set
#   fail MESSAGE                      prints FAIL: MESSAGE and exits 1
cli_test_init() {
  local usage=$1
  [ -n "${2:-}" ] && build=$(cd "$2" && pwd) || { echo "usage: $usage (no build folder '${2:-}')"; exit 2; }
  lowbit="$build/cli/lowbit"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
}

require_fashion_mnist() {
  if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "skipped: /usr/share/datasets/fashion-mnist is missing (apt-get install dataset-fashion-mnist)"
    exit 77
  fi
}

fail() {
  echo "FAIL: $*"
  exit 1
}
