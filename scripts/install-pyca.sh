#!/usr/bin/env bash
# scripts/install-pyca.sh — provide pyca/cryptography's X.509 verifier
# (PolicyBuilder, cryptography >= 43) for the Python relying-party test
# (scripts/pyca-verify.py, cmd/atr TestPycaVerifiesCeremonyChain) on Debian 12.
#
# Debian 12 ships python3-cryptography 38, which has no X.509 verifier; Debian
# 13 (trixie) ships 43. This script fetches trixie's python3-cryptography .deb
# with apt through a temporary, private apt configuration (its own sources
# list, state and cache directories, signed by the Debian archive keyring, so
# the .deb's hash is checked against trixie's signed index), and unpacks it
# with dpkg-deb -x into a cache directory. Nothing is installed into the
# system, the system's apt sources are untouched and no system package is
# upgraded. The unpacked module needs only python3, python3-cffi-backend and
# libssl3 (OpenSSL 3.0 symbols) from Debian 12, which are installed with apt
# when missing.
#
# It leaves DIR/python3, a wrapper that runs /usr/bin/python3 with the
# unpacked package first on PYTHONPATH, and checks that it imports
# cryptography.x509.verification.PolicyBuilder. Idempotent; a no-op (one
# Python start) when the cache is good.
#
#   DIR = $ATR_PYCA_DIR, default ${XDG_CACHE_HOME:-$HOME/.cache}/atr/pyca
#   ATR_PYCA_SUITE   Debian suite to fetch from (default trixie)
#   ATR_PYCA_MIRROR  Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail

dir="${ATR_PYCA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/atr/pyca}"
suite="${ATR_PYCA_SUITE:-trixie}"
mirror="${ATR_PYCA_MIRROR:-http://deb.debian.org/debian}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
python=/usr/bin/python3
probe='from cryptography.x509.verification import PolicyBuilder, Store; import cryptography; print("pyca/cryptography", cryptography.__version__)'

say() { echo "install-pyca: $*" >&2; }
die() { say "$*"; exit 1; }

# Fast path: the cache is already good.
if [ -x "$dir/python3" ] && "$dir/python3" -c "$probe" >/dev/null 2>&1; then
	"$dir/python3" -c "$probe"
	exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# Runtime dependencies from the running Debian release.
if [ ! -x "$python" ] || ! "$python" -c 'import _cffi_backend' 2>/dev/null; then
	say "installing python3 and python3-cffi-backend"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3 python3-cffi-backend >/dev/null
fi
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (this script is for Debian)"
[ -r "$keyring" ] || die "$keyring missing: apt-get install debian-archive-keyring"

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
# Another run may have finished while we waited for the lock.
if [ -x "$dir/python3" ] && "$dir/python3" -c "$probe" >/dev/null 2>&1; then
	"$dir/python3" -c "$probe"
	exit 0
fi

# A private apt: nothing of the system's sources, lists or status is used
# or changed. The system's apt.conf.d (proxies) still applies.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/atr-pyca-apt.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/state/lists/partial" "$tmp/cache/archives/partial" "$tmp/etc/sources.list.d" "$tmp/etc/preferences.d" "$tmp/deb"
# As root, apt downloads as its unprivileged _apt user: let it reach the private dirs.
if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then
	chmod 0755 "$tmp"
	chown -R _apt "$tmp/state/lists" "$tmp/cache/archives" "$tmp/deb"
fi
arch=$(dpkg --print-architecture)
echo "deb [arch=$arch signed-by=$keyring] $mirror $suite main" >"$tmp/etc/sources.list"
apt_opts=(
	-o "Dir::State=$tmp/state"
	-o "Dir::State::status=/dev/null"
	-o "Dir::Cache=$tmp/cache"
	-o "Dir::Etc::SourceList=$tmp/etc/sources.list"
	-o "Dir::Etc::SourceParts=$tmp/etc/sources.list.d"
	-o "Dir::Etc::Preferences=$tmp/etc/preferences"
	-o "Dir::Etc::PreferencesParts=$tmp/etc/preferences.d"
	-o "APT::Architecture=$arch"
	-o "APT::Architectures=$arch"
	-o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
	-o "Acquire::Languages=none"
	-o "Debug::NoLocking=1"
)
# As root, apt drops to its _apt sandbox user for downloads (the default); a non-root
# user cannot switch users, so apt downloads as that user.
[ "$(id -u)" -eq 0 ] || apt_opts+=(-o "APT::Sandbox::User=$(id -un)")
say "fetching python3-cryptography from Debian $suite"
apt-get "${apt_opts[@]}" -qq update
version=$(apt-cache "${apt_opts[@]}" show --no-all-versions python3-cryptography | sed -n 's/^Version: //p' | head -1)
[ -n "$version" ] || die "python3-cryptography not found in $suite"
(cd "$tmp/deb" && apt-get "${apt_opts[@]}" -qq download "python3-cryptography=$version")
deb=$(ls "$tmp"/deb/python3-cryptography_*.deb)

# Unpack next to the old tree and swap, so a failed run leaves no half tree.
rm -rf "$dir/root.new"
dpkg-deb -x "$deb" "$dir/root.new"
dist="$dir/root/usr/lib/python3/dist-packages"
so=$(find "$dir/root.new" -name '_rust*.so' | head -1)
[ -n "$so" ] || die "the package has no _rust module"
if ldd "$so" | grep -q 'not found'; then
	ldd "$so" >&2
	die "the $suite module needs libraries this system lacks"
fi
rm -rf "$dir/root"
mv "$dir/root.new" "$dir/root"
cat >"$dir/python3.new" <<EOF
#!/bin/sh
# Written by scripts/install-pyca.sh: Debian's python3 with $suite's
# python3-cryptography $version first on the module path.
PYTHONPATH="$dist\${PYTHONPATH:+:\$PYTHONPATH}" exec $python "\$@"
EOF
chmod 755 "$dir/python3.new"
mv "$dir/python3.new" "$dir/python3"
echo "$version" >"$dir/version"

"$dir/python3" -c "$probe" || die "the unpacked python3-cryptography $version does not import"
