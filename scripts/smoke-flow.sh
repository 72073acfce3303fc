#!/usr/bin/env bash
# scripts/smoke-flow.sh — the agent lifecycle end to end against a running
# server, with curl, jq and openssl only (no ATR code on the client side):
#
#   scripts/smoke-flow.sh DATA_DIR LISTEN
#
# An owner key is made with the admin key; an agent key and CSR are made by
# `openssl req`; the agent is registered, its certificate checked by
# `openssl verify` and POST /v1/verify, OCSP answers good (`openssl ocsp`),
# it is rotated, revoked, then refused by verify; OCSP answers revoked; the
# CRL passes `openssl crl -verify` and lists the serial with its reason; the
# transparency log's checkpoint carries every event; /metrics has the
# operator's families.
set -euo pipefail

data=${1:?usage: smoke-flow.sh DATA_DIR LISTEN}
listen=${2:?usage: smoke-flow.sh DATA_DIR LISTEN}
base="https://$listen"
tmp=$(mktemp -d /tmp/atr-flow.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "smoke-flow: FAIL: $*" >&2; exit 1; }
say() { echo "smoke-flow: $*" >&2; }

# api METHOD PATH KEYFILE [JSON]: prints the body, fails on a non-2xx status.
api() {
	local method=$1 path=$2 key=$3 body=${4:-}
	local args=(-sS --cacert "$data/ca/bundle.pem" -X "$method" -o "$tmp/body" -w '%{http_code}')
	[ -n "$key" ] && args+=(-H "Authorization: Bearer $(cat "$key")")
	[ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
	local code
	code=$(curl "${args[@]}" "$base$path") || fail "$method $path: curl failed"
	[ "${code:0:1}" = 2 ] || fail "$method $path: HTTP $code: $(cat "$tmp/body")"
	cat "$tmp/body"
}

# 1. An owner key for namespace acme, created by the admin.
owner=$(api POST /v1/admin/apikeys "$data/admin.apikey" \
	'{"owner":"acme-team","namespace":"acme","scopes":["agents:read","agents:write"],"expires_in":"24h"}')
jq -r .key <<<"$owner" >"$tmp/owner.key"
grep -q '^atr_' "$tmp/owner.key" || fail "no API key in $owner"

# 2. The agent's key and CSR, made by openssl; the key never leaves $tmp.
name="billing-bot-$RANDOM.acme"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/agent.key" 2>/dev/null
openssl req -new -key "$tmp/agent.key" -subj "/CN=$name" -out "$tmp/agent.csr" 2>/dev/null
reg=$(api POST /v1/agents "$tmp/owner.key" \
	"$(jq -n --arg n "$name" --rawfile c "$tmp/agent.csr" '{name:$n,csr:$c,capabilities:["invoice"],metadata:{team:"billing"}}')")
jq -r .certificate <<<"$reg" >"$tmp/leaf.pem"
jq -r .chain <<<"$reg" >"$tmp/chain.pem"
serial=$(jq -r .serial <<<"$reg")
[ "$(jq -r .log_index <<<"$reg")" != null ] || fail "registration has no log_index"
say "registered $name (serial $serial, log index $(jq -r .log_index <<<"$reg"))"

# 3. openssl and the verify API accept it.
openssl verify -CAfile "$data/ca/root.pem" -untrusted "$data/ca/intermediate.pem" -purpose sslclient "$tmp/leaf.pem" >/dev/null ||
	fail "openssl verify of the agent certificate"
openssl x509 -in "$tmp/leaf.pem" -noout -ext subjectAltName | grep -q "URI:spiffe://.*/agent/$name" || fail "no SPIFFE URI SAN"
v=$(api POST /v1/verify "" "$(jq -n --rawfile c "$tmp/leaf.pem" '{certificate:$c}')")
[ "$(jq -r .verified <<<"$v")" = true ] || fail "verify refused a fresh certificate: $v"

ocsp_status() { # ocsp_status CERT: prints good / revoked / unknown
	openssl ocsp -issuer "$data/ca/intermediate.pem" -cert "$1" -no_nonce -reqout "$tmp/ocsp.req" >/dev/null 2>&1 ||
		fail "openssl ocsp -reqout"
	curl -sS --cacert "$data/ca/bundle.pem" -H 'Content-Type: application/ocsp-request' \
		--data-binary @"$tmp/ocsp.req" -o "$tmp/ocsp.resp" "$base/v1/ocsp" || fail "POST /v1/ocsp"
	openssl ocsp -issuer "$data/ca/intermediate.pem" -cert "$1" -respin "$tmp/ocsp.resp" \
		-CAfile "$data/ca/bundle.pem" -no_nonce 2>&1 | awk -F': ' '/: (good|revoked|unknown)/{print $2; exit}'
}
[ "$(ocsp_status "$tmp/leaf.pem")" = good ] || fail "OCSP did not answer good"
say "openssl verify, POST /v1/verify and openssl ocsp (good) accept it"

# 4. Rotate with a new key; the old certificate is superseded.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/agent2.key" 2>/dev/null
openssl req -new -key "$tmp/agent2.key" -subj "/CN=$name" -out "$tmp/agent2.csr" 2>/dev/null
rot=$(api POST "/v1/agents/$name/rotate" "$tmp/owner.key" "$(jq -n --rawfile c "$tmp/agent2.csr" '{csr:$c}')")
jq -r .certificate <<<"$rot" >"$tmp/leaf2.pem"
serial2=$(jq -r .serial <<<"$rot")
[ "$serial2" != "$serial" ] || fail "rotation kept the serial"
say "rotated (new serial $serial2)"

# 5. Revoke; verify and OCSP refuse; the CRL lists it with its reason.
api POST "/v1/agents/$name/revoke" "$tmp/owner.key" '{"reason":"keyCompromise"}' >/dev/null
v=$(api POST /v1/verify "" "$(jq -n --rawfile c "$tmp/leaf2.pem" '{certificate:$c}')")
[ "$(jq -r .verified <<<"$v")" = false ] && [ "$(jq -r .reason <<<"$v")" = revoked ] ||
	fail "verify accepted a revoked certificate: $v"
[ "$(ocsp_status "$tmp/leaf2.pem")" = revoked ] || fail "OCSP did not answer revoked"
curl -sS --cacert "$data/ca/bundle.pem" -o "$tmp/crl.der" "$base/v1/crl" || fail "GET /v1/crl"
crl=$(openssl crl -inform DER -in "$tmp/crl.der" -CAfile "$data/ca/bundle.pem" -verify -noout -text 2>&1) ||
	fail "openssl crl -verify: $crl"
grep -q "verify OK" <<<"$crl" || fail "CRL signature not verified: $crl"
# openssl prints serials as whole bytes (a leading 0 nibble kept): take the
# certificate's own serial in openssl's spelling.
crlserial=$(openssl x509 -in "$tmp/leaf2.pem" -noout -serial | cut -d= -f2)
grep -qi "Serial Number: $crlserial" <<<"$crl" || fail "CRL does not list $serial2 ($crlserial)"
grep -q "Key Compromise" <<<"$crl" || fail "CRL does not carry the reason"
say "revoked: verify refuses, OCSP says revoked, CRL lists it (keyCompromise)"

# 6. Owner isolation: another namespace's key cannot see or touch the agent.
other=$(api POST /v1/admin/apikeys "$data/admin.apikey" \
	'{"owner":"mallory","namespace":"evil","scopes":["agents:read","agents:write"],"expires_in":"1h"}')
jq -r .key <<<"$other" >"$tmp/other.key"
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$data/ca/bundle.pem" \
	-H "Authorization: Bearer $(cat "$tmp/other.key")" "$base/v1/agents/$name")
[ "$code" = 404 ] || fail "another owner got HTTP $code for $name"

# 7. The log: a signed checkpoint covering every event above.
cp=$(curl -sS --cacert "$data/ca/bundle.pem" "$base/v1/log/checkpoint") || fail "GET /v1/log/checkpoint"
size=$(sed -n 2p <<<"$cp")
[ "$size" -ge 5 ] || fail "checkpoint size $size is too small: $cp"
grep -q '^— ' <<<"$cp" || fail "checkpoint carries no signature line: $cp"
say "log checkpoint at size $size"

# 8. Metrics: the families an operator alerts on.
metrics=$(curl -sS --cacert "$data/ca/bundle.pem" "$base/metrics") || fail "GET /metrics"
for family in atr_http_requests_total atr_http_request_duration_seconds atr_issuance_total atr_revocations_total \
	atr_verify_total atr_hsm_operation_duration_seconds atr_db_open_connections \
	atr_verify_status_lookups_total atr_ocsp_status_lookups_total atr_verify_receipts_total; do
	grep -q "^$family" <<<"$metrics" || fail "/metrics lacks $family"
done
grep -q '^atr_token_healthy 1$' <<<"$metrics" || fail "/metrics does not report a healthy token"
say "metrics ok"
say "OK"
