#!/usr/bin/env bash
# start-atr.sh NAME PORT [DATABASE_URL]
# Starts an ATR server from the clone $PERF/atr with scripts/dev-up.sh in its
# own session (process group id written to $PERF/NAME.pgid; dev-up.sh execs
# `atr serve`, so that id is also the server's pid), rate limits raised to the
# 100x ceiling, data in $PERF/NAME; then creates 64 owner API keys
# ($PERF/NAME.keys) with the admin key. ATR_VRF_ALGORITHM=rsa-2048 in the
# environment gives a new data directory an RSA-2048 VRF key (scripts/dev-up.sh);
# ATR_CLONE=DIR runs another clone than $PERF/atr (an A/B of two commits).
set -euo pipefail
name=$1 port=$2 dburl=${3:-}
PERF=${PERF:-/tmp/perf}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
data=$PERF/$name
export ATR_DATA_DIR=$data ATR_LISTEN=127.0.0.1:$port
export ATR_RATE_LIMITS=register=6000/h:2000,per-key=12000/m:3000,per-ip=30000/m:6000,public=120000/m:20000
if [ -n "$dburl" ]; then export ATR_DATABASE_URL=$dburl; fi
mkdir -p "$PERF/logs"
cd "${ATR_CLONE:-$PERF/atr}"
setsid bash -c 'echo $$ > "$0"; exec bash scripts/dev-up.sh' "$PERF/$name.pgid" >"$PERF/logs/$name.log" 2>&1 </dev/null &
for _ in $(seq 1 300); do
	if [ -s "$data/ca/bundle.pem" ] && curl -fsS --cacert "$data/ca/bundle.pem" "https://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
		break
	fi
	sleep 1
done
curl -fsS --cacert "$data/ca/bundle.pem" "https://127.0.0.1:$port/healthz" >/dev/null
pgid=$(cat "$PERF/$name.pgid")
echo "start-atr: $name on 127.0.0.1:$port, pid/pgid $pgid: $(tr '\0' ' ' </proc/$pgid/cmdline)"
"$PERF/bin/peerbench" atr-keys -url "https://127.0.0.1:$port" -ca-bundle "$data/ca/bundle.pem" \
	-admin-key-file "$data/admin.apikey" -n 64 -out "$PERF/$name.keys"
