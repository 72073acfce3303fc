#!/usr/bin/env bash
# scripts/smoke-dev-up.sh — end-to-end check of scripts/dev-up.sh in a fresh
# temporary data dir on a free port: waits for /healthz, then checks that
# openssl verifies the intermediate and the served TLS chain against the dev
# root, that TLS 1.1 is refused, that /v1/ca/bundle is served, that every CA
# private key on both tokens is sensitive, never extractable and sign-only,
# that a second dev-up run reuses the keys (idempotent), and that the server
# stops cleanly on SIGTERM.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

tmp=$(mktemp -d /tmp/atr-smoke.XXXXXX)
pid=""
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
	echo "smoke: FAIL: $*" >&2
	echo "---- server log (last 40 lines)" >&2
	tail -n 40 "$tmp/serve.log" >&2 || true
	exit 1
}

# free_port picks a port nothing listens on, below the kernel's ephemeral
# range: a port inside it can be taken meanwhile as the local port of any
# outgoing connection, and dev-up.sh binds it only after building and the
# ceremonies (a CI run failed so: "bind: address already in use").
free_port() {
	local p lo
	lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	[ "${lo:-0}" -gt 11000 ] || lo=32768
	for _ in $(seq 1 50); do
		p=$((10000 + RANDOM % (lo - 10000)))
		if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	return 1
}

port=$(free_port)
export ATR_DATA_DIR="$tmp/var"
export ATR_LISTEN="127.0.0.1:$port"
data="$ATR_DATA_DIR"

start() {
	scripts/dev-up.sh >>"$tmp/serve.log" 2>&1 &
	pid=$!
	for _ in $(seq 1 240); do
		kill -0 "$pid" 2>/dev/null || fail "dev-up.sh exited early"
		if [ -x "$data/bin/atr" ] && [ -f "$data/ca/bundle.pem" ] &&
			"$data/bin/atr" healthcheck --data-dir "$data" --listen "$ATR_LISTEN" --timeout 2s >/dev/null 2>&1; then
			return
		fi
		sleep 0.5
	done
	fail "no healthy /healthz within 120s"
}
stop() {
	kill -TERM "$pid"
	local rc=0
	wait "$pid" || rc=$?
	pid=""
	[ "$rc" -eq 0 ] || fail "atr serve exited with status $rc after SIGTERM"
}

echo "smoke: dev-up.sh on $ATR_LISTEN, data dir $data" >&2
start
echo "smoke: healthy" >&2

# Layout and modes.
for f in softhsm2.conf pin admin.apikey ca/root.pem ca/intermediate.pem ca/bundle.pem atr.db; do
	[ -e "$data/$f" ] || fail "missing $data/$f"
done
[ "$(stat -c %a "$data/tokens")" = 700 ] || fail "tokens/ is not 0700"
for f in pin admin.apikey; do
	[ "$(stat -c %a "$data/$f")" = 600 ] || fail "$f is not 0600"
done
ls "$data"/ceremonies/*-root.json "$data"/ceremonies/*-intermediate.json >/dev/null || fail "ceremony transcripts missing"
# SEC-004/SEC-015: no private key anywhere in the data dir — CA keys live only
# inside the tokens (SoftHSM2's own encrypted object files).
# (grep exits 0: a match, 1: none, 2: an error — which must fail too, not pass.)
set +e
keyfiles=$(grep -rlE --exclude-dir=tokens --exclude-dir=bin -- '-----BEGIN ([A-Z]+ )?PRIVATE KEY-----' "$data")
rc=$?
set -e
case $rc in
0) fail "private key material on disk: $keyfiles" ;;
1) ;;
*) fail "searching $data for private keys failed (grep exit $rc)" ;;
esac

# The chain.
openssl verify -CAfile "$data/ca/root.pem" "$data/ca/intermediate.pem" >/dev/null || fail "openssl verify of the intermediate"
out=$(openssl s_client -connect "$ATR_LISTEN" -servername localhost -CAfile "$data/ca/root.pem" \
	-verify_return_error -verify_hostname localhost -showcerts </dev/null 2>&1) || fail "openssl s_client: $out"
grep -q "Verify return code: 0 (ok)" <<<"$out" || fail "served TLS chain does not verify: $out"
awk '/-----BEGIN CERTIFICATE-----/{n++} n==1{print} /-----END CERTIFICATE-----/{if(n==1)n=99}' <<<"$out" >"$tmp/server.pem"
openssl verify -CAfile "$data/ca/root.pem" -untrusted "$data/ca/intermediate.pem" "$tmp/server.pem" >/dev/null ||
	fail "openssl verify of the server certificate"
for v in tls1_2 tls1_3; do
	openssl s_client -connect "$ATR_LISTEN" -servername localhost -CAfile "$data/ca/root.pem" -verify_return_error \
		-"$v" </dev/null >/dev/null 2>&1 || fail "openssl s_client -$v was refused"
done
if openssl s_client -connect "$ATR_LISTEN" -tls1_1 </dev/null >/dev/null 2>&1; then
	fail "TLS 1.1 was accepted"
fi
resp=$(printf 'GET /v1/ca/bundle HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
	openssl s_client -connect "$ATR_LISTEN" -servername localhost -CAfile "$data/ca/root.pem" -quiet 2>/dev/null) ||
	fail "GET /v1/ca/bundle"
grep -q "^HTTP/1.1 200" <<<"$resp" || fail "GET /v1/ca/bundle: $resp"
grep -q "BEGIN CERTIFICATE" <<<"$resp" || fail "GET /v1/ca/bundle has no certificate"
echo "smoke: TLS chain, TLS 1.2 and 1.3, TLS 1.1 refusal and /v1/ca/bundle ok" >&2

# The agent lifecycle with openssl, curl and jq (issues 3 and 4).
scripts/smoke-flow.sh "$data" "$ATR_LISTEN" || fail "agent lifecycle (scripts/smoke-flow.sh)"

# The keys on both tokens.
export SOFTHSM2_CONF="$data/softhsm2.conf"
for token in atr-root atr-issuing; do
	objs=$(pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label "$token" --login \
		--pin "$(cat "$data/pin")" --list-objects --type privkey 2>/dev/null) || fail "pkcs11-tool on $token"
	n=$(grep -c "^Private Key Object" <<<"$objs" || true)
	[ "$n" -ge 1 ] || fail "no private key on $token"
	[ "$(grep -c 'Access:.*sensitive, always sensitive, never extractable' <<<"$objs")" -eq "$n" ] ||
		fail "a private key on $token is not sensitive/never extractable: $objs"
	[ "$(grep -cE 'Usage:[[:space:]]+sign$' <<<"$objs")" -eq "$n" ] || fail "a private key on $token is not sign-only: $objs"
done
echo "smoke: CA private keys sensitive, never extractable, sign-only" >&2

# Idempotent: a second run reuses tokens, keys and files.
before=$(sha256sum "$data/ca/root.pem" "$data/ca/intermediate.pem" "$data/admin.apikey")
stop
start
after=$(sha256sum "$data/ca/root.pem" "$data/ca/intermediate.pem" "$data/admin.apikey")
[ "$before" = "$after" ] || fail "second dev-up run changed the CA files or the admin key"
stop
echo "smoke: second run idempotent; SIGTERM shutdown clean" >&2
echo "smoke: OK" >&2
