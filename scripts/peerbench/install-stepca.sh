#!/usr/bin/env bash
# install-stepca.sh — provide smallstep step-ca, the peer of the side-by-side
# comparison (compare.sh, cmd/atr-peerbench/README.md), built with cgo so that
# its PKCS#11 KMS can use the same SoftHSM2 as ATR.
#
# Builds the pinned version with `go install` through the Go module proxy
# (go.sum-checked against the checksum database) into a cache directory
# (../go-install-cached.sh); the system is not changed but for the Debian packages its build and the token
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
# CGO_ENABLED: step-ca's PKCS#11 KMS is cgo; -mod=mod lets the go command
# resolve step-ca's own requirements.
CGO_ENABLED=1 GOFLAGS=-mod=mod exec "$(dirname "${BASH_SOURCE[0]}")/../go-install-cached.sh" install-stepca "$dir" \
	github.com/smallstep/certificates "$version" github.com/smallstep/certificates/cmd/step-ca
