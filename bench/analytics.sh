#!/usr/bin/env bash
# Identities throughput with flag analytics mixed in, against without, in the
# same run (README "Flag analytics"). One command, from any directory:
#
#   bash bench/analytics.sh
#
# Builds the proxy and bench/upstream (which also takes the proxy's analytics
# flushes), starts both with the benchmark document and a 1 s analytics flush,
# then alternates wrk runs of POST /api/v1/identities/ (identities-post.lua)
# and of the same with one analytics post per EVERY requests
# (identities-analytics.lua), REPEAT times each. Prints the identity
# requests/s of each run, their medians and the ratio, and checks that the
# proxy forwarded every evaluation it received.
#
# Knobs: DURATION=10s CONNECTIONS=64 THREADS=2 REPEAT=3 EVERY=100
#        BENCH_DATA=<repo>/../shared/bench (or DOCUMENT=… IDENTITY_BODY=…)
#        PROXY_BIN=path (benchmark this binary instead of building the repo root)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
REPEAT=${REPEAT:-3}
EVERY=${EVERY:-100}
BENCH_DATA=${BENCH_DATA:-$root/../shared/bench}
DOCUMENT=${DOCUMENT:-$BENCH_DATA/environment-document.json}
IDENTITY_BODY=${IDENTITY_BODY:-$BENCH_DATA/identity-body.json}
SERVER_KEY=ser.bench-server-key

log() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'bench/analytics.sh: error: %s\n' "$*" >&2
	exit 1
}
for t in go wrk curl awk; do
	command -v "$t" >/dev/null 2>&1 || die "$t is required (bench/run.sh installs wrk)"
done
[[ -r $DOCUMENT ]] || die "benchmark document not found: $DOCUMENT (set BENCH_DATA or DOCUMENT)"
[[ -r $IDENTITY_BODY ]] || die "identity body not found: $IDENTITY_BODY (set BENCH_DATA or IDENTITY_BODY)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/edge-bench-analytics.XXXXXX")
pids=()
# shellcheck disable=SC2317 # called by the trap
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

log "building"
if [[ -n ${PROXY_BIN:-} ]]; then
	cp "$PROXY_BIN" "$tmp/edge-proxy"
else
	(cd "$root" && go build -o "$tmp/edge-proxy" .)
fi
(cd "$root" && go build -o "$tmp/upstream" ./bench/upstream)
client_key=$(grep -o '"api_key"[[:space:]]*:[[:space:]]*"[^"]*"' "$DOCUMENT" | head -n1 | sed 's/.*"\([^"]*\)"$/\1/')

"$tmp/upstream" -document "$DOCUMENT" >"$tmp/upstream.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do
	upstream=$(sed -n 's/^listening on //p' "$tmp/upstream.log")
	[[ -n $upstream ]] && break
	sleep 0.1
done
[[ -n $upstream ]] || die "the upstream did not start"

port=$(awk 'BEGIN { srand(); print 20000 + int(rand() * 10000) }')
cat >"$tmp/config.json" <<JSON
{
  "environment_key_pairs": [{"server_side_key": "$SERVER_KEY", "client_side_key": "$client_key"}],
  "api_url": "http://$upstream/api/v1",
  "server": {"host": "127.0.0.1", "port": $port},
  "logging": {"log_level": "WARNING"},
  "analytics": {"flush_interval_seconds": 1}
}
JSON
env -u CONFIG_PATH -u API_URL -u ENVIRONMENT_KEY_PAIRS -u SERVER -u LOGGING -u ANALYTICS \
	"$tmp/edge-proxy" -config "$tmp/config.json" >"$tmp/proxy.log" 2>&1 &
pids+=("$!")
proxy="http://127.0.0.1:$port"
for _ in $(seq 300); do
	[[ $(curl -s -o /dev/null -w '%{http_code}' "$proxy/proxy/health/readiness" || true) == 200 ]] && break
	sleep 0.1
done
[[ $(curl -s -o /dev/null -w '%{http_code}' "$proxy/proxy/health/readiness" || true) == 200 ]] ||
	{ cat "$tmp/proxy.log" >&2; die "the proxy did not become ready"; }

wrk_args=(-t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -H "X-Environment-Key: $client_key" -H 'Content-Type: application/json')
# identity_rps SCRIPT ARGS...: one wrk run; prints identity requests/s.
identity_rps() {
	local script=$1 out=$tmp/wrk.txt
	shift
	wrk "${wrk_args[@]}" -s "$here/$script" "$proxy/api/v1/identities/" -- "$IDENTITY_BODY" "$@" >"$out"
	awk '/Non-2xx or 3xx responses:/ { bad = $NF } /^Socket errors:/ { bad += 0 } END { if (bad > 0) exit 1 }' "$out" ||
		{ cat "$out" >&2; die "wrk saw non-2xx answers"; }
	awk '
		/^Requests\/sec:/ { rps = $2 }
		/^identity requests:/ { ids = $3 }
		/^analytics posts:/ { posts = $3 }
		END { if (ids + posts > 0) rps = rps * ids / (ids + posts); printf "%.0f\n", rps }' "$out"
}

log "warm-up"
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -H "X-Environment-Key: $client_key" -s "$here/identities-post.lua" \
	"$proxy/api/v1/identities/" -- "$IDENTITY_BODY" >/dev/null
plain=() mixed=()
for r in $(seq "$REPEAT"); do
	plain+=("$(identity_rps identities-post.lua)")
	mixed+=("$(identity_rps identities-analytics.lua 10000 "$EVERY")")
	log "round $r: identities alone ${plain[-1]} req/s; with 1 analytics post per $EVERY requests ${mixed[-1]} identity req/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
mp=$(median "${plain[@]}")
mm=$(median "${mixed[@]}")

sleep 2.5 # two flush intervals: everything received is forwarded
metric() { curl -s "$proxy/metrics" | awk -v m="$1{environment=\"$client_key\"}" '$1 == m { print $2 }'; }
received=$(metric edge_proxy_analytics_received_total)
forwarded=$(metric edge_proxy_analytics_forwarded_total)

echo
echo "| run ($DURATION, -t$THREADS -c$CONNECTIONS, median of $REPEAT) | identity requests/s |"
echo "|---|---|"
echo "| POST /api/v1/identities/ alone | $mp |"
echo "| the same with 1 analytics post per $EVERY requests | $mm ($(awk -v a="$mm" -v b="$mp" 'BEGIN { printf "%.1f", 100 * a / b }')%) |"
echo
echo "analytics: received $received evaluations, forwarded $forwarded, upstream posts $(curl -s "http://$upstream/analytics-posts")"
[[ $received == "$forwarded" ]] || die "received $received but forwarded $forwarded"
