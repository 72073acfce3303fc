#!/usr/bin/env bash
# scripts/ceremony/rotate-intermediate.sh — generate a NEW issuing key and certify it with the root (the old one stays for verification).
# Extra arguments go to 'atr ceremony rotate-intermediate' (see its --help), e.g.
#   scripts/ceremony/rotate-intermediate.sh --operator alice
# With a real HSM set ATR_PKCS11_MODULE, ATR_PKCS11_TOKEN, ATR_PKCS11_ROOT_TOKEN
# and the PIN files; with SoftHSM2 the data dir's softhsm2.conf is used.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
atr=$(find_atr)
confirm "rotate-intermediate"
exec "$atr" ceremony rotate-intermediate --operator "${ATR_OPERATOR:-${USER:-unknown}}" "$@"
