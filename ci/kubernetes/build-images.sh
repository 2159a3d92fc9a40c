#!/bin/bash
# Build the kernel and gateway images without a registry and without docker, as OCI archives in
# $KY_K8S_STATE/images/ (start.sh imports every *.oci.tar there; `--import` also imports them into
# the running cluster's containerd, for an image rebuilt while the cluster runs).
#   kernel  localhost/kernelyard/kernel:1   Debian python3 + images/kernel/requirements.txt in /opt/venv
#   gateway localhost/kernelyard/gateway:1  a base layer with images/gateway/requirements.txt in /opt/venv
#           (cached by mkimage.sh by a hash of the pinned list), plus this repo's kernelyard appended
#           per build (images/gateway/install-tree.py), so a code change doesn't rebuild the base.
# Usage: build-images.sh [--import] [kernel] [gateway]     (no image named: both)
# The Containerfiles in images/ build the same images with docker/podman/buildah (docs/kubernetes-images.md).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); . "$HERE/common.sh"; ROOT=$(cd "$HERE/../.." && pwd)
KERNEL_REF=${KY_KERNEL_IMAGE:-localhost/kernelyard/kernel:1}
GATEWAY_REF=${KY_GATEWAY_IMAGE:-localhost/kernelyard/gateway:1}
PKGS=ca-certificates   # mkimage.sh adds python3,python3-venv when there are pip requirements
VENV_PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER_ID=10001:10001    # the images' default user; pods set their own (runAsUser)
do_import=0 want=()
for a in "$@"; do case $a in --import) do_import=1 ;; kernel|gateway) want+=("$a") ;;
  *) echo "usage: $0 [--import] [kernel] [gateway]" >&2; exit 2 ;; esac; done
[ ${#want[@]} -gt 0 ] || want=(kernel gateway)

pins() { grep -Ev '^[[:space:]]*(#|$)' "$1"; }
oci() { echo "$S/images/$(tr '/:' '__' <<<"$1").oci.tar"; }
# layer REQUIREMENTS: mkimage.sh builds (or finds) the layer of $PKGS + the pinned requirements;
# prints its path, computed as mkimage.sh keys it (as the recipe's addons/build-spark-image.sh does)
layer() {
  local ref=$1 req=$2 key; local -a pip; mapfile -t pip < <(pins "$req")
  "$HERE/mkimage.sh" "$ref" "$PKGS" "${pip[@]}" >&2
  rm -f "$(oci "$ref")"   # only its layer is used
  . /etc/os-release
  key=$({ printf '%s\n' "$VERSION_CODENAME" "$(dpkg --print-architecture)" "$PKGS,python3,python3-venv" \
          "${pip[@]}"; cat "$HERE/mkimage.sh"; } | sha256sum | cut -c1-16)
  [ -f "$KY_K8S_CACHE/images/$key.tar" ] || { echo "layer $KY_K8S_CACHE/images/$key.tar not found" >&2; exit 1; }
  echo "$KY_K8S_CACHE/images/$key.tar"
}
took() { awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $1}"; }

build_kernel() {
  local t=$EPOCHREALTIME base
  base=$(layer localhost/kernelyard/kernel-base:1 "$ROOT/images/kernel/requirements.txt")
  python3 "$HERE/mkoci.py" "$base" "$KERNEL_REF" "$(oci "$KERNEL_REF")" --env PATH=$VENV_PATH \
    --env HOME=/tmp --user $USER_ID --workdir /tmp --cmd '["python3"]' >/dev/null
  echo "image: $KERNEL_REF in $(took "$t")s ($(du -h "$(oci "$KERNEL_REF")" | cut -f1))"
}

build_gateway() {
  local t=$EPOCHREALTIME base site W=$S/build/gateway-image
  base=$(layer localhost/kernelyard/gateway-base:1 "$ROOT/images/gateway/requirements.txt")
  site=$(tar -tf "$base" | awk '/^(\.\/)?opt\/venv\/lib\/python3\.[0-9]+\/site-packages\/$/ && !f {
    sub(/^\.\//, ""); sub(/\/$/, ""); print; f = 1 }')   # awk reads it all: no SIGPIPE
  [ -n "$site" ] || { echo "no /opt/venv site-packages in $base" >&2; exit 1; }
  rm -rf "$W"; mkdir -p "$W/root"
  python3 "$ROOT/images/gateway/install-tree.py" "$ROOT" "$W/root" "$site" /opt/venv/bin /opt/venv/bin/python3
  # bytecode checked by hash, not mtime: valid in the read-only image whatever the files' times
  python3 -m compileall -q --invalidation-mode unchecked-hash "$W/root/$site/kernelyard" >/dev/null
  mkdir -p "$W/root/var/lib/kernelyard" "$W/root/etc/kernelyard"   # mount points: store volume, config
  cp "$base" "$W/layer.tar"
  tar -rf "$W/layer.tar" -C "$W/root" --owner=0 --group=0 --numeric-owner --mode=go-w --sort=name \
    --mtime=@0 "$site/kernelyard" "$(cd "$W/root" && echo "$site"/kernelyard-*.dist-info)" opt/venv/bin/kernelyard \
    opt/venv/bin/kernelyard-runas var/lib/kernelyard etc/kernelyard
  SOURCE_DATE_EPOCH=0 python3 "$HERE/mkoci.py" "$W/layer.tar" "$GATEWAY_REF" "$(oci "$GATEWAY_REF")" \
    --env PATH=$VENV_PATH --env HOME=/tmp --env JUPYTER_RUNTIME_DIR=/tmp/runtime \
    --env JUPYTER_DATA_DIR=/var/lib/kernelyard --env PYTHONDONTWRITEBYTECODE=1 --user $USER_ID \
    --workdir /tmp --entrypoint '["kernelyard"]' --cmd '["serve", "--ip=0.0.0.0"]' >/dev/null
  rm -rf "$W"
  echo "image: $GATEWAY_REF in $(took "$t")s ($(du -h "$(oci "$GATEWAY_REF")" | cut -f1))"
}

mkdir -p "$S/images"
for w in "${want[@]}"; do "build_$w"; done
if [ "$do_import" = 1 ]; then
  for w in "${want[@]}"; do ref=${w^^}_REF; f=$(oci "${!ref}")
    $CTR images import "$f" >/dev/null; echo "imported ${f##*/} into the cluster (ctr -n k8s.io)"; done
fi
