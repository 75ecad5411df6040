#!/usr/bin/env bash
# Builds Ferry's container image without a container runtime: a Debian
# bookworm root filesystem from mmdebstrap (root mode), three layers added
# with umoci into an OCI layout, pushed with skopeo when REGISTRY is set.
# Needs root and the machine's Debian mirror, nothing else from the network.
#
#   FERRY_BIN=path/to/ferry deploy/image/build.sh        (or: build.sh path/to/ferry)
#
# Env (defaults in brackets):
#   FERRY_BIN          the ferry binary [$FERRY_CACHE/target/release/ferry]
#   OUT                output dir [$HOME/.cache/ferry/image]: OUT/oci (OCI layout,
#                      tagged TAG) and OUT/rootfs (the image unpacked, for smoke.sh)
#   TAG                [v + the version `ferry --version` prints (ferry install's default
#                      image tag), else "latest"]
#   REGISTRY           host:port to push to as REGISTRY/REPO:TAG [none: no push]
#   REPO               repository name in the registry [ferry]
#   REGISTRY_USER, REGISTRY_PASSWORD   registry credentials [none]
#   INSECURE=1         the registry speaks plain http (or has an untrusted cert)
#   FERRY_TOOLS        where helm, kubectl and sops are [$FERRY_CACHE/tools]
#   HELM_BIN, KUBECTL_BIN, SOPS_BIN    override the tool binaries found there
#   EXTRA_PACKAGES     more Debian packages for the base (space separated)
#   MIRRORS            apt lines ("deb URI SUITE COMPONENTS"), one per line
#                      [the bookworm lines of this machine's apt sources]
#   BASE_CACHE         cached base layers [$FERRY_CACHE/image-base]
#   REFRESH=1          rebuild the cached base (e.g. for security updates)
#   STRIP=1            strip debug info from ferry (smaller, worse backtraces)
set -euo pipefail

FERRY_CACHE="${FERRY_CACHE:-$HOME/.cache/ferry}"
FERRY_BIN="${1:-${FERRY_BIN:-$FERRY_CACHE/target/release/ferry}}"
OUT="${OUT:-$HOME/.cache/ferry/image}"
FERRY_TOOLS="${FERRY_TOOLS:-$FERRY_CACHE/tools}"
BASE_CACHE="${BASE_CACHE:-$FERRY_CACHE/image-base}"
REPO="${REPO:-ferry}"
SUITE=bookworm
# What a GitOps repo server needs besides ferry, as in Argo CD's image: git, ssh
# for git over ssh, gpg for signed commits, CA certificates, tini as PID 1, and
# age for SOPS keys. --no-install-recommends is mmdebstrap's default.
PACKAGES=(ca-certificates git openssh-client gpg tini age)
# shellcheck disable=SC2206
PACKAGES+=(${EXTRA_PACKAGES:-})
# Bump when the base recipe below changes, so cached bases are rebuilt.
BASE_RECIPE=3
FERRY_UID=999
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# A real `kustomize` (kubectl kustomize) that Ferry's renderer finds before
# /usr/local/bin/kustomize, which is ferry itself (FERRY_TOOLS_BIN, see
# crates/render/src/tools.rs).
TOOLS_BIN=/usr/local/libexec/ferry

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap root mode, chroot, image file ownership)"

# ---- timing ----
STEPS=()
now() { date +%s.%N; }
timed() { # timed NAME cmd...: runs cmd, records and prints how long it took
  local name=$1 t0 t1 d
  shift
  t0=$(now)
  "$@"
  t1=$(now)
  d=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  STEPS+=("$(printf '%-22s %7ss' "$name" "$d")")
  log "$name: ${d}s"
}
T_START=$(now)

# ---- host packages ----
install_host_packages() {
  local need=() p
  for p in mmdebstrap umoci jq; do
    command -v "$p" >/dev/null || need+=("$p")
  done
  if [ -n "${REGISTRY:-}" ]; then command -v skopeo >/dev/null || need+=(skopeo); fi
  if [ "${STRIP:-0}" = 1 ]; then command -v strip >/dev/null || need+=(binutils); fi
  [ ${#need[@]} -eq 0 ] && return 0
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
}
timed "host packages" install_host_packages

# ---- inputs ----
[ -x "$FERRY_BIN" ] || die "FERRY_BIN=$FERRY_BIN is not an executable file"
find_tool() { # find_tool NAME: the newest FERRY_TOOLS/*/bin/NAME that is an ELF binary
  local f
  while IFS= read -r f; do
    if [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ]; then echo "$f"; return 0; fi
  done < <(find "$FERRY_TOOLS" -path "*/bin/$1" -type f -perm -u+x 2>/dev/null | sort -rV)
  return 1
}
HELM_BIN="${HELM_BIN:-$(find_tool helm)}" || die "no helm under $FERRY_TOOLS (make setup), or set HELM_BIN"
KUBECTL_BIN="${KUBECTL_BIN:-$(find_tool kubectl)}" || die "no kubectl under $FERRY_TOOLS (make setup), or set KUBECTL_BIN"
SOPS_BIN="${SOPS_BIN:-$(find_tool sops)}" || die "no sops under $FERRY_TOOLS (make setup), or set SOPS_BIN"

mkdir -p "$OUT" "$BASE_CACHE"
exec 9>"$OUT/.lock"
flock -n 9 || die "another build is using $OUT"
WORK=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Snapshot the binary first: it may be rebuilt while we work.
cp -p "$FERRY_BIN" "$WORK/ferry"
chmod 0755 "$WORK/ferry"
if [ -z "${TAG:-}" ]; then
  # `v` + the version, as `ferry install`'s default image (ferry:vX.Y.Z) names it.
  TAG=$("$WORK/ferry" --version 2>/dev/null | awk 'NR == 1 { print "v" $2 }') || true
  TAG="${TAG:-latest}"
fi
log "ferry: $FERRY_BIN -> tag $TAG"
log "helm: $HELM_BIN; kubectl: $KUBECTL_BIN; sops: $SOPS_BIN"

# ---- apt sources and options for mmdebstrap, from this machine's apt ----
if [ -z "${MIRRORS:-}" ]; then
  # Every "deb" source of this suite (bookworm, -updates, -security), whatever
  # file or format it is configured in; others (third-party repos) are left out.
  # shellcheck disable=SC2016 # apt's $(FIELD) placeholders
  MIRRORS=$(apt-get indextargets --format '$(TARGET_OF) $(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' |
    awk -v s="$SUITE" '$1 == "deb" && ($3 == s || index($3, s "-") == 1) {
        k = $2 " " $3; if (!(k in c)) o[n++] = k; if (index(" " c[k] " ", " " $4 " ") == 0) c[k] = c[k] " " $4 }
      END { for (i = 0; i < n; i++) print "deb " o[i] c[o[i]] }')
fi
if [ -z "$MIRRORS" ]; then
  MIRRORS="deb http://deb.debian.org/debian $SUITE main
deb http://deb.debian.org/debian $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main"
fi
APTOPTS=('Acquire::Languages "none"')
CVU='' CD='' HP='' HSP=''
eval "$(apt-config shell CVU Acquire::Check-Valid-Until CD Acquire::Check-Date HP Acquire::http::Proxy HSP Acquire::https::Proxy)"
[ -n "$CVU" ] && APTOPTS+=("Acquire::Check-Valid-Until \"$CVU\"")
[ -n "$CD" ] && APTOPTS+=("Acquire::Check-Date \"$CD\"")
[ -n "$HP" ] && APTOPTS+=("Acquire::http::Proxy \"$HP\"")
[ -n "$HSP" ] && APTOPTS+=("Acquire::https::Proxy \"$HSP\"")

# ---- base layer: Debian minbase + PACKAGES + the ferry user, cached ----
MMDEBSTRAP_ARGS=(--mode=root --variant=minbase --format=tar --skip=output/dev
  --include="$(IFS=,; echo "${PACKAGES[*]}")")
for o in "${APTOPTS[@]}"; do MMDEBSTRAP_ARGS+=(--aptopt="$o"); done
# No docs, man pages or translations (copyright files stay).
for o in 'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' \
  'path-exclude=/usr/share/locale/*' 'path-include=/usr/share/locale/locale.alias' \
  'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
  'path-exclude=/usr/share/lintian/*'; do
  MMDEBSTRAP_ARGS+=(--dpkgopt="$o")
done
# The user goes in right after the essential packages, before anything that
# creates system users or groups could take uid/gid 999; passwd's postinst then
# makes the shadow entries.
MMDEBSTRAP_ARGS+=(
  --essential-hook="echo 'ferry:x:$FERRY_UID:$FERRY_UID:Ferry:/home/ferry:/bin/sh' >> \"\$1/etc/passwd\""
  --essential-hook="echo 'ferry:x:$FERRY_UID:' >> \"\$1/etc/group\""
  --customize-hook="install -d -m 0755 -o $FERRY_UID -g $FERRY_UID \"\$1/home/ferry\""
  --customize-hook="sed -i 's/^ferry:x:/ferry:*:/' \"\$1/etc/shadow\""
  --customize-hook="chmod 1777 \"\$1/tmp\""
  --customize-hook="rm -f \"\$1\"/var/log/*.log \"\$1\"/var/log/apt/* \"\$1\"/var/cache/debconf/*-old \"\$1\"/var/lib/dpkg/*-old"
)
KEY=$(printf '%s\n' "$BASE_RECIPE" "$SUITE" "$MIRRORS" "${MMDEBSTRAP_ARGS[@]}" | sha256sum | cut -c1-16)
BASE_DIR="$BASE_CACHE/$KEY"
BASE_TAR="$BASE_DIR/rootfs.tar"
BASE_OCI="$BASE_DIR/oci"
build_base() {
  rm -rf "$BASE_DIR"
  mkdir -p "$BASE_DIR"
  printf '%s\n' "$MIRRORS" >"$WORK/sources.list"
  mmdebstrap "${MMDEBSTRAP_ARGS[@]}" "$SUITE" "$WORK/rootfs.tar" "$WORK/sources.list" 2>"$WORK/mmdebstrap.log" ||
    { tail -n 40 "$WORK/mmdebstrap.log" >&2; die "mmdebstrap failed (log above)"; }
  # --skip=output/dev leaves out device nodes (runtimes provide /dev) but also
  # /dev itself, which runtimes and chroot need as a mount point.
  install -d -m 0755 "$WORK/empty/dev"
  tar -C "$WORK/empty" -rf "$WORK/rootfs.tar" --no-recursion --owner=0 --group=0 --numeric-owner \
    --mtime="@$(stat -c %Y "$WORK/rootfs.tar")" ./dev
  mv "$WORK/rootfs.tar" "$BASE_TAR"
  printf '%s\n' "${PACKAGES[@]}" >"$BASE_DIR/packages"
}
# The base as an OCI image with its one (gzipped) layer, so that a warm build
# compresses only Ferry's layers.
build_base_oci() {
  rm -rf "$BASE_OCI" "$BASE_OCI.tmp"
  umoci init --layout "$BASE_OCI.tmp"
  umoci new --image "$BASE_OCI.tmp:base"
  umoci raw add-layer --image "$BASE_OCI.tmp:base" \
    --history.created_by "mmdebstrap $SUITE minbase + ${PACKAGES[*]}" "$BASE_TAR"
  mv "$BASE_OCI.tmp" "$BASE_OCI"
}
exec 8>"$BASE_CACHE/.lock"
flock 8
if [ "${REFRESH:-0}" = 1 ] || [ ! -f "$BASE_TAR" ]; then
  log "building the base root filesystem ($KEY) with mmdebstrap"
  log "sources: $(printf '%s' "$MIRRORS" | tr '\n' ';')"
  timed "mmdebstrap (base)" build_base
  timed "base layer (gzip)" build_base_oci
elif [ ! -f "$BASE_OCI/index.json" ]; then
  timed "base layer (gzip)" build_base_oci
else
  log "base root filesystem: cached ($BASE_DIR)"
fi

# ---- Ferry's layers: the tools (change rarely), then ferry itself ----
layer_tar() { # layer_tar DIR OUT.tar: DIR's contents, deterministic (root-owned, sorted, fixed mtime)
  local epoch
  epoch=$(find "$1" -type f -printf '%T@\n' | sort -n | tail -n1 | cut -d. -f1)
  (cd "$1" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) |
    tar -C "$1" -cf "$2" --no-recursion --format=gnu --owner=0 --group=0 --numeric-owner \
      --mtime="@$epoch" -T -
}
stage_layers() {
  local t="$WORK/tools" f="$WORK/ferry-layer"
  install -d -m 0755 "$t/usr/local/bin" "$t$TOOLS_BIN" "$f/usr/local/bin"
  cp -p "$HELM_BIN" "$t/usr/local/bin/helm"
  cp -p "$KUBECTL_BIN" "$t/usr/local/bin/kubectl"
  cp -p "$SOPS_BIN" "$t/usr/local/bin/sops"
  chmod 0755 "$t"/usr/local/bin/*
  cat >"$t$TOOLS_BIN/kustomize" <<'EOF'
#!/bin/sh
# kustomize as Ferry's renderer calls it, over kubectl's built-in kustomize.
case "$1" in
  build) shift; exec /usr/local/bin/kubectl kustomize "$@" ;;
  version) exec /usr/local/bin/kubectl version --client ;;
  *) echo "kustomize (kubectl wrapper): only 'build' and 'version' are supported" >&2; exit 2 ;;
esac
EOF
  chmod 0755 "$t$TOOLS_BIN/kustomize"
  touch -r "$KUBECTL_BIN" "$t$TOOLS_BIN/kustomize"
  mv "$WORK/ferry" "$f/usr/local/bin/ferry"
  if [ "${STRIP:-0}" = 1 ]; then strip --strip-debug "$f/usr/local/bin/ferry"; fi
  ln -s ferry "$f/usr/local/bin/kustomize"
  ln -s ferry "$f/usr/local/bin/argocd-vault-plugin"
  layer_tar "$t" "$WORK/tools.tar"
  layer_tar "$f" "$WORK/ferry.tar"
}
timed "stage layers" stage_layers

# The tools layer is cached too, next to the base, tagged by its content.
TOOLS_REF="tools-$(sha256sum "$WORK/tools.tar" | cut -c1-16)"
add_tools_layer() {
  local old
  umoci raw add-layer --image "$BASE_OCI:base" --tag "$TOOLS_REF" \
    --history.created_by "helm, kubectl, sops; $TOOLS_BIN/kustomize" "$WORK/tools.tar"
  for old in $(umoci ls --layout "$BASE_OCI" | grep '^tools-' | grep -vx "$TOOLS_REF"); do
    umoci rm --image "$BASE_OCI:$old"
  done
  umoci gc --layout "$BASE_OCI"
}
if umoci ls --layout "$BASE_OCI" | grep -qx "$TOOLS_REF"; then
  log "tools layer: cached ($TOOLS_REF)"
else
  timed "tools layer (gzip)" add_tools_layer
fi

OCI="$OUT/oci"
assemble() {
  local old
  rm -rf "$OCI.tmp"
  mkdir -p "$OCI.tmp/blobs/sha256"
  # Blobs are immutable, named by digest: hard links to the cache are safe.
  cp -l "$BASE_OCI"/blobs/sha256/* "$OCI.tmp/blobs/sha256/" 2>/dev/null ||
    cp "$BASE_OCI"/blobs/sha256/* "$OCI.tmp/blobs/sha256/"
  cp "$BASE_OCI/oci-layout" "$BASE_OCI/index.json" "$OCI.tmp/"
  umoci raw add-layer --image "$OCI.tmp:$TOOLS_REF" --tag "$TAG" \
    --history.created_by "ferry; kustomize and argocd-vault-plugin links" "$WORK/ferry.tar"
  local entrypoint=(--config.entrypoint ferry)
  tar -tf "$BASE_TAR" ./usr/bin/tini >/dev/null 2>&1 &&
    entrypoint=(--config.entrypoint /usr/bin/tini --config.entrypoint -- --config.entrypoint ferry)
  umoci config --image "$OCI.tmp:$TAG" --no-history \
    --config.user "$FERRY_UID:$FERRY_UID" "${entrypoint[@]}" \
    --config.workingdir /home/ferry \
    --config.env "PATH=$IMAGE_PATH" --config.env HOME=/home/ferry \
    --config.env "FERRY_TOOLS_BIN=$TOOLS_BIN" \
    --config.label org.opencontainers.image.title=ferry \
    --config.label "org.opencontainers.image.version=$TAG" \
    --config.label "org.opencontainers.image.base.name=debian:$SUITE"
  for old in $(umoci ls --layout "$OCI.tmp" | grep -vx "$TAG"); do
    umoci rm --image "$OCI.tmp:$old"
  done
  umoci gc --layout "$OCI.tmp"
  rm -rf "$OCI"
  mv "$OCI.tmp" "$OCI"
}
timed "ferry layer + config" assemble

# The image itself unpacked (raw: without the mtree manifest umoci unpack
# writes for repacking, which costs seconds), plus its runtime config.
unpack() {
  rm -rf "$OUT/rootfs" "$WORK/rootfs"
  umoci --log error raw unpack --image "$OCI:$TAG" "$WORK/rootfs"
  umoci raw runtime-config --image "$OCI:$TAG" --rootfs "$WORK/rootfs" "$WORK/config.json"
  mv "$WORK/rootfs" "$OUT/rootfs"
  mv "$WORK/config.json" "$OUT/config.json"
}
timed "unpack rootfs" unpack

if [ -n "${REGISTRY:-}" ]; then
  push() {
    local args=(copy -q --digestfile "$WORK/digest")
    [ -f /etc/containers/policy.json ] || args=(--insecure-policy "${args[@]}")
    [ "${INSECURE:-0}" = 1 ] && args+=(--dest-tls-verify=false)
    if [ -n "${REGISTRY_USER:-}" ]; then
      # Credentials through a private auth file, not the command line.
      (umask 077 && printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$REGISTRY" \
        "$(printf '%s:%s' "$REGISTRY_USER" "${REGISTRY_PASSWORD:-}" | base64 -w0)" >"$WORK/auth.json")
      args+=(--dest-authfile "$WORK/auth.json")
    fi
    skopeo "${args[@]}" "oci:$OCI:$TAG" "docker://$REGISTRY/$REPO:$TAG"
    log "pushed $REGISTRY/$REPO:$TAG@$(cat "$WORK/digest")"
  }
  timed "push (skopeo)" push
fi

# ---- summary ----
manifest=$(jq -r --arg t "$TAG" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$OCI/index.json")
mf="$OCI/blobs/${manifest/://}"
compressed=$(jq '[.config.size] + [.layers[].size] | add' "$mf")
T_END=$(now)
{
  echo "image:      oci:$OCI:$TAG ($manifest)"
  echo "layers:     $(jq -r '[.layers[] | (.size / 1048576 * 10 | floor / 10 | tostring) + " MiB"] | join(" + ")' "$mf") (gzip)"
  echo "size:       $(awk -v b="$compressed" 'BEGIN { printf "%.1f MiB compressed", b / 1048576 }'), $(du -sm "$OUT/rootfs" | cut -f1) MiB unpacked"
  echo "rootfs:     $OUT/rootfs (deploy/image/smoke.sh $OUT/rootfs)"
  echo "timings:"
  printf '  %s\n' "${STEPS[@]}"
  awk -v a="$T_START" -v b="$T_END" 'BEGIN { printf "  %-22s %7.1fs\n", "total", b - a }'
} >&2
