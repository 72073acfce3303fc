#!/usr/bin/env bash
# scripts/dev-up.sh — bring up a development Agent Trust Registry (the README's
# first command). Idempotent: run it again and it reuses what is there.
#
#   ATR_DATA_DIR  data directory (default ./var)
#   ATR_LISTEN    listen address  (default 127.0.0.1:8443)
#   ATR_VRF_ALGORITHM  the VRF key of a new data directory: rsa-3072 (default)
#                 or rsa-2048 (`atr ceremony vrf-key --help`)
#
# Steps: install SoftHSM2/OpenSC if missing, build the atr binary into
# $ATR_DATA_DIR/bin, create the two dev tokens (atr-root, atr-issuing),
# run the ceremonies (root, intermediate, log key, VRF key) with --if-missing, create
# an admin API key in $ATR_DATA_DIR/admin.apikey, then exec `atr serve` in the
# foreground (HTTPS, certificate chaining to the dev root).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

export ATR_DATA_DIR="${ATR_DATA_DIR:-./var}"
export ATR_LISTEN="${ATR_LISTEN:-127.0.0.1:8443}"
umask 077
mkdir -p "$ATR_DATA_DIR"
chmod 0700 "$ATR_DATA_DIR"
DATA_DIR=$(cd "$ATR_DATA_DIR" && pwd)
export ATR_DATA_DIR="$DATA_DIR"

say() { printf 'dev-up: %s\n' "$*" >&2; }

# 1. Packages: SoftHSM2 (the PKCS#11 token) and OpenSC (pkcs11-tool).
missing=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null || missing+=(softhsm2)
command -v pkcs11-tool >/dev/null || missing+=(opensc)
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { say "Go is required (https://go.dev/dl/)"; exit 1; }

# 2. The binary, outside the source tree's tracked files.
say "building $DATA_DIR/bin/atr"
mkdir -p "$DATA_DIR/bin"
go build -o "$DATA_DIR/bin/atr" ./cmd/atr
atr="$DATA_DIR/bin/atr"

# 3. Dev tokens: softhsm2.conf, tokens/ (0700), pin (0600).
if [ -x softhsm/init-tokens.sh ]; then
	softhsm/init-tokens.sh "$DATA_DIR" "$DATA_DIR/pin" >&2
else
	say "softhsm/init-tokens.sh not found: initialising tokens here"
	mkdir -p "$DATA_DIR/tokens"
	chmod 0700 "$DATA_DIR/tokens"
	if [ ! -f "$DATA_DIR/softhsm2.conf" ]; then
		cat >"$DATA_DIR/softhsm2.conf" <<CONF
directories.tokendir = $DATA_DIR/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
		chmod 0600 "$DATA_DIR/softhsm2.conf"
	fi
	if [ ! -s "$DATA_DIR/pin" ]; then
		od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$DATA_DIR/pin"
		chmod 0600 "$DATA_DIR/pin"
	fi
	export SOFTHSM2_CONF="$DATA_DIR/softhsm2.conf"
	for label in atr-root atr-issuing; do
		if ! softhsm2-util --show-slots 2>/dev/null | grep -Eq "Label:[[:space:]]+$label[[:space:]]*$"; then
			so=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
			# Development only: softhsm2-util takes PINs as arguments.
			softhsm2-util --init-token --free --label "$label" --so-pin "$so" --pin "$(cat "$DATA_DIR/pin")" >/dev/null
			say "created token $label"
		fi
	done
fi
export SOFTHSM2_CONF="$DATA_DIR/softhsm2.conf"
export ATR_PKCS11_PIN_FILE="$DATA_DIR/pin"
export ATR_PKCS11_ROOT_PIN_FILE="$DATA_DIR/pin"

# 4. Ceremonies (no-ops when the keys exist).
"$atr" ceremony root --if-missing --operator "${USER:-dev}"
"$atr" ceremony intermediate --if-missing --operator "${USER:-dev}"
"$atr" ceremony log-key --if-missing --operator "${USER:-dev}"
"$atr" ceremony log-key-ed25519 --if-missing --operator "${USER:-dev}"
"$atr" ceremony vrf-key --if-missing --operator "${USER:-dev}" --algorithm "${ATR_VRF_ALGORITHM:-rsa-3072}"
"$atr" ceremony jwt-key --if-missing --operator "${USER:-dev}"
"$atr" ceremony card-key --if-missing --operator "${USER:-dev}"
"$atr" ceremony root-crl --if-missing --operator "${USER:-dev}"

# 5. Admin API key, shown nowhere but the 0600 file.
if [ ! -s "$DATA_DIR/admin.apikey" ]; then
	rm -f "$DATA_DIR/admin.apikey"
	"$atr" apikey create --owner admin --namespace admin --scopes admin --expires-in 8760h --out "$DATA_DIR/admin.apikey"
fi

say "serving on https://$ATR_LISTEN (CA bundle: $DATA_DIR/ca/bundle.pem, admin key: $DATA_DIR/admin.apikey)"
exec "$atr" serve
