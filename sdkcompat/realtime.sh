#!/usr/bin/env bash
# realtime.sh: realtime test of the edge proxy with Flagsmith's JS client SDK (`flagsmith`,
# pinned in package.json). Starts a fake Flagsmith upstream (upstream.mjs) serving
# document.json, starts the given proxy binary polling it every 3 s with push refresh enabled,
# waits for readiness, runs realtime.mjs and exits with its status (0 pass, 1 failure,
# 2 setup problem).
#
# Usage: sdkcompat/realtime.sh PATH_TO_EDGE_PROXY_BINARY
set -euo pipefail

script=realtime.sh
# shellcheck source=common.sh disable=SC2034 # $script is read by common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
command -v timeout >/dev/null 2>&1 || die "timeout (GNU coreutils) is not installed"

admin_token="realtime-test-admin-token-$RANDOM$RANDOM"
poll_seconds=3

with_proxy_and_upstream

start_upstream

port="$(free_port)" || die "could not find a free port"

config="$workdir/config.json"
API_URL="$upstream/api/v1" SERVER_KEY="$server_key" CLIENT_KEY="$client_key" PORT="$port" \
	ADMIN_TOKEN="$admin_token" POLL_SECONDS="$poll_seconds" node -e '
const env = process.env;
const config = {
  environment_key_pairs: [{ server_side_key: env.SERVER_KEY, client_side_key: env.CLIENT_KEY }],
  api_url: env.API_URL,
  api_poll_frequency_seconds: Number(env.POLL_SECONDS),
  admin_token: env.ADMIN_TOKEN,
  sse: { heartbeat_seconds: 1 },
  server: { host: "127.0.0.1", port: Number(env.PORT) },
};
require("fs").writeFileSync(process.argv[1], JSON.stringify(config, null, 2) + "\n");
' "$config"

start_proxy "$config" show_logs

status=0
(cd "$here" && PROXY_URL="$base" CLIENT_KEY="$client_key" ADMIN_TOKEN="$admin_token" \
	UPSTREAM_URL="$upstream" POLL_SECONDS="$poll_seconds" timeout 60 node realtime.mjs) || status=$?

if ((status != 0)); then
	((status == 124)) && { echo "sdkcompat/realtime.sh: realtime.mjs did not finish within 60 s" >&2; status=1; }
	echo "sdkcompat/realtime.sh: realtime.mjs failed (status $status)" >&2
	show_logs
fi
exit "$status"
