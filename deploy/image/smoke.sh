#!/usr/bin/env bash
# shellcheck disable=SC2016 # single-quoted scripts run inside the image
# Smoke test of Ferry's image root filesystem (build.sh leaves it at OUT/rootfs):
# runs each tool inside it with chroot, as the image's user (999:999) with the
# image's environment and working directory, in a private mount namespace
# (/dev bound, /proc and a fresh /tmp mounted; all gone when the test ends).
#
#   deploy/image/smoke.sh ~/.cache/ferry/image/rootfs
#
# Prints each tool's version; exits non-zero if any check fails.
set -euo pipefail

ROOTFS="${1:?usage: smoke.sh ROOTFS}"
ROOTFS=$(cd "$ROOTFS" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "smoke.sh: run as root (chroot, mounts)" >&2; exit 2; }
[ -x "$ROOTFS/usr/local/bin/ferry" ] || { echo "smoke.sh: no /usr/local/bin/ferry in $ROOTFS" >&2; exit 2; }

if [ -z "${FERRY_SMOKE_NS:-}" ]; then
  exec env FERRY_SMOKE_NS=1 unshare --mount --propagation private -- "$0" "$ROOTFS"
fi
mkdir -p "$ROOTFS/dev" "$ROOTFS/proc" "$ROOTFS/tmp"
mount --bind /dev "$ROOTFS/dev"
mount -t proc proc "$ROOTFS/proc"
mount -t tmpfs -o mode=1777 tmpfs "$ROOTFS/tmp"

# The image's user, environment and working directory: from the runtime config
# build.sh leaves next to the rootfs (umoci unpack's config.json), else defaults.
USERSPEC=999:999 CWD=/home/ferry
ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/home/ferry
  FERRY_TOOLS_BIN=/usr/local/libexec/ferry)
CONFIG="$(dirname "$ROOTFS")/config.json"
if [ -f "$CONFIG" ] && command -v jq >/dev/null; then
  USERSPEC=$(jq -r '"\(.process.user.uid):\(.process.user.gid)"' "$CONFIG")
  CWD=$(jq -r '.process.cwd' "$CONFIG")
  mapfile -t ENV < <(jq -r '.process.env[]' "$CONFIG")
fi
in_image() { chroot --userspec="$USERSPEC" "$ROOTFS" /usr/bin/env -i -C "$CWD" "${ENV[@]}" "$@"; }

FAILED=()
check() { # check NAME cmd...: runs cmd in the image, prints its first line of output
  local name=$1 out rc=0
  shift
  out=$("$@" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then
    printf '  ok    %-22s %s\n' "$name" "$(printf '%s\n' "$out" | head -n1 | sed 's/^ *//')"
  else
    printf '  FAIL  %-22s exit %s: %s\n' "$name" "$rc" "$(printf '%s\n' "$out" | tail -n3 | tr '\n' ' ')"
    FAILED+=("$name")
  fi
}

ferry_version() { in_image ferry version --client -o short; }
sops_version() { in_image sops --version --disable-version-check; }
ssh_version() { in_image ssh -V 2>&1; }
identity() {
  local id
  id=$(in_image sh -c 'echo "$(id -u):$(id -g) $(id -un) HOME=$HOME PWD=$PWD"')
  case "$id" in 999:999\ ferry\ HOME=/home/ferry\ PWD=/home/ferry) echo "$id" ;; *) echo "unexpected: $id"; return 1 ;; esac
}
writable() { in_image sh -c 't=$(mktemp) && rm "$t" && test -w "$HOME" && echo "/tmp and \$HOME writable"'; }
# The argv0 links: kustomize (ferry) builds through the real kustomize
# (FERRY_TOOLS_BIN's kubectl wrapper), as the renderer does.
kustomize_build() {
  in_image sh -c 'set -e; d=$(mktemp -d); cd "$d"
    printf "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: smoke\ndata:\n  a: b\n" > cm.yaml
    printf "resources:\n- cm.yaml\nnamePrefix: ok-\n" > kustomization.yaml
    kustomize build . | grep "name: ok-smoke"'
}

echo "smoke test of $ROOTFS (as $USERSPEC in $CWD):"
check "ferry" ferry_version
check "git" in_image git --version
check "helm" in_image helm version --short
check "kubectl" in_image kubectl version --client
check "sops" sops_version
check "ssh" ssh_version
check "age" in_image age --version
check "gpg" in_image gpg --version
check "tini" in_image tini --version
check "argocd-vault-plugin" in_image argocd-vault-plugin version
check "kustomize build" kustomize_build
check "user" identity
check "writable" writable
check "ca-certificates" in_image sh -c 'echo "$(grep -c BEGIN /etc/ssl/certs/ca-certificates.crt) in /etc/ssl/certs/ca-certificates.crt"'

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED: ${FAILED[*]}" >&2
  exit 1
fi
echo "all checks passed"
