#!/usr/bin/env bash
# scripts/ceremony/root-crl.sh — sign, with the root key on the root token, the root's CRL
# of revoked intermediates and publish it in the registry's database (served at
# /v1/crl/<root key id>). Run it once after the root ceremony, then weekly (before its
# nextUpdate), and with --revoke to revoke an intermediate. Extra arguments go to
# 'atr ceremony root-crl' (see its --help), e.g.
#   scripts/ceremony/root-crl.sh --operator alice
#   scripts/ceremony/root-crl.sh --revoke atr-issuing-1 --reason keyCompromise
# With a real HSM set ATR_PKCS11_MODULE, ATR_PKCS11_TOKEN, ATR_PKCS11_ROOT_TOKEN, the PIN
# files and ATR_DATABASE_URL; with SoftHSM2 the data dir's softhsm2.conf is used.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
atr=$(find_atr)
confirm "root-crl"
exec "$atr" ceremony root-crl --operator "${ATR_OPERATOR:-${USER:-unknown}}" "$@"
