#!/usr/bin/env bash
# scripts/ceremony/show.sh — list the objects on the online token and the root
# token with their attributes (read-only), then the CA files in the data dir.
#   scripts/ceremony/show.sh            # both tokens
#   scripts/ceremony/show.sh --root     # only the root token
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
atr=$(find_atr)
if [ "${1:-}" = "--root" ]; then
	exec "$atr" ceremony show --root
fi
"$atr" ceremony show "$@"
"$atr" ceremony show --root "$@"
for f in "$ATR_DATA_DIR"/ca/*.pem; do
	[ -e "$f" ] || continue
	echo "== $f (sha256 $(sha256sum "$f" | cut -d' ' -f1))"
	if grep -q CERTIFICATE "$f"; then
		openssl crl2pkcs7 -nocrl -certfile "$f" | openssl pkcs7 -print_certs -noout
	fi
done
