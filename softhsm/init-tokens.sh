#!/usr/bin/env bash
# init-tokens.sh DATA_DIR PIN_FILE
#
# Creates the SoftHSM2 set-up ATR's development environment and CI use:
#   DATA_DIR/softhsm2.conf   rendered from softhsm/softhsm2.conf.tmpl (0600)
#   DATA_DIR/tokens/         the token store (0700)
#   tokens "atr-root" and "atr-issuing", each created only if missing
# Idempotent: running it again changes nothing that exists.
#
# The user PIN of both tokens is read from PIN_FILE; when PIN_FILE does not
# exist a random PIN is created there with mode 0600 (development only: in
# production the PIN comes from a secret store). Each token's SO PIN is
# random and is NOT stored anywhere: development tokens are re-created, never
# administered. softhsm2-util takes PINs only as arguments, so they are
# briefly visible in the local process list while a token is created; ATR
# itself never takes a PIN on its command line.
#
# Afterwards: export SOFTHSM2_CONF=DATA_DIR/softhsm2.conf
set -euo pipefail
umask 077

if [[ $# -ne 2 ]]; then
	echo "usage: $0 DATA_DIR PIN_FILE" >&2
	exit 2
fi
data_dir=$1
pin_file=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

command -v softhsm2-util >/dev/null || {
	echo "init-tokens.sh: softhsm2-util not found (apt-get install softhsm2)" >&2
	exit 1
}

mkdir -p "$data_dir"
data_dir=$(cd "$data_dir" && pwd)
mkdir -p "$data_dir/tokens"
chmod 0700 "$data_dir/tokens"

conf="$data_dir/softhsm2.conf"
tmp=$(mktemp "$data_dir/.softhsm2.conf.XXXXXX")
sed "s|@TOKEN_DIR@|$data_dir/tokens|" "$here/softhsm2.conf.tmpl" >"$tmp"
chmod 0600 "$tmp"
mv "$tmp" "$conf"
export SOFTHSM2_CONF="$conf"

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

if [[ ! -e "$pin_file" ]]; then
	mkdir -p "$(dirname "$pin_file")"
	(umask 077 && random_hex 16 >"$pin_file")
	echo "init-tokens.sh: created PIN file $pin_file (0600)"
fi
if [[ -n "$(find "$pin_file" -perm /077 2>/dev/null)" ]]; then
	echo "init-tokens.sh: $pin_file was readable by others; setting mode 0600" >&2
	chmod 0600 "$pin_file"
fi
pin=$(head -n1 "$pin_file" | tr -d '\r\n')
if [[ -z "$pin" ]]; then
	echo "init-tokens.sh: $pin_file is empty" >&2
	exit 1
fi

have_token() {
	softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]*Label:[[:space:]]+$1[[:space:]]*$"
}

for label in atr-root atr-issuing; do
	if have_token "$label"; then
		echo "init-tokens.sh: token $label exists"
		continue
	fi
	so_pin=$(random_hex 16)
	softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" --pin "$pin" >/dev/null
	unset so_pin
	echo "init-tokens.sh: created token $label"
done
