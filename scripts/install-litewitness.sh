#!/usr/bin/env bash
# scripts/install-litewitness.sh — provide torchwood's litewitness and
# witnessctl (filippo.io/torchwood, a C2SP tlog-witness nobody here wrote)
# for the witness interop test (registry/witness TestLitewitnessCosigns).
#
# Builds the pinned version with `go install` through the Go module proxy
# (go.sum-checked against the checksum database) into a cache directory
# (go-install-cached.sh); the system is not changed. v0.6.1 is the newest
# torchwood that builds with this repository's Go 1.26 (v0.10.0 needs Go
# 1.27). litewitness holds its key in an ssh-agent, so openssh-client
# (ssh-agent, ssh-add, ssh-keygen) is installed with apt when missing.
# Idempotent; a no-op when the cache is good.
#
# It leaves DIR/bin/litewitness and DIR/bin/witnessctl.
#
#   DIR = $ATR_LITEWITNESS_DIR, default ${XDG_CACHE_HOME:-$HOME/.cache}/atr/litewitness
#   ATR_LITEWITNESS_VERSION   torchwood version (default v0.6.1)
set -euo pipefail

version="${ATR_LITEWITNESS_VERSION:-v0.6.1}"
dir="${ATR_LITEWITNESS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/atr/litewitness}"

say() { echo "install-litewitness: $*" >&2; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v ssh-agent >/dev/null || ! command -v ssh-add >/dev/null || ! command -v ssh-keygen >/dev/null; then
	say "installing openssh-client (ssh-agent holds litewitness's key)"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends openssh-client >/dev/null
fi
exec "$(dirname "${BASH_SOURCE[0]}")/go-install-cached.sh" install-litewitness "$dir" filippo.io/torchwood "$version" \
	filippo.io/torchwood/cmd/litewitness filippo.io/torchwood/cmd/witnessctl
