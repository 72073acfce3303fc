#!/bin/sh
# EST (RFC 7030) against a running `atr serve` with openssl, curl and base64
# only — the messages exactly as the RFC describes them, no ATR code:
#
#   est-openssl-curl.sh SERVER CA_DIR API_KEY_FILE AGENT_NAME WORK_DIR
#
# 1. GET cacerts: base64 certs-only PKCS#7, read by `openssl pkcs7 -print_certs`.
# 2. GET csrattrs: base64 DER CsrAttrs, read by `openssl asn1parse`.
# 3. POST simpleenroll: `openssl req -outform DER | base64` with the owner's
#    API key as the HTTP Basic password (RFC 7030 §3.2.3); the answer is read
#    by `openssl pkcs7 -print_certs` and verified by `openssl verify` against
#    the root, the cacerts answer supplying the issuing CA.
# 4. POST simplereenroll over mTLS with the current certificate (curl --cert
#    with the certificate and the issuing CA, --key); the same checks.
# 5. The superseded certificate is refused (401), and an existing agent is a
#    409 for simpleenroll.
# Leaves in WORK_DIR: cacerts.pem, csrattrs.txt, agent.key, agent.pem,
# agent2.key, agent2.pem, and the raw answers (*.b64).
set -eu

server=${1:?usage: est-openssl-curl.sh SERVER CA_DIR API_KEY_FILE AGENT_NAME WORK_DIR}
ca=${2:?} keyfile=${3:?} name=${4:?} work=${5:?}
est="$server/.well-known/est"
bundle="$ca/bundle.pem" root="$ca/root.pem" # the TLS server trust, and the trust anchor
cd "$work"
fail() { echo "est: FAIL: $*" >&2; exit 1; }

# 1. cacerts (public).
curl -sS --fail-with-body --cacert "$bundle" -o cacerts.b64 "$est/cacerts"
base64 -d cacerts.b64 | openssl pkcs7 -inform DER -print_certs -out cacerts.pem

# 2. csrattrs (public).
curl -sS --fail-with-body --cacert "$bundle" -o csrattrs.b64 "$est/csrattrs"
base64 -d csrattrs.b64 | openssl asn1parse -inform DER >csrattrs.txt

# 3. simpleenroll: the owner's API key as the Basic password, empty user name.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out agent.key
openssl req -new -key agent.key -subj "/CN=$name" -outform DER | base64 >req.b64
curl -sS --fail-with-body --cacert "$bundle" -u ":$(cat "$keyfile")" \
	-H 'Content-Type: application/pkcs10' -H 'Content-Transfer-Encoding: base64' \
	--data-binary @req.b64 -o cert.b64 "$est/simpleenroll"
base64 -d cert.b64 | openssl pkcs7 -inform DER -print_certs -out agent.pem
openssl verify -CAfile "$root" -untrusted cacerts.pem agent.pem

# 4. simplereenroll over mTLS with the current certificate and a new key.
cat agent.pem cacerts.pem >agent-chain.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out agent2.key
openssl req -new -key agent2.key -subj "/CN=$name" -outform DER | base64 >req2.b64
curl -sS --fail-with-body --cacert "$bundle" --cert agent-chain.pem --key agent.key \
	-H 'Content-Type: application/pkcs10' -H 'Content-Transfer-Encoding: base64' \
	--data-binary @req2.b64 -o cert2.b64 "$est/simplereenroll"
base64 -d cert2.b64 | openssl pkcs7 -inform DER -print_certs -out agent2.pem
openssl verify -CAfile "$root" -untrusted cacerts.pem agent2.pem

# 5. The superseded certificate cannot renew again; the agent cannot be enrolled twice.
openssl req -new -key agent2.key -subj "/CN=$name" -outform DER | base64 >req3.b64
code=$(curl -sS -o refused.txt -w '%{http_code}' --cacert "$bundle" --cert agent-chain.pem --key agent.key \
	-H 'Content-Type: application/pkcs10' --data-binary @req3.b64 "$est/simplereenroll")
[ "$code" = 401 ] || fail "reenroll with the superseded certificate: HTTP $code: $(cat refused.txt)"
code=$(curl -sS -o conflict.txt -w '%{http_code}' --cacert "$bundle" -u ":$(cat "$keyfile")" \
	-H 'Content-Type: application/pkcs10' --data-binary @req3.b64 "$est/simpleenroll")
[ "$code" = 409 ] || fail "second simpleenroll: HTTP $code: $(cat conflict.txt)"
echo "est: ok"
