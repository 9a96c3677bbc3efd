#!/usr/bin/env bash
# Every test tier, as `make test` runs them, with each tier's time at the end.
#
# The real-node tier spends most of its time waiting on real pods (drain periods, probes,
# idle timeouts) and little on the CPU, while the integration tier keeps the API server
# busy: on two cores they run side by side, each with its own control plane, and the node
# tier's output is printed whole after the integration tier's. BKO_TEST_SERIAL=1 runs the
# tiers one after another instead. Every tier runs even when an earlier one failed, so one
# run shows every failure; the exit status is the first failing tier's.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0

tier() {  # tier NAME: run one tier in the foreground, recording its time and status
	local start rc
	start=$(date +%s)
	"$PY" -m pytest "tests/$1" --durations=10
	rc=$?
	echo "tier $1: $(($(date +%s) - start)) s$([ "$rc" = 0 ] || echo " (failed, exit $rc)")" >>"$logs/times"
	[ "$status" != 0 ] || status=$rc
}

tier unit
tier e2e
if [ "${BKO_TEST_SERIAL:-}" = 1 ]; then
	tier integration
	tier node
else
	(tier node >"$logs/node.out" 2>&1; echo "$status" >"$logs/node.status") &
	node=$!
	tier integration
	wait "$node"
	echo "----- the node tier (ran beside the integration tier) -----"
	cat "$logs/node.out"
	node_status=$(cat "$logs/node.status" 2>/dev/null || echo 1)
	[ "$status" != 0 ] || status=$node_status
fi
tier chaos
cat "$logs/times"
exit "$status"
