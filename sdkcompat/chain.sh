#!/usr/bin/env bash
# chain.sh: a value-only edit of an offline document reaches realtime SDKs at the end of a chain
# of proxies. Proxy A serves document.json from a file (environment_document_path); proxy B
# polls A (api_url) once a minute and follows A's realtime stream (realtime_api_url). Two SDKs
# in realtime mode, with no polling of their own, use B: Flagsmith's JS client SDK (chain.mjs)
# and Flagsmith's Go SDK with local evaluation and WithRealtime() (gorealtime/). The script
# changes banner_colour in A's file without touching its updated_at, and both SDKs must show the
# new value within 3 s (A checks its file every second). Exit status: 0 pass, 1 failure,
# 2 setup problem.
#
# Usage: sdkcompat/chain.sh PATH_TO_EDGE_PROXY_BINARY
set -euo pipefail

script=chain.sh
# shellcheck source=common.sh disable=SC2034 # $script is read by common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
command -v go >/dev/null 2>&1 || die "go is not installed (needed to build the Go SDK client, gorealtime/)"

bound_ms=3000
feature=banner_colour
want="green-$RANDOM$RANDOM"
workdir="$(mktemp -d "${TMPDIR:-/tmp}/sdkcompat-chain.XXXXXX")"
pids=()
# shellcheck disable=SC2317 # cleanup runs from the EXIT trap
cleanup() {
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_logs() {
	for f in "$workdir"/*.log; do
		echo "--- $(basename "$f"):" >&2
		sed 's/^/    /' "$f" >&2 || true
	done
}

echo "sdkcompat: building the Go SDK client (gorealtime)" >&2
# As of 2026-12 the checksum database may not list this SDK version; go.sum pins its hashes.
(cd "$here/gorealtime" && GONOSUMDB=github.com/Flagsmith/flagsmith-go-client/v4 GOFLAGS=-mod=mod \
	go build -o "$workdir/gorealtime" .) >&2 || die "could not build gorealtime (go build in $here/gorealtime)"

port_a="$(free_port)" || die "could not find a free port"
port_b="$(free_port)" || die "could not find a free port"
[[ "$port_a" =~ ^[0-9]+$ && "$port_b" =~ ^[0-9]+$ && "$port_a" != "$port_b" ]] || die "could not find two free ports"
a="http://127.0.0.1:$port_a"
b="http://127.0.0.1:$port_b"

cp "$here/document.json" "$workdir/document.json"
# write_config FILE PORT JSON_EXTRA: a proxy's config.json serving the compat key pair.
write_config() {
	SERVER_KEY="$server_key" CLIENT_KEY="$client_key" PORT="$2" EXTRA="$3" node -e '
const env = process.env;
const config = {
  environment_key_pairs: [{ server_side_key: env.SERVER_KEY, client_side_key: env.CLIENT_KEY }],
  sse: { heartbeat_seconds: 1 },
  server: { host: "127.0.0.1", port: Number(env.PORT) },
  ...JSON.parse(env.EXTRA),
};
if (config.document_path) {
  config.environment_key_pairs[0].environment_document_path = config.document_path;
  delete config.document_path;
}
require("fs").writeFileSync(process.argv[1], JSON.stringify(config, null, 2) + "\n");
' "$1"
}
write_config "$workdir/a.json" "$port_a" "{\"document_path\": \"$workdir/document.json\"}"
write_config "$workdir/b.json" "$port_b" "{\"api_url\": \"$a/api/v1\", \"realtime_api_url\": \"$a\", \"api_poll_frequency_seconds\": 60}"

"$binary" -config "$workdir/a.json" >"$workdir/proxy-a.log" 2>&1 &
pids+=($!)
wait_ready "$a/proxy/health/readiness" "${pids[0]}" show_logs
"$binary" -config "$workdir/b.json" >"$workdir/proxy-b.log" 2>&1 &
pids+=($!)
wait_ready "$b/proxy/health/readiness" "${pids[1]}" show_logs

common=(PROXY_URL="$b" FEATURE="$feature" WANT="$want" TIMEOUT_SECONDS=20)
env "${common[@]}" CLIENT_KEY="$client_key" node "$here/chain.mjs" >"$workdir/js.out" 2>"$workdir/js.log" &
js_pid=$!
pids+=("$js_pid")
env "${common[@]}" SERVER_KEY="$server_key" "$workdir/gorealtime" >"$workdir/go.out" 2>"$workdir/go.log" &
go_pid=$!
pids+=("$go_pid")

# Both SDKs hold the flags and their streams are open on B.
deadline=$((SECONDS + 20))
until grep -q '^ready ' "$workdir/js.out" 2>/dev/null && grep -q '^ready ' "$workdir/go.out" 2>/dev/null &&
	node -e 'fetch(process.argv[1]).then(r => r.text()).then(t => process.exit(/^edge_proxy_sse_subscribers ([2-9]|\d\d+)$/m.test(t) ? 0 : 1), () => process.exit(1))' "$b/metrics"; do
	((SECONDS < deadline)) || { show_logs; die "the SDKs were not ready with two streams open on B within 20 s"; }
	sleep 0.1
done
echo "sdkcompat: JS client $(cat "$workdir/js.out"), Go SDK $(cat "$workdir/go.out"); editing $feature to $want (updated_at unchanged)" >&2

t0="$(node -e 'console.log(Date.now())')"
FEATURE="$feature" WANT="$want" node -e '
const fs = require("fs");
const path = process.argv[1];
const doc = JSON.parse(fs.readFileSync(path, "utf8"));
const fs_ = doc.feature_states.find((f) => f.feature.name === process.env.FEATURE);
fs_.feature_state_value = process.env.WANT;
fs.writeFileSync(path + ".tmp", JSON.stringify(doc, null, 2));
fs.renameSync(path + ".tmp", path);
' "$workdir/document.json"

status=0
for sdk in js go; do
	pid=$js_pid
	[[ $sdk == go ]] && pid=$go_pid
	code=0
	wait "$pid" || code=$?
	seen="$(sed -n 's/^seen_at_ms //p' "$workdir/$sdk.out")"
	if ((code != 0)) || [[ -z "$seen" ]]; then
		echo "sdkcompat/chain.sh: the $sdk SDK did not show $feature = $want (exit $code)" >&2
		status=1
		continue
	fi
	took=$((seen - t0))
	echo "chain: $sdk SDK showed the value-only edit ${took} ms after it was written (bound ${bound_ms} ms)"
	((took <= bound_ms)) || { echo "sdkcompat/chain.sh: the $sdk SDK took ${took} ms; want <= ${bound_ms} ms" >&2; status=1; }
done
((status == 0)) || show_logs
exit "$status"
