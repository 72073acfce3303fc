#!/usr/bin/env bash
# compare.sh [RESULTS.jsonl] — ATR side by side with smallstep step-ca, in one
# command: issue 14's comparison (rotations at c=16, 3 rounds, the order
# rotated each round; docs/performance.md, "Side by side with step-ca").
#
# It measures the repository's HEAD (a clone; uncommitted changes are not
# measured), builds step-ca v0.30.2 once into a cache (install-stepca.sh,
# ~4 min) and the load client, starts ATR on SQLite and on PostgreSQL
# (scripts/dev-up.sh, a fresh database atr_peer) and step-ca on badger with
# its intermediate key on its own SoftHSM2 token, runs run-all.sh, prints
# `peerbench report`, then stops every server and drops the database, also
# when interrupted. About 8 minutes on 2 cores after the first build.
#
#   scripts/peerbench/compare.sh                     # SQLite and PostgreSQL against step-ca
#   DBS=sqlite scripts/peerbench/compare.sh          # without PostgreSQL
#   ROUNDS=5 CS="1 16" scripts/peerbench/compare.sh /tmp/side.jsonl
#
# Environment (cmd/atr-peerbench/README.md has the scripts it runs):
#   DBS            sqlite and/or postgres (default "sqlite postgres")
#   SYSTEMS        run-all.sh's labels (default: the ATR-*-rotate of DBS, step-badger)
#   ROUNDS, CS, DUR  as run-all.sh (defaults 3, "16", 20s)
#   ATR_PEER_PG    the PostgreSQL server on this machine (lib.sh reads its backends' CPU
#                  from their processes), a URL without its database
#                  (default postgres://postgres@127.0.0.1:5432; its user creates databases)
#   PERF           the working directory (default: a new /tmp/atr-peerbench.XXXXXX)
#   KEEP=1         keep the servers' data directories, the clone, step-ca's PKI, the
#                  owner keys and the logs as they are (the database is dropped all the same)
#
# RESULTS.jsonl (default $PERF/results.jsonl; not one that exists) gets one JSON line a run;
# $PERF/report.txt the report and $PERF/logs the servers' logs (gzipped
# unless KEEP=1): they stay.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
say() { echo "compare: $*" >&2; }
die() { say "$*"; exit 1; }

case "${1:-}" in
-h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
-*) die "unknown option $1 (--help)" ;;
esac
[ $# -le 1 ] || die "one argument at most: the results file (--help)"

read -r -a dbs <<<"${DBS:-sqlite postgres}"
systems=""
for db in "${dbs[@]}"; do
	case $db in
	sqlite) systems+="ATR-sqlite-rotate " ;;
	postgres) systems+="ATR-postgres-rotate " ;;
	*) die "DBS: $db is neither sqlite nor postgres" ;;
	esac
done
export SYSTEMS="${SYSTEMS:-${systems}step-badger}"
export ROUNDS="${ROUNDS:-3}" CS="${CS:-16}" DUR="${DUR:-20s}"
pgserver="${ATR_PEER_PG:-postgres://postgres@127.0.0.1:5432}"
pgserver="${pgserver%/}"
need_pg=0
[[ " $SYSTEMS " == *" ATR-postgres"* ]] && need_pg=1
for label in $SYSTEMS; do
	case $label in
	ATR-sqlite | ATR-sqlite-rotate | ATR-postgres | ATR-postgres-rotate | step-badger) ;;
	*) die "SYSTEMS: $label needs servers this script does not start (see cmd/atr-peerbench/README.md)" ;;
	esac
done

# Everything the comparison needs, before anything starts.
if [ -n "${PERF:-}" ] && [ -e "$PERF" ] && [ -n "$(ls -A "$PERF")" ]; then
	die "PERF=$PERF is not empty"
fi
if [ -n "${1:-}" ] && [ -s "$1" ]; then
	die "$1 exists: name a new file (its runs would enter the report)"
fi
command -v go >/dev/null || die "go not found"
command -v git >/dev/null || die "git not found"
git -C "$repo" rev-parse --verify -q HEAD >/dev/null || die "$repo is not a git checkout with a commit"
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no)" ] ||
	say "the working tree has uncommitted changes: they are not measured (the clone is of HEAD, $(git -C "$repo" rev-parse --short HEAD))"
for port in 38443 38444 39443; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		die "127.0.0.1:$port is in use (another comparison? PERF=… scripts/peerbench/stop-all.sh stops one)"
	fi
done
if [ $need_pg = 1 ]; then
	command -v psql >/dev/null || die "psql not found (PostgreSQL's client; DBS=sqlite runs without PostgreSQL)"
	psql "$pgserver/postgres" -qAtc 'SELECT 1' >/dev/null 2>&1 ||
		die "PostgreSQL at $pgserver does not answer (start it, set ATR_PEER_PG, or run with DBS=sqlite)"
	if [ -n "$(psql "$pgserver/postgres" -qAtc "SELECT 1 FROM pg_database WHERE datname = 'atr_peer'")" ]; then
		die "database atr_peer exists (another comparison's?); drop it when none runs: psql '$pgserver/postgres' -c 'DROP DATABASE atr_peer'"
	fi
fi
results=${1:-}
if [ -n "$results" ]; then
	mkdir -p "$(dirname "$results")"
	results=$(cd "$(dirname "$results")" && pwd)/$(basename "$results")
fi

if [ -n "${PERF:-}" ]; then
	mkdir -p "$PERF"
	PERF=$(cd "$PERF" && pwd)
else
	PERF=$(mktemp -d /tmp/atr-peerbench.XXXXXX)
fi
export PERF
results=${results:-$PERF/results.jsonl}
mkdir -p "$PERF/bin" "$PERF/logs"
say "working in $PERF"

created_db=0 runner=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
		pkill -TERM -P "$runner" 2>/dev/null || true # timeout, which passes it to the load client
		kill -TERM "$runner" 2>/dev/null || true
		wait "$runner" 2>/dev/null || true
	fi
	PERF=$PERF bash "$here/stop-all.sh" >&2 || true
	if [ $created_db = 1 ]; then
		psql "$pgserver/postgres" -qc 'DROP DATABASE IF EXISTS atr_peer' >/dev/null 2>&1 ||
			say "could not drop database atr_peer: drop it by hand"
	fi
	if [ "${KEEP:-0}" != 1 ]; then
		rm -rf "$PERF/atr" "$PERF/atr-sqlite" "$PERF/atr-postgres" "$PERF/stepca" "$PERF/bin" "$PERF"/*.keys
		gzip -qf "$PERF"/logs/*.log 2>/dev/null || true # a log line a request: ~150 MB a comparison
	fi
	case $rc in
	0) ;;
	130 | 143) say "interrupted; the servers are stopped, their logs in $PERF/logs" ;;
	*) say "failed (exit $rc); the servers' logs are in $PERF/logs" ;;
	esac
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$here/install-stepca.sh"
stepca_dir="${ATR_STEPCA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/atr/step-ca}"
ln -s "$stepca_dir/bin/step-ca" "$PERF/bin/step-ca"

say "cloning $(git -C "$repo" rev-parse --short HEAD) into $PERF/atr, building the load client"
git clone -q "$repo" "$PERF/atr"
(cd "$PERF/atr" && go build -o "$PERF/bin/peerbench" ./cmd/atr-peerbench)

say "starting the servers (ATR builds itself with scripts/dev-up.sh)"
for label in $SYSTEMS; do
	case $label in
	ATR-sqlite*) [ -e "$PERF/atr-sqlite.pgid" ] || bash "$here/start-atr.sh" atr-sqlite 38443 ;;
	ATR-postgres*)
		if [ ! -e "$PERF/atr-postgres.pgid" ]; then
			psql "$pgserver/postgres" -qc 'CREATE DATABASE atr_peer' >/dev/null
			created_db=1
			bash "$here/start-atr.sh" atr-postgres 38444 "$pgserver/atr_peer?sslmode=disable"
		fi
		;;
	step-badger)
		if [ ! -e "$PERF/step-badger.pgid" ]; then
			bash "$here/setup-stepca.sh" >/dev/null
			bash "$here/start-stepca.sh" badger 39443
		fi
		;;
	esac
done

say "SYSTEMS=\"$SYSTEMS\" ROUNDS=$ROUNDS CS=\"$CS\" DUR=$DUR → $results"
# In the background, so that a signal runs cleanup at once: bash runs a
# trap only when the foreground command it waits for has ended.
bash "$here/run-all.sh" "$results" &
runner=$!
wait "$runner"
runner=""
"$PERF/bin/peerbench" report "$results" | tee "$PERF/report.txt"
say "results in $results, the report in $PERF/report.txt"
