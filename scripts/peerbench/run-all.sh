#!/usr/bin/env bash
# run-all.sh [RESULTS.jsonl] — the comparison: 3 rounds; in each round, for
# c = 1, 4, 16, the four systems one after the other (order rotated by one
# each round), 20 s each. Every server must be up (start-atr.sh,
# start-stepca.sh). One JSON line per run is appended to RESULTS.jsonl.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
out=${1:-$PERF/results.jsonl}
ROUNDS=${ROUNDS:-3}
CS=${CS:-"1 4 16"}
# SYSTEMS: any labels lib.sh's run knows, e.g. "ATR-sqlite ATR-sqlite-vrf2048 step-badger".
read -r -a systems <<<"${SYSTEMS:-ATR-sqlite ATR-postgres step-badger step-nodb}"
n=${#systems[@]}
for round in $(seq 1 "$ROUNDS"); do
	for c in $CS; do
		for k in $(seq 0 $((n - 1))); do
			run "${systems[$(((k + round - 1) % n))]}" "$round" "$c"
		done
	done
done
