#!/usr/bin/env bash
# Interleaved A/B of proxy builds: CPU time per request (the proxy's utime +
# stime from /proc over a wrk run, divided by the requests served) and req/s,
# for POST /api/v1/identities/ and GET /api/v1/flags/, on the benchmark
# document and on a 10x document. CPU per request moves far less than req/s
# when other work shares the machine; the flags endpoint, which an
# evaluation change does not touch, shows how much the order of the runs
# alone moves the figures. It cannot see a gain on the client's side (one
# transmission instead of two, as TCP_CORK gives): judge such a change by
# bench/run.sh's requests/s against the ceiling instead.
#
#   bash bench/ab.sh NAME=BINARY NAME=BINARY ...     # e.g. base=./a nolanes=./b
#
# Knobs: ROUNDS=7 (each round runs every binary once, in the order given),
# DURATION=5s, SCALE_PY (the multiplier, default ../shared/bench/scale.py; the
# 10x document is skipped when it is missing). Linux only (reads /proc).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
ROUNDS=${ROUNDS:-7}
DURATION=${DURATION:-5s}
SCALE_PY=${SCALE_PY:-$root/../shared/bench/scale.py}
command -v wrk >/dev/null || { echo "bench/ab.sh: wrk is required (apt-get install -y wrk)" >&2; exit 1; }
[[ $# -ge 2 ]] || { echo "usage: bench/ab.sh NAME=BINARY NAME=BINARY ..." >&2; exit 1; }
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$root/testdata/bench/environment-document.json")
cp "$root/testdata/bench/environment-document.json" "$tmp/doc1.json"
sizes=(1)
if [[ -r $SCALE_PY ]]; then
	DISTINCT=0 python3 "$SCALE_PY" 10 1000 "$tmp/doc10.json" >&2
	sizes+=(10)
fi
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
port=$((20000 + RANDOM % 20000))
for ((r = 1; r <= ROUNDS; r++)); do
	for pair in "$@"; do
		name=${pair%%=*} bin=${pair#*=}
		for size in "${sizes[@]}"; do
			port=$((port + 1))
			cat >"$tmp/config.json" <<JSON
{"environment_key_pairs": [{"server_side_key": "ser.bench-server-key", "client_side_key": "$key",
  "environment_document_path": "$tmp/doc$size.json"}],
 "server": {"host": "127.0.0.1", "port": $port}, "logging": {"log_level": "WARNING"}, "analytics": {"enabled": false}}
JSON
			"$bin" -config "$tmp/config.json" >/dev/null 2>&1 &
			pid=$!
			for _ in $(seq 100); do curl -sf -o /dev/null "127.0.0.1:$port/proxy/health/readiness" && break; sleep 0.1; done
			for ep in identities flags; do
				if [[ $ep == identities ]]; then
					args=(-s "$here/identities-post.lua" -H "X-Environment-Key: $key" -H 'Content-Type: application/json'
						"http://127.0.0.1:$port/api/v1/identities/" -- "$root/testdata/bench/identity-body.json")
				else
					args=(-H "X-Environment-Key: $key" "http://127.0.0.1:$port/api/v1/flags/")
				fi
				wrk -t2 -c64 -d1s "${args[@]}" >/dev/null 2>&1 # warm-up
				t0=$(ticks "$pid")
				out=$(wrk -t2 -c64 -d"$DURATION" "${args[@]}" 2>&1)
				t1=$(ticks "$pid")
				n=$(awk '/requests in/ { print $1 }' <<<"$out")
				rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
				hz=$(getconf CLK_TCK)
				us=$(awk -v a="$t0" -v b="$t1" -v n="$n" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) * 1e6 / hz / n }')
				echo "round=$r variant=$name size=$size ep=$ep cpu_us_per_req=$us rps=$rps load=$(cut -d' ' -f1 /proc/loadavg)"
			done
			kill "$pid"
			wait "$pid" 2>/dev/null || true
		done
	done
done
