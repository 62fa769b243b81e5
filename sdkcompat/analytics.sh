#!/usr/bin/env bash
# analytics.sh: flag analytics through the edge proxy with real Flagsmith SDKs. Starts a fake
# Flagsmith (upstream.mjs, which records the analytics it receives), starts the given proxy
# binary with it as api_url and a 1 s analytics flush, waits for readiness, then runs
#   analytics.mjs  flagsmith-nodejs and the flagsmith JS client, enableAnalytics: true
#   goanalytics/   flagsmith-go-client v4 with WithAnalytics (its own Go module)
# Each evaluates known flags a known number of times; the fake must receive exactly those
# counts. Exit status: 0 pass, 1 failure, 2 setup problem.
#
# Usage: sdkcompat/analytics.sh PATH_TO_EDGE_PROXY_BINARY
set -euo pipefail

script=analytics.sh
# shellcheck source=common.sh disable=SC2034 # $script is read by common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
command -v timeout >/dev/null 2>&1 || die "timeout (GNU coreutils) is not installed"
command -v go >/dev/null 2>&1 || die "go is not installed (needed to build the Go SDK harness in goanalytics/)"

flush_seconds=1

with_proxy_and_upstream

# Build the Go harness first: a failure here is a setup problem, not a test failure. The
# module is fetched from the Go module proxy; go.sum pins it.
echo "sdkcompat: building the Go SDK harness" >&2
(cd "$here/goanalytics" && GONOSUMDB=github.com/Flagsmith/flagsmith-go-client/v4 GOFLAGS=-mod=readonly \
	go build -o "$workdir/goanalytics" .) >&2 || die "could not build goanalytics (Go module download?)"

start_upstream

port="$(free_port)" || die "could not find a free port"

config="$workdir/config.json"
API_URL="$upstream/api/v1" SERVER_KEY="$server_key" CLIENT_KEY="$client_key" PORT="$port" \
	FLUSH_SECONDS="$flush_seconds" node -e '
const env = process.env;
const config = {
  environment_key_pairs: [{ server_side_key: env.SERVER_KEY, client_side_key: env.CLIENT_KEY }],
  api_url: env.API_URL,
  analytics: { flush_interval_seconds: Number(env.FLUSH_SECONDS) },
  server: { host: "127.0.0.1", port: Number(env.PORT) },
};
require("fs").writeFileSync(process.argv[1], JSON.stringify(config, null, 2) + "\n");
' "$config"

start_proxy "$config" show_logs

status=0
(cd "$here" && PROXY_URL="$base" CLIENT_KEY="$client_key" SERVER_KEY="$server_key" \
	UPSTREAM_URL="$upstream" FLUSH_SECONDS="$flush_seconds" timeout 60 node analytics.mjs) || status=$?
if ((status == 0)); then
	PROXY_URL="$base" SERVER_KEY="$server_key" UPSTREAM_URL="$upstream" FLUSH_SECONDS="$flush_seconds" \
		timeout 60 "$workdir/goanalytics" || status=$?
fi

if ((status != 0)); then
	((status == 124)) && { echo "sdkcompat/analytics.sh: a harness did not finish within 60 s" >&2; status=1; }
	echo "sdkcompat/analytics.sh: failed (status $status)" >&2
	show_logs
fi
exit "$status"
