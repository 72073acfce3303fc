#!/usr/bin/env bash
# scripts/ceremony/root.sh — generate the root key on the root token and self-sign it.
# Extra arguments go to 'atr ceremony root' (see its --help), e.g.
#   scripts/ceremony/root.sh --operator alice
# With a real HSM set ATR_PKCS11_MODULE, ATR_PKCS11_TOKEN, ATR_PKCS11_ROOT_TOKEN
# and the PIN files; with SoftHSM2 the data dir's softhsm2.conf is used.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
atr=$(find_atr)
confirm "root"
exec "$atr" ceremony root --operator "${ATR_OPERATOR:-${USER:-unknown}}" "$@"
