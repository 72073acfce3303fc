#!/usr/bin/env bash
# scripts/ceremony/intermediate.sh — generate the issuing key on the online token and certify it with the root.
# Extra arguments go to 'atr ceremony intermediate' (see its --help), e.g.
#   scripts/ceremony/intermediate.sh --operator alice
# Add --uri-name-constraint only if no Python (pyca/cryptography) relying party
# must verify the chain (docs/operator.md, "The URI name constraint").
# With a real HSM set ATR_PKCS11_MODULE, ATR_PKCS11_TOKEN, ATR_PKCS11_ROOT_TOKEN
# and the PIN files; with SoftHSM2 the data dir's softhsm2.conf is used.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
atr=$(find_atr)
confirm "intermediate"
exec "$atr" ceremony intermediate --operator "${ATR_OPERATOR:-${USER:-unknown}}" "$@"
