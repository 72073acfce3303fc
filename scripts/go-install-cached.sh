#!/usr/bin/env bash
# scripts/go-install-cached.sh NAME DIR MODULE VERSION PACKAGE... — the pinned
# `go install` of third-party tools into a cache directory, for the install-*
# scripts (install-litewitness.sh, peerbench/install-stepca.sh).
#
# Builds every PACKAGE at MODULE's VERSION through the Go module proxy
# (go.sum-checked against the checksum database) into DIR/bin, from DIR (so
# that no go.mod of the caller applies), with the machine's own Go
# (GOTOOLCHAIN=local); the caller's environment (CGO_ENABLED, GOFLAGS) goes to
# the go command. A no-op when DIR/bin holds every PACKAGE's binary and the
# first is MODULE VERSION; a lock keeps two runs from building at once, and a
# failed build leaves the cache as it was. NAME prefixes the messages.
set -euo pipefail
[ $# -ge 5 ] || { echo "usage: $0 NAME DIR MODULE VERSION PACKAGE..." >&2; exit 2; }
name=$1 dir=$2 module=$3 version=$4
shift 4
pkgs=("$@")

say() { echo "$name: $*" >&2; }
command -v go >/dev/null || { say "go not found"; exit 1; }

good() {
	local p
	for p in "${pkgs[@]}"; do
		[ -x "$dir/bin/${p##*/}" ] || return 1
	done
	go version -m "$dir/bin/${pkgs[0]##*/}" 2>/dev/null | grep -q "[[:space:]]$module[[:space:]]*$version[[:space:]]"
}
if good; then
	say "$module $version in $dir/bin"
	exit 0
fi

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if good; then
	say "$module $version in $dir/bin"
	exit 0
fi
rm -rf "$dir/bin.new"
say "building ${pkgs[*]##*/} ($module $version)"
(cd "$dir" && GOBIN="$dir/bin.new" GOTOOLCHAIN=local go install "${pkgs[@]/%/@$version}")
rm -rf "$dir/bin"
mv "$dir/bin.new" "$dir/bin"
good || { say "the built ${pkgs[0]##*/} is not $module $version"; exit 1; }
say "$module $version in $dir/bin"
