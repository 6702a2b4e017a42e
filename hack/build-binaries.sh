#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
# and helm from upstream source through the Go module proxy. Each binary is
# cached under $FMS_BIN_DIR/<name>-<version>, so a second run costs nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
BIN_DIR="${FMS_BIN_DIR:-$HOME/.cache/fms/bin}"
mkdir -p "$BIN_DIR"
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0

log() { printf '[build-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cached() { [ -x "$BIN_DIR/$1-$2/$1" ]; }

# build_in_module NAME VERSION MODULE@VERSION PACKAGE [LDFLAGS]
build_simple() {
  local name=$1 version=$2 modver=$3 pkg=$4 ldflags=${5:-}
  cached "$name" "$version" && return 0
  local start=$SECONDS work
  work="$(mktemp -d)"
  log "building $name $version"
  (cd "$work" && go mod init "fmsbuild/$name" >/dev/null 2>&1 \
     && go get "$modver" >/dev/null \
     && go build -trimpath -ldflags "-s -w $ldflags" -o "$work/out/$name" "$pkg")
  mkdir -p "$BIN_DIR/$name-$version"
  mv "$work/out/$name" "$BIN_DIR/$name-$version/$name"
  rm -rf "$work"
  log "built $name $version in $((SECONDS - start)) s"
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION
  # kubectl too: a fresh machine may have none, and one within the supported skew of the server.
  local c missing=()
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do cached "$c" "$v" || missing+=("$c"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  local start=$SECONDS work staging
  work="$(mktemp -d)"
  log "building kubernetes $v (${missing[*]})"
  # k8s.io/kubernetes replaces its k8s.io/* staging modules with local paths;
  # a throwaway module replaces each with its published v0.X.Y instead.
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  staging="v0.${v#v1.}"
  (
    cd "$work"
    go mod init fmsbuild/kubernetes >/dev/null 2>&1
    {
      echo "require k8s.io/kubernetes $v"
      echo "replace ("
      grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" \
        | awk -v s="$staging" '{print "  " $1 " => " $1 " " s}'
      echo ")"
    } >> go.mod
    go mod download k8s.io/kubernetes >/dev/null
    local ld="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$v" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
    mkdir -p out
    for c in "${missing[@]}"; do
      local t=$SECONDS
      go build -trimpath -ldflags "$ld" -o "out/$c" "k8s.io/kubernetes/cmd/$c"
      log "  built $c in $((SECONDS - t)) s"
    done
  )
  for c in "${missing[@]}"; do
    mkdir -p "$BIN_DIR/$c-$v"
    mv "$work/out/$c" "$BIN_DIR/$c-$v/$c"
  done
  rm -rf "$work"
  log "built kubernetes in $((SECONDS - start)) s"
}

build_kwok() {
  local v=$KWOK_VERSION
  build_simple kwok "$v" "sigs.k8s.io/kwok@$v" sigs.k8s.io/kwok/cmd/kwok \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=$v"
  # kwok v0.8 reads its Stage files (pod and node lifecycles) from -c; they ship in the module:
  # the fast node/pod stages plus the lease-era node heartbeat (kwok also renews node Leases).
  local stages="$BIN_DIR/kwok-$v/stages"
  if [ ! -f "$stages/node-heartbeat-with-lease.yaml" ]; then
    local dir f
    dir="$(go mod download -json "sigs.k8s.io/kwok@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    rm -rf "$stages" && mkdir -p "$stages"
    for f in "$dir"/kustomize/stage/node/fast/*.yaml "$dir"/kustomize/stage/node/heartbeat-with-lease/*.yaml \
             "$dir"/kustomize/stage/pod/fast/*.yaml; do
      # Only Stage documents: each folder also holds a kustomization.yaml.
      grep -q '^kind: Stage' "$f" && cp "$f" "$stages/"
    done
    chmod -R u+w "$stages"
  fi
}

what="${1:-all}"
case "$what" in
  etcd) build_simple etcd "$ETCD_VERSION" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" go.etcd.io/etcd/server/v3 ;;
  kubernetes) build_kubernetes ;;
  kwok) build_kwok ;;
  helm) build_simple helm "$HELM_VERSION" "helm.sh/helm/v3@$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
          "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" ;;
  all)
    build_simple etcd "$ETCD_VERSION" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" go.etcd.io/etcd/server/v3
    build_kwok
    build_simple helm "$HELM_VERSION" "helm.sh/helm/v3@$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
      "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    build_kubernetes ;;
  *) echo "usage: $0 [all|etcd|kubernetes|kwok|helm]" >&2; exit 2 ;;
esac
