#!/usr/bin/env bash
# scripts/ceremony/vrf-key.sh — generate the name-index VRF key (RSA-3072,
# label atr-vrf) on the online token and write DATA_DIR/ca/vrf-key.pem.
# Extra arguments go to 'atr ceremony vrf-key' (see its --help), e.g.
#   scripts/ceremony/vrf-key.sh --operator alice
#   scripts/ceremony/vrf-key.sh --if-missing     # idempotent (dev set-up)
# With a real HSM set ATR_PKCS11_MODULE, ATR_PKCS11_TOKEN and the PIN file;
# with SoftHSM2 the data dir's softhsm2.conf is used.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
atr=$(find_atr)
confirm "vrf-key"
exec "$atr" ceremony vrf-key --operator "${ATR_OPERATOR:-${USER:-unknown}}" "$@"
