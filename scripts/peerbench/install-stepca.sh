#!/usr/bin/env bash
# install-stepca.sh — provide smallstep step-ca, the peer of the side-by-side
# comparison (compare.sh, cmd/atr-peerbench/README.md), built with cgo so that
# its PKCS#11 KMS can use the same SoftHSM2 as ATR.
#
# Builds the pinned version with `go install` through the Go module proxy
# (go.sum-checked against the checksum database) into a cache directory; the
# system is not changed but for the Debian packages its build and the token
# need (libpcsclite-dev: step-ca's YubiKey KMS is compiled in with cgo;
# softhsm2 and opensc), installed with apt when missing. The build takes
# about 4 minutes on 2 cores. Idempotent; a no-op when the cache is good.
#
# It leaves DIR/bin/step-ca.
#
#   DIR = $ATR_STEPCA_DIR, default ${XDG_CACHE_HOME:-$HOME/.cache}/atr/step-ca
#   ATR_STEPCA_VERSION   github.com/smallstep/certificates version (default v0.30.2)
set -euo pipefail

version="${ATR_STEPCA_VERSION:-v0.30.2}"
dir="${ATR_STEPCA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/atr/step-ca}"

say() { echo "install-stepca: $*" >&2; }
die() { say "$*"; exit 1; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
[ -e /usr/include/PCSC/winscard.h ] || missing+=(libpcsclite-dev)
[ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null || missing+=(softhsm2)
command -v pkcs11-tool >/dev/null || missing+=(opensc)
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || die "go not found"

good() {
	[ -x "$dir/bin/step-ca" ] &&
		go version -m "$dir/bin/step-ca" 2>/dev/null | grep -q "github.com/smallstep/certificates[[:space:]]*$version[[:space:]]"
}
if good; then
	say "step-ca $version in $dir/bin"
	exit 0
fi

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if good; then
	say "step-ca $version in $dir/bin"
	exit 0
fi
rm -rf "$dir/bin.new"
say "building step-ca (github.com/smallstep/certificates $version, cgo on; ~4 min)"
# Outside any module, so that this repository's go.mod does not apply;
# -mod=mod lets the go command resolve step-ca's own requirements.
(cd "$dir" && GOBIN="$dir/bin.new" CGO_ENABLED=1 GOFLAGS=-mod=mod GOTOOLCHAIN=local \
	go install "github.com/smallstep/certificates/cmd/step-ca@$version")
rm -rf "$dir/bin"
mv "$dir/bin.new" "$dir/bin"
good || die "the built step-ca is not github.com/smallstep/certificates $version"
say "step-ca $version in $dir/bin"
