#!/usr/bin/env bash
# Install what the end-to-end tests (tests/e2e) need to run buildkitd on this machine, as the
# moby/buildkit images run it:
#   rootful:  runc
#   rootless: rootlesskit, uidmap (newuidmap/newgidmap), fuse-overlayfs, and an account with
#             uid 1000 (the rootless image's user) with subordinate uid/gid ranges.
# The rootless image runs rootlesskit with its default host network, so slirp4netns is not needed.
# Also iproute2 (ip netns, veth), for the network namespace the registry mirror test makes.
# With --node, also what the real node (hack/node.py) and its images (hack/node_images.py)
# need: nftables (kube-proxy's nftables mode), mmdebstrap (Debian root filesystems), gcc
# with the static C library (the pause binary), and libseccomp's headers with pkg-config (runc,
# built with cgo from hack/tools/runc with upstream's seccomp tag).
#
# Idempotent: installs only missing packages, runs `apt-get update` only when a package has no
# install candidate, and changes no account or range that already exists. Every action is
# reported on stderr; nothing is printed on stdout. Debian/Ubuntu only; needs root.
#
# Usage: hack/install-runtime-deps.sh [--no-rootless] [--node]
set -euo pipefail

ROOTLESS_UID=1000
ROOTLESS_USER=user # the rootless image's account name, used only when uid 1000 is free
SUBID_START=100000
SUBID_COUNT=65536

rootless=true
node=false
for arg in "$@"; do
  case "$arg" in
    --no-rootless) rootless=false ;;
    --node) node=true ;;
    *)
      echo "usage: $0 [--no-rootless] [--node]" >&2
      exit 2
      ;;
  esac
done

log() { printf 'install-runtime-deps: %s\n' "$*" >&2; }

packages=(runc iproute2)
$rootless && packages+=(rootlesskit uidmap fuse-overlayfs)
$node && packages+=(nftables mmdebstrap gcc libc6-dev util-linux libseccomp-dev pkgconf)

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

has_candidate() {
  local candidate
  candidate=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
  [ -n "$candidate" ] && [ "$candidate" != "(none)" ]
}

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    log "error: $1 needs root; run this script as root"
    exit 1
  fi
}

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  need_root "installing ${missing[*]}"
  command -v apt-get >/dev/null || {
    log "error: apt-get not found; install ${missing[*]} with this system's package manager"
    exit 1
  }
  # Other users of the machine may hold the dpkg lock: wait for it rather than fail.
  apt_opts=(-o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
  updated=false
  for p in "${missing[@]}"; do
    if ! has_candidate "$p"; then
      log "no install candidate for $p: apt-get update"
      apt-get "${apt_opts[@]}" update -qq >&2
      updated=true
      break
    fi
  done
  install() {
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -qq \
      --no-install-recommends "${missing[@]}" >&2
  }
  log "installing ${missing[*]}"
  if ! install; then
    # Package lists older than the mirror name versions it no longer has.
    $updated && exit 1
    log "install failed: apt-get update, then one more try"
    apt-get "${apt_opts[@]}" update -qq >&2
    install
  fi
else
  log "packages present: ${packages[*]}"
fi

$rootless || exit 0

# The rootless account. newuidmap looks up /etc/subuid by name and by uid, so an existing
# uid-1000 account of any name serves.
account=$(getent passwd "$ROOTLESS_UID" | cut -d: -f1 || true)
if [ -z "$account" ]; then
  need_root "creating the uid $ROOTLESS_UID account"
  log "creating account $ROOTLESS_USER (uid $ROOTLESS_UID)"
  groupadd -g "$ROOTLESS_UID" "$ROOTLESS_USER" 2>/dev/null || true
  useradd -m -u "$ROOTLESS_UID" -g "$ROOTLESS_UID" -s /bin/sh "$ROOTLESS_USER"
  account=$ROOTLESS_USER
else
  log "uid $ROOTLESS_UID account present: $account"
fi

# Subordinate ranges: leave any the account already has; otherwise add one that overlaps no
# other entry (the image's 100000:65536 when free).
add_range() {
  local file=$1 start=$SUBID_START
  if [ -f "$file" ] && awk -F: -v a="$account" -v u="$ROOTLESS_UID" \
    '($1 == a || $1 == u) && $3 > 0 {found = 1} END {exit !found}' "$file"; then
    log "$file: $account has a range"
    return
  fi
  need_root "editing $file"
  if [ -f "$file" ]; then
    # Walk the ranges in order of start, moving past each one that overlaps the candidate.
    start=$(sort -t: -k2,2n "$file" | awk -F: -v s="$SUBID_START" -v c="$SUBID_COUNT" '
      BEGIN {next_free = s}
      NF >= 3 && $2 + $3 > next_free && $2 < next_free + c {next_free = $2 + $3}
      END {print next_free}')
  fi
  log "$file: adding $account:$start:$SUBID_COUNT"
  echo "$account:$start:$SUBID_COUNT" >>"$file"
}
add_range /etc/subuid
add_range /etc/subgid
