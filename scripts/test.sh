#!/usr/bin/env bash
# scripts/test.sh — the whole test suite (the README's second command; .ci/run
# calls it). Installs SoftHSM2/OpenSC/OpenSSL if missing, starts PostgreSQL
# and Redis if they are down, then runs: gofmt check, go vet, go mod verify,
# go test -race ./..., the dev-up smoke test, and every fuzz target for 10s.
#
#   scripts/test.sh           everything
#   scripts/test.sh --quick   everything but the fuzz targets
#
# CI=true (the default here) makes a missing SoftHSM2 or PostgreSQL a test
# failure instead of a skip. ATR_TEST_PKGS (default ./...) narrows go vet and
# go test; ATR_FUZZ_TIME (default 10s) sets each fuzz target's run time.
set -euo pipefail

quick=0
for arg in "$@"; do
	case "$arg" in
	--quick) quick=1 ;;
	-h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "test.sh: unknown argument $arg" >&2; exit 2 ;;
	esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CI="${CI:-true}"
pkgs="${ATR_TEST_PKGS:-./...}"
fuzztime="${ATR_FUZZ_TIME:-10s}"

# step prints a heading with the seconds since the script started, so that a
# CI log shows where its time went (.ci/run's budget is 20 minutes).
step() { printf '\n== [%ds] %s\n' "$SECONDS" "$*" >&2; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

step "system packages"
missing=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null || missing+=(softhsm2)
command -v pkcs11-tool >/dev/null || missing+=(opensc)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
command -v psql >/dev/null || ls /etc/postgresql >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing ${missing[*]}" >&2
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# pyca/cryptography's X.509 verifier (the Python relying party; Debian 13's
# python3-cryptography unpacked into a cache, the system is not changed).
scripts/install-pyca.sh
scripts/install-litewitness.sh # torchwood's litewitness, the third-party witness (Go, built into a cache)
scripts/install-a2a-sdk.sh     # @a2a-js/sdk (pinned, npm into a cache): the A2A relying party of signed agent cards

step "PostgreSQL and Redis"
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
	echo "starting PostgreSQL" >&2
	$sudo pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
	echo "starting Redis" >&2
	redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no >/dev/null
fi
for i in $(seq 1 30); do
	(exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break
	sleep 1
done

step "repository hygiene"
# No build output, database or large blob may be committed: the repository
# holds source, docs and tiny fixtures only.
if git rev-parse --git-dir >/dev/null 2>&1; then
	big=$(git ls-files -z | xargs -0 -r stat -c '%s %n' 2>/dev/null | awk '$1 > 1048576 {print}')
	if [ -n "$big" ]; then
		echo "tracked files over 1 MiB:" >&2
		echo "$big" >&2
		exit 1
	fi
fi

step "gofmt"
unformatted=$(find . -name '*.go' -not -path './var/*' -not -path './.git/*' -print0 | xargs -0 gofmt -l)
if [ -n "$unformatted" ]; then
	echo "gofmt needed:" >&2
	echo "$unformatted" >&2
	exit 1
fi

step "go vet"
go vet $pkgs

step "go mod verify"
go mod verify

step "go test -race $pkgs"
go test -race -count=1 $pkgs

step "smoke test: scripts/dev-up.sh"
scripts/smoke-dev-up.sh

if [ "$quick" -eq 1 ]; then
	step "fuzz targets skipped (--quick)"
	exit 0
fi

# fuzz_one DIR NAME runs one target. Go 1.26's fuzz coordinator can report a
# bare "context deadline exceeded" when -fuzztime expires while a worker is
# mid-input (golang/go#75804, fixed in Go 1.27): such a run, with no failing
# input written, is run again, at most twice (one CI run on this machine hit
# the race in three targets, one of them twice in a row). A real finding
# always writes a failing input and fails at once.
fuzz_one() {
	local dir=$1 name=$2 out
	out=$(mktemp)
	for attempt in 1 2 3; do
		if go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "$dir" 2>&1 | tee "$out"; then
			rm -f "$out"
			return 0
		fi
		if grep -q "Failing input written" "$out" || ! grep -q "context deadline exceeded" "$out" || [ "$attempt" -eq 3 ]; then
			rm -f "$out"
			return 1
		fi
		echo "-- [${SECONDS}s] $dir $name: fuzz-coordinator deadline race (golang/go#75804), no failing input: running it again ($((attempt + 1)) of 3)" >&2
	done
}

step "fuzz targets ($fuzztime each)"
grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(' . | grep -v '^./var/' | sort | while read -r file; do
	dir=$(dirname "$file")
	for name in $(grep -oE '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
		echo "-- [${SECONDS}s] $dir $name" >&2
		fuzz_one "$dir" "$name"
	done
done
step "all tests passed"
