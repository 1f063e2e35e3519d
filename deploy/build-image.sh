#!/usr/bin/env bash
# Build the imgcls image with podman on a machine WITHOUT container-registry access (the
# air-gapped path): the base image is made from Debian packages (mmdebstrap), pip reaches its
# package index through the host's own pip configuration and CA bundle.
#
#   deploy/build-image.sh                      -> imgcls:latest (runtime stage)
#   IMGCLS_IMAGE=imgcls:dev deploy/build-image.sh --build-arg MAX_TOP1_DROP=1.0
#
# Environment (all optional):
#   IMGCLS_IMAGE        tag of the image built                 (default imgcls:latest)
#   IMGCLS_BASE_IMAGE   base image; made here once when absent (default localhost/imgcls-base:bookworm)
#   IMGCLS_DATA_DIR     labeled data for calibration/evaluation, passed as the `shareddata`
#                       build context when the directory exists (default ../shared/data)
#   IMGCLS_MODEL_CONFIG your model.toml: its folder becomes the `model` build context (it must
#                       hold every file the config names) and the image serves that model
#                       (docs/guide/your-own-model.md); unset: the shipped catalog model
#   IMGCLS_SKIP_HOST_SETUP=1   do not install packages nor touch /etc/containers
# Extra arguments go to `podman build` (e.g. --target build, --build-arg MAX_TOP1_DROP=-100).
#   deploy/build-image.sh --host-setup-only    only the host set-up below (used by .ci/run)
#
# Host set-up it does (as root, each step only when needed, so running it again changes nothing):
#   apt-get install podman runc mmdebstrap (+ CNI dnsname for compose,
#   catatonit for pods);  /etc/containers/containers.conf with runtime=runc
#   and container ulimits the kernel allows (crun fails here: "cgroups in hybrid mode").
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMGCLS_IMAGE:-imgcls:latest}
BASE=${IMGCLS_BASE_IMAGE:-localhost/imgcls-base:bookworm}
DATA_DIR=${IMGCLS_DATA_DIR:-../shared/data}
SUITE=bookworm
CONF=/etc/containers/containers.conf

say() { echo "build-image: $*" >&2; }

install_tools() {
  local missing=()
  for tool in podman runc mmdebstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  # Container names as DNS names on compose networks (podman 4.3 with CNI needs this plugin).
  [ -e /usr/lib/cni/dnsname ] || missing+=(golang-github-containernetworking-plugin-dnsname)
  # Pods (`podman kube play`) need a pause image, which podman builds locally from catatonit.
  command -v catatonit >/dev/null || missing+=(catatonit)
  [ ${#missing[@]} = 0 ] && return
  [ "$(id -u)" = 0 ] || { say "missing ${missing[*]}: run as root or install them"; exit 1; }
  say "installing ${missing[*]} (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman runc mmdebstrap uidmap slirp4netns fuse-overlayfs \
    golang-github-containernetworking-plugin-dnsname catatonit >/dev/null
}

configure_podman() {
  if [ -f "$CONF" ]; then
    if grep -q '^runtime *= *"runc"' "$CONF" && grep -q '^default_ulimits' "$CONF"; then
      return
    fi
    say "$CONF exists without runtime=\"runc\" and default_ulimits: left as is (add them if"
    say "podman fails with 'cgroups in hybrid mode' or 'setrlimit RLIMIT_NOFILE')"
    return
  fi
  [ "$(id -u)" = 0 ] || { say "no $CONF and not root: podman keeps its defaults"; return; }
  say "writing $CONF (runtime runc, ulimits nofile/nproc 4096)"
  mkdir -p "$(dirname "$CONF")"
  cat >"$CONF" <<'CONF'
# Written by imgcls deploy/build-image.sh. crun fails on this kind of host ("cgroups in hybrid
# mode not supported"), and podman's default container rlimits exceed what the host allows
# ("setrlimit RLIMIT_NOFILE: Operation not permitted").
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF
}

make_base() {
  if podman image exists "$BASE"; then
    say "base image $BASE present (delete it to remake: podman rmi $BASE)"
    return
  fi
  local tmp
  tmp=$(mktemp -d)
  say "making base image $BASE from Debian $SUITE packages (mmdebstrap, uses the host's apt sources)"
  # minbase + python3 (3.11) + venv (bundled pip for `python3 -m venv`) + CA certificates.
  # No docs, man pages or locales, no apt lists: a smaller base.
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$SUITE" "$tmp/rootfs.tar"
  podman import --change 'CMD ["python3"]' "$tmp/rootfs.tar" "$BASE" >/dev/null
  rm -rf "$tmp"
}

# pip's index settings as the host has them (env, then its config files): inside the build they
# are passed as PIP_* build args, and every local directory they name (file:// indexes,
# find-links folders, with what their pages link to) is mounted read-only at the same path, with the host's CA bundle (pip's
# downloads may pass through a proxy that only the host's certificates trust).
pip_args=()
pip_setting() {  # $1: pip config key (index-url ...), prints the value or nothing
  local env_name="PIP_$(echo "$1" | tr 'a-z-' 'A-Z_')"
  if [ -n "${!env_name:-}" ]; then echo "${!env_name}"; return; fi
  python3 -m pip config list 2>/dev/null | sed -n "s/^[a-z:]*\.$1='\(.*\)'$/\1/p" | tail -n 1
}
pip_passthrough() {
  local key value item dir
  for key in index-url extra-index-url find-links; do
    value=$(pip_setting "$key")
    [ -n "$value" ] || continue
    pip_args+=(--build-arg "PIP_$(echo "$key" | tr 'a-z-' 'A-Z_')=$value")
    for item in $value; do
      dir=${item#file://}
      dir=${dir%/}
      # A file:// simple index links to its wheels with relative paths (../../files/x.whl):
      # mount the folder that holds simple/ and those files.
      [ "$(basename "$dir")" = simple ] && dir=$(dirname "$dir")
      if [ "${dir:0:1}" = / ] && [ -d "$dir" ]; then pip_args+=(-v "$dir:$dir:ro"); fi
    done
  done
  if [ -d /etc/ssl/certs ]; then
    pip_args+=(-v /etc/ssl/certs:/etc/ssl/certs:ro
      --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
  fi
}

if [ "${IMGCLS_SKIP_HOST_SETUP:-0}" != 1 ]; then
  install_tools
  configure_podman
fi
if [ "${1:-}" = --host-setup-only ]; then exit 0; fi
make_base
pip_passthrough

data_args=()
if [ -n "${IMGCLS_MODEL_CONFIG:-}" ]; then
  :  # the model's own images calibrate and evaluate it ([data] dir in its config)
elif [ -d "$DATA_DIR" ]; then
  data_args=(--build-context "shareddata=$(cd "$DATA_DIR" && pwd)")
  say "labeled data: $DATA_DIR"
else
  say "no labeled data at $DATA_DIR: calibrating and evaluating on the packages' photos"
fi

model_args=()
if [ -n "${IMGCLS_MODEL_CONFIG:-}" ]; then
  [ -f "$IMGCLS_MODEL_CONFIG" ] || { say "IMGCLS_MODEL_CONFIG=$IMGCLS_MODEL_CONFIG does not exist"; exit 2; }
  model_args=(--build-context "model=$(cd "$(dirname "$IMGCLS_MODEL_CONFIG")" && pwd)"
    --build-arg "MODEL_CONFIG=$(basename "$IMGCLS_MODEL_CONFIG")")
  say "model: $IMGCLS_MODEL_CONFIG"
fi

say "podman build -> $IMAGE (base $BASE)"
start=$(date +%s)
# --format docker: the OCI format has no HEALTHCHECK (podman would drop it). --jobs 2: the
# runtime venv is installed while the build stage builds the model.
podman build --format docker --jobs 2 -f deploy/Dockerfile --ignorefile deploy/Dockerfile.dockerignore \
  --build-arg "BASE=$BASE" \
  --build-arg "VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)" \
  --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "${pip_args[@]}" "${data_args[@]}" "${model_args[@]}" -t "$IMAGE" "$@" .
say "built $IMAGE in $(( $(date +%s) - start )) s: $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
