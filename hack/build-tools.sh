#!/usr/bin/env bash
# Build the pinned test programs from their Go wrapper modules under hack/tools/<tool>/.
#
# Each wrapper module holds go.mod, a committed go.sum, and build.env with:
#   VERSION=...                 upstream version (part of the cache key)
#   PACKAGES="pkg ..."          main packages to build (module paths or ./relative)
#   LDFLAGS="..."  TAGS="..."   optional; CGO_ENABLED defaults to 0
# Binaries are cached outside the repo in $BKO_CACHE_DIR/tools/<tool>-<version>-<hash>/bin,
# the hash covering go.mod, go.sum, build.env, the wrapper's own .go files and the Go version,
# so a pin change rebuilds and nothing else does.
#
# Usage: hack/build-tools.sh [--print-path] [tool ...]   (default: every tool)
#   --print-path   print the bin directories, colon-separated, on stdout (progress goes to stderr)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${BKO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/buildkit-operator}
export GOFLAGS=${GOFLAGS:--buildvcs=false}
export GOTOOLCHAIN=local
# Every module we need is in a committed go.sum, so the checksum database is never asked.
export GONOSUMDB='*'

print_path=false
tools=()
for arg in "$@"; do
  case "$arg" in
    --print-path) print_path=true ;;
    *) tools+=("$arg") ;;
  esac
done
if [ ${#tools[@]} -eq 0 ]; then
  for d in "$here"/tools/*/; do [ -f "$d/build.env" ] && tools+=("$(basename "$d")"); done
fi

log() { printf '%s\n' "$*" >&2; }

bindir_of() {
  local tool=$1 dir="$here/tools/$1" sum version
  sum=$( { go env GOVERSION; cat "$dir/go.mod" "$dir/go.sum" "$dir/build.env";
          find "$dir" -maxdepth 1 -name '*.go' -print0 | LC_ALL=C sort -z | xargs -0r cat; } \
        | sha256sum | cut -c1-12)
  version=$( . "$dir/build.env"; echo "$VERSION")
  echo "$cache/tools/$tool-$version-$sum/bin"
}

build_one() {
  local tool=$1 dir="$here/tools/$1" out tmp start
  [ -f "$dir/build.env" ] || { log "no such tool: $tool (expected $dir/build.env)"; return 2; }
  out=$(bindir_of "$tool")
  if [ -f "$out/.complete" ]; then
    log "$tool: cached in $out"
    return 0
  fi
  (
    VERSION='' PACKAGES='' LDFLAGS='' TAGS='' CGO_ENABLED=0
    # shellcheck disable=SC1091
    . "$dir/build.env"
    start=$(date +%s)
    log "$tool $VERSION: building (first build of a tool takes minutes; output follows)"
    tmp="$out.tmp.$$"
    rm -rf "$tmp"; mkdir -p "$tmp"
    cd "$dir"
    # -v names each package as it compiles: count them for progress, and pass through
    # anything else (a line with a space is a message or a compile error, not a package path).
    # shellcheck disable=SC2086
    CGO_ENABLED=$CGO_ENABLED go build -v -trimpath -tags "$TAGS" -ldflags "$LDFLAGS" -o "$tmp/" $PACKAGES 2>&1 \
      | awk -v t="$tool" '/ / {print > "/dev/stderr"; next} {n++} n%200==0 {printf "%s: %d packages compiled...\n", t, n > "/dev/stderr"; fflush("/dev/stderr")}'
    test "${PIPESTATUS[0]}" -eq 0
    rm -rf "$out"; mv "$tmp" "$out"
    touch "$out/.complete"
    log "$tool $VERSION: built in $(( $(date +%s) - start ))s -> $out"
  )
}

paths=()
for t in "${tools[@]}"; do
  build_one "$t"
  paths+=("$(bindir_of "$t")")
done
if $print_path; then
  (IFS=:; echo "${paths[*]}")
fi
