#!/bin/sh
# Writes testenv/kube/vX.Y/go.mod and go.sum: the control-plane module of an older leg
# (testenv/legs.py), for main.go here built against k8s.io/kubernetes VERSION. Every staging
# module is pinned to the release, as k8s.io/kubernetes's own go.mod maps them to ./staging.
#
#   testenv/kube/mod-for-older.sh v1.30.14
set -eu
V=$1
S=v0.${V#v1.}
here=$(cd "$(dirname "$0")" && pwd)
out="$here/$(echo "$V" | cut -d. -f1-2)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
M=$(go mod download -json "k8s.io/kubernetes@$V" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
cp "$here/main.go" "$work/"
{
  echo "// Module kube builds the multi-call control-plane binary (../main.go, copied beside this file"
  echo "// by testenv/build.py) from k8s.io/kubernetes $V for an older leg of the test matrix."
  echo "// Written by ../mod-for-older.sh."
  echo "module csimigrate.test/testenv/kube"
  echo
  echo "go 1.26.0"
  echo
  echo "require k8s.io/kubernetes $V"
  echo
  echo "replace ("
  grep -E '^\s*k8s.io/[a-z-]+ => ./staging' "$M" | awk -v s="$S" '{print "\t" $1 " => " $1 " " s}'
  echo ")"
} > "$work/go.mod"
(cd "$work" && GOFLAGS=-mod=mod go mod tidy)
mkdir -p "$out"
cp "$work/go.mod" "$work/go.sum" "$out/"
echo "wrote $out/go.mod and go.sum"
