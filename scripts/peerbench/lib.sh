# lib.sh — sourced by run-all.sh and run-counterfactual.sh: run LABEL ROUND C
# drives one system for $DUR at concurrency C and appends a JSON line to $out.
PERF=${PERF:-/tmp/perf}
B=$PERF/bin/peerbench
DUR=${DUR:-20s}
# PostgreSQL's postmaster: the whole server's CPU is recorded next to the
# CPU of the ATR database's own backends.
PGPID=$(ps -C postgres -o pid=,ppid= | awk '$2 == 1 {print $1; exit}')

# RP_POLL=SECONDS: while each ATR run lasts, a relying party fetches the
# CRL (GET /v1/crl) and Prometheus scrapes /metrics every SECONDS — with a
# short rotation grace (ATR_ROTATION_GRACE=1s start-atr.sh ...) the CRL
# changes all through a rotation run, as under a fleet that rotates.
rp_poll() { # PORT BUNDLE
	while sleep "$RP_POLL"; do
		curl -fsS -o /dev/null --cacert "$2" "https://127.0.0.1:$1/v1/crl" || true
		curl -fsS -o /dev/null --cacert "$2" "https://127.0.0.1:$1/metrics" || true
	done
}

atr_run() { # NAME PORT [PGDB] -- common flags
	local name=$1 port=$2 pgdb=$3 poller="" rc=0
	shift 3
	local pg=()
	[ -n "$pgdb" ] && pg=(-pg-pid "$PGPID" -pg-db "$pgdb")
	if [ -n "${RP_POLL:-}" ]; then
		rp_poll "$port" "$PERF/$name/ca/bundle.pem" &
		poller=$!
	fi
	timeout 300 "$B" load -system atr -url "https://127.0.0.1:$port" -root "$PERF/$name/ca/root.pem" \
		-tls-root "$PERF/$name/ca/bundle.pem" -keys "$PERF/$name.keys" -n 8000 \
		-pid "$(cat "$PERF/$name.pgid")" "${pg[@]}" "$@" || rc=$?
	if [ -n "$poller" ]; then
		kill "$poller" 2>/dev/null
		wait "$poller" 2>/dev/null || true
	fi
	return "$rc"
}

step_run() { # INSTANCE PORT -- common flags
	local inst=$1 port=$2
	shift 2
	timeout 300 "$B" load -system stepca -url "https://127.0.0.1:$port" -root "$PERF/stepca/pki/root_ca.crt" \
		-jwk "$PERF/stepca/pki/provisioner.jwk" -n 24000 -pid "$(cat "$PERF/step-$inst.pgid")" "$@"
}

run() { # LABEL ROUND C
	local label=$1 round=$2 c=$3 common
	common=(-c "$c" -d "$DUR" -round "$round" -prefix "${PREFIX:-r}$round-c$c" -label "$label" -out "$out")
	case $label in
	ATR-sqlite) atr_run atr-sqlite 38443 "" "${common[@]}" ;;
	ATR-postgres) atr_run atr-postgres 38444 atr_peer "${common[@]}" ;;
	step-badger) step_run badger 39443 "${common[@]}" ;;
	step-nodb) step_run nodb 39444 "${common[@]}" ;;
	# Counterfactuals (not part of the comparison): no fsync at commit.
	ATR-sqlite-nosync) atr_run atr-sqlite-nosync 38445 "" "${common[@]}" ;;
	ATR-postgres-async) atr_run atr-postgres-async 38446 atr_peer_async "${common[@]}" ;;
	# Counterfactual: lib/pq's binary_parameters=yes sends Parse/Bind/Execute
	# at once, one round trip per parameterized statement instead of two.
	ATR-postgres-binparam) atr_run atr-postgres-binparam 38447 atr_peer_bin "${common[@]}" ;;
	# The same servers with an RSA-2048 name-index VRF key
	# (ATR_VRF_ALGORITHM=rsa-2048 start-atr.sh NAME PORT [DB]).
	ATR-sqlite-vrf2048) atr_run atr-sqlite-2048 38448 "" "${common[@]}" ;;
	ATR-postgres-vrf2048) atr_run atr-postgres-2048 38449 atr_peer_2048 "${common[@]}" ;;
	# Rotation of agents registered before the clock (-op rotate): a new
	# certificate for a known name, the fleet's daily load; no VRF signature.
	# Their own name prefix: they share a server with ATR-sqlite / ATR-postgres.
	ATR-sqlite-rotate) atr_run atr-sqlite 38443 "" "${common[@]}" -op rotate -prefix "${PREFIX:-r}$round-c$c-rot" ;;
	ATR-postgres-rotate) atr_run atr-postgres 38444 atr_peer "${common[@]}" -op rotate -prefix "${PREFIX:-r}$round-c$c-rot" ;;
	# Rotations in a fleet larger than the server's VRF cache (10,000 names):
	# FLEET agents (default 18,016: the 8,016 rotated plus 10,000 more)
	# registered before the clock, the oldest rotated first, so that every
	# rotation reads its name's proofs back from the database.
	ATR-sqlite-fleet-rotate) atr_run atr-sqlite 38443 "" "${common[@]}" -op rotate -fleet "${FLEET:-18016}" -prefix "${PREFIX:-r}$round-c$c-flt" ;;
	ATR-postgres-fleet-rotate) atr_run atr-postgres 38444 atr_peer "${common[@]}" -op rotate -fleet "${FLEET:-18016}" -prefix "${PREFIX:-r}$round-c$c-flt" ;;
	ATR-sqlite-base-fleet-rotate) atr_run atr-sqlite-base 38450 "" "${common[@]}" -op rotate -fleet "${FLEET:-18016}" -prefix "${PREFIX:-r}$round-c$c-flt" ;;
	ATR-postgres-base-fleet-rotate) atr_run atr-postgres-base 38451 atr_peer_base "${common[@]}" -op rotate -fleet "${FLEET:-18016}" -prefix "${PREFIX:-r}$round-c$c-flt" ;;
	# A/B of two commits: the same servers from the clone $PERF/atr-base
	# (ATR_CLONE=$PERF/atr-base start-atr.sh atr-sqlite-base 38450, and
	# atr-postgres-base 38451 on database atr_peer_base).
	ATR-sqlite-base) atr_run atr-sqlite-base 38450 "" "${common[@]}" ;;
	ATR-postgres-base) atr_run atr-postgres-base 38451 atr_peer_base "${common[@]}" ;;
	ATR-sqlite-base-rotate) atr_run atr-sqlite-base 38450 "" "${common[@]}" -op rotate -prefix "${PREFIX:-r}$round-c$c-rot" ;;
	ATR-postgres-base-rotate) atr_run atr-postgres-base 38451 atr_peer_base "${common[@]}" -op rotate -prefix "${PREFIX:-r}$round-c$c-rot" ;;
	# Counterfactual: the same build with the Go collector's GOGC=400 (the
	# environment of GOGC=400 start-atr.sh atr-sqlite-gogc400 38452).
	ATR-sqlite-gogc400) atr_run atr-sqlite-gogc400 38452 "" "${common[@]}" ;;
	ATR-sqlite-gogc400-rotate) atr_run atr-sqlite-gogc400 38452 "" "${common[@]}" -op rotate -prefix "${PREFIX:-r}$round-c$c-rot" ;;
	# PostgreSQL across a slower network: the database URL names a
	# `peerbench lag` relay (127.0.0.1:5433 → 5432), new and base builds
	# (start-atr.sh atr-postgres-remote 38453 '…@127.0.0.1:5433/atr_peer_remote…',
	# ATR_CLONE=$PERF/atr-base start-atr.sh atr-postgres-remote-base 38454 …atr_peer_remote_base).
	ATR-postgres-remote-rotate) atr_run atr-postgres-remote 38453 atr_peer_remote "${common[@]}" -n 3000 -op rotate -prefix "${PREFIX:-r}$round-c$c-rot" ;;
	ATR-postgres-remote-base-rotate) atr_run atr-postgres-remote-base 38454 atr_peer_remote_base "${common[@]}" -n 3000 -op rotate -prefix "${PREFIX:-r}$round-c$c-rot" ;;
	*) echo "run: unknown system $label" >&2; return 1 ;;
	esac
}
