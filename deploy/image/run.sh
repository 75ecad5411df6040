#!/usr/bin/env bash
# Runs a command inside Ferry's image root filesystem as a container runtime would: as the
# image's user, with its environment and working directory, /dev, /proc and a fresh /tmp, in a
# private mount namespace (all gone when the command ends), plus the environment given as
# NAME=VALUE arguments before `--`. The network is the host's, so loopback servers are reachable.
# SERVICEACCOUNT_DIR=DIR mounts DIR where a kubelet mounts a pod's ServiceAccount token
# (/var/run/secrets/kubernetes.io/serviceaccount), for this process only.
#
#   deploy/image/run.sh ROOTFS [NAME=VALUE...] -- ferry controller --namespace argocd
set -euo pipefail

ROOTFS="${1:?usage: run.sh ROOTFS [NAME=VALUE...] -- CMD...}"
shift
ROOTFS=$(cd "$ROOTFS" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "run.sh: run as root (chroot, mounts)" >&2; exit 2; }
EXTRA=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do EXTRA+=("$1"); shift; done
[ "${1:-}" = "--" ] || { echo "run.sh: missing -- before the command" >&2; exit 2; }
shift

if [ -z "${FERRY_RUN_NS:-}" ]; then
  exec env FERRY_RUN_NS=1 unshare --mount --propagation private --kill-child -- "$0" "$ROOTFS" "${EXTRA[@]}" -- "$@"
fi
mkdir -p "$ROOTFS/dev" "$ROOTFS/proc" "$ROOTFS/tmp"
mount --bind /dev "$ROOTFS/dev"
mount -t proc proc "$ROOTFS/proc"
mount -t tmpfs -o mode=1777 tmpfs "$ROOTFS/tmp"
if [ -n "${SERVICEACCOUNT_DIR:-}" ]; then
  # /var/run is a link to /run inside the image; mount on the real directory.
  mkdir -p "$ROOTFS/run/secrets/kubernetes.io/serviceaccount"
  mount --bind -o ro "$SERVICEACCOUNT_DIR" "$ROOTFS/run/secrets/kubernetes.io/serviceaccount"
fi

USERSPEC=999:999 CWD=/home/ferry
ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/home/ferry
  FERRY_TOOLS_BIN=/usr/local/libexec/ferry)
CONFIG="$(dirname "$ROOTFS")/config.json"
if [ -f "$CONFIG" ] && command -v jq >/dev/null; then
  USERSPEC=$(jq -r '"\(.process.user.uid):\(.process.user.gid)"' "$CONFIG")
  CWD=$(jq -r '.process.cwd' "$CONFIG")
  mapfile -t ENV < <(jq -r '.process.env[]' "$CONFIG")
fi
exec chroot --userspec="$USERSPEC" "$ROOTFS" /usr/bin/env -i -C "$CWD" "${ENV[@]}" "${EXTRA[@]}" "$@"
