# scripts/ceremony/lib.sh — shared by the ceremony scripts (sourced, not run).
#
# Finds the atr binary ($ATR_BIN, else $ATR_DATA_DIR/bin/atr, else atr on
# PATH, else builds it into a temporary directory), prints the ceremony
# parameters, and asks for confirmation when run on a terminal (skip with
# ATR_CEREMONY_YES=1). PINs come from ATR_PKCS11_PIN_FILE /
# ATR_PKCS11_ROOT_PIN_FILE (or the ATR_PKCS11_PIN / ATR_PKCS11_ROOT_PIN
# environment variables), never from arguments.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export ATR_DATA_DIR="${ATR_DATA_DIR:-$repo/var}"
if [ -z "${SOFTHSM2_CONF:-}" ] && [ -f "$ATR_DATA_DIR/softhsm2.conf" ]; then
	export SOFTHSM2_CONF="$ATR_DATA_DIR/softhsm2.conf"
fi

find_atr() {
	if [ -n "${ATR_BIN:-}" ]; then
		echo "$ATR_BIN"
	elif [ -x "$ATR_DATA_DIR/bin/atr" ]; then
		echo "$ATR_DATA_DIR/bin/atr"
	elif command -v atr >/dev/null; then
		command -v atr
	else
		local d
		d=$(mktemp -d)
		(cd "$repo" && go build -o "$d/atr" ./cmd/atr)
		echo "$d/atr"
	fi
}

confirm() {
	local what=$1
	cat >&2 <<INFO
ATR key ceremony: $what
  PKCS#11 module : ${ATR_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
  online token   : ${ATR_PKCS11_TOKEN:-atr-issuing}
  root token     : ${ATR_PKCS11_ROOT_TOKEN:-atr-root}
  data dir       : $ATR_DATA_DIR (transcript in ceremonies/)
  operator       : ${ATR_OPERATOR:-${USER:-unknown}}
INFO
	if [ -t 0 ] && [ "${ATR_CEREMONY_YES:-}" != 1 ]; then
		read -r -p "Proceed? [y/N] " answer
		case "$answer" in y | Y | yes) ;; *) echo "aborted" >&2; exit 1 ;; esac
	fi
}
