#!/usr/bin/env bash
# scripts/install-a2a-sdk.sh — provide @a2a-js/sdk's agent-card signature
# verifier (verifyAgentCardSignature) for the A2A relying-party test
# (api/testdata/agentcard/verify-card.mjs, api TestA2ASDKVerifiesSignedCard).
#
# It installs the pinned @a2a-js/sdk and its one dependency, jose (also
# pinned, so the verifier under test never changes underneath us), with npm
# into a cache directory outside the repository: no node_modules in git, no
# global install, no install scripts run, optional peer dependencies
# (express, grpc, databases) left out. Needs node >= 20 and npm.
#
# It leaves DIR/node_modules and checks that the SDK imports and exports
# verifyAgentCardSignature. Idempotent; a no-op (one node start) when the
# cache is good.
#
#   DIR = $ATR_A2A_SDK_DIR, default ${XDG_CACHE_HOME:-$HOME/.cache}/atr/a2a-sdk
set -euo pipefail

sdk_version=1.3.0
jose_version=6.2.19
dir="${ATR_A2A_SDK_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/atr/a2a-sdk}"
probe="import('$dir/node_modules/@a2a-js/sdk/dist/index.js').then(m => {
  if (typeof m.verifyAgentCardSignature !== 'function') throw new Error('no verifyAgentCardSignature');
  console.log('@a2a-js/sdk', JSON.parse(require('fs').readFileSync('$dir/node_modules/@a2a-js/sdk/package.json')).version);
})"

say() { echo "install-a2a-sdk: $*" >&2; }
die() { say "$*"; exit 1; }

good() {
	[ "$(cat "$dir/version" 2>/dev/null)" = "$sdk_version $jose_version" ] && node -e "$probe" >/dev/null 2>&1
}

command -v node >/dev/null || die "node not found (need node >= 20)"
command -v npm >/dev/null || die "npm not found"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || die "node $(node --version) is too old: @a2a-js/sdk needs node >= 20"

if good; then
	node -e "$probe"
	exit 0
fi

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
# Another run may have finished while we waited for the lock.
if good; then
	node -e "$probe"
	exit 0
fi

# Install into a fresh tree and swap, so a failed run leaves no half tree.
rm -rf "$dir/new"
mkdir -p "$dir/new"
cat >"$dir/new/package.json" <<JSON
{
  "name": "atr-a2a-sdk-cache",
  "private": true,
  "description": "Written by scripts/install-a2a-sdk.sh",
  "dependencies": {"@a2a-js/sdk": "$sdk_version", "jose": "$jose_version"},
  "overrides": {"jose": "$jose_version"}
}
JSON
say "installing @a2a-js/sdk $sdk_version (jose $jose_version) into $dir"
(cd "$dir/new" && npm install --no-audit --no-fund --ignore-scripts --omit=peer --omit=optional --loglevel=error >&2)
rm -rf "$dir/node_modules" "$dir/package.json" "$dir/package-lock.json"
mv "$dir/new/node_modules" "$dir/node_modules"
mv "$dir/new/package.json" "$dir/new/package-lock.json" "$dir/"
rm -rf "$dir/new"
echo "$sdk_version $jose_version" >"$dir/version"

node -e "$probe" || die "the installed @a2a-js/sdk does not import"
