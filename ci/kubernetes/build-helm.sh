#!/bin/bash
# Build helm from the Go module proxy (helm.sh/helm/v4/cmd/helm, no git checkout), for the chart's
# lint/template checks and its install into the CI cluster. Cached in $KY_K8S_CACHE/helm-<version>/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); . "$HERE/common.sh"
C=$KY_K8S_CACHE/helm-$HELM_VERSION M=$S/build/helm
mkdir -p "$B" "$C"; t=$EPOCHREALTIME
if [ -x "$B/helm" ] && "$B/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  echo "helm: $HELM_VERSION already in $B"; exit 0; fi
if [ -x "$C/helm" ]; then how="copied from cache"; else
  mkdir -p "$M"
  printf 'module kernelyard/helmbuild\n\ngo 1.24\n\nrequire helm.sh/helm/v4 %s\n' "$HELM_VERSION" > "$M/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/v4/cmd/helm"\n' > "$M/tools.go"
  LD="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
  (cd "$M" && GOFLAGS=-mod=mod GOWORK=off go mod tidy &&
   CGO_ENABLED=0 GOWORK=off go build -buildvcs=false -trimpath -ldflags="$LD" -o "$C/helm.tmp" helm.sh/helm/v4/cmd/helm)
  mv "$C/helm.tmp" "$C/helm"; how="built"
fi
cp "$C/helm" "$B/helm.tmp" && mv "$B/helm.tmp" "$B/helm"
echo "helm: $HELM_VERSION $how in $(awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $t}")s ($(du -h "$B/helm" | cut -f1))"
