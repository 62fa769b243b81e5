#!/usr/bin/env bash
# run.sh: SDK compatibility test of the edge proxy against flagsmith-nodejs (pinned in
# package.json). Starts the given proxy binary on a free local port with document.json as the
# environment's document, waits for readiness, runs compare.mjs and exits with its status
# (0 agree, 1 mismatch, 2 setup problem).
#
# Usage: sdkcompat/run.sh PATH_TO_EDGE_PROXY_BINARY
set -euo pipefail

script=run.sh
# shellcheck source=common.sh disable=SC2034 # $script is read by common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/sdkcompat.XXXXXX")"
proxy_pid=""
cleanup() {
	if [[ -n "$proxy_pid" ]] && kill -0 "$proxy_pid" 2>/dev/null; then
		kill "$proxy_pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 "$proxy_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$proxy_pid" 2>/dev/null || true
		wait "$proxy_pid" 2>/dev/null || true
	fi
	rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port="$(free_port)" || die "could not find a free port"

config="$workdir/config.json"
DOC="$here/document.json" SERVER_KEY="$server_key" CLIENT_KEY="$client_key" PORT="$port" node -e '
const env = process.env;
const config = {
  environment_key_pairs: [{
    server_side_key: env.SERVER_KEY,
    client_side_key: env.CLIENT_KEY,
    environment_document_path: env.DOC,
  }],
  server: { host: "127.0.0.1", port: Number(env.PORT) },
};
require("fs").writeFileSync(process.argv[1], JSON.stringify(config, null, 2) + "\n");
' "$config"

start_proxy "$config" show_proxy_log

status=0
(cd "$here" && PROXY_URL="$base/api/v1/" CLIENT_KEY="$client_key" SERVER_KEY="$server_key" \
	IDENTITIES_FILE="$here/identities.json" node compare.mjs) || status=$?

if ((status != 0)); then
	echo "sdkcompat/run.sh: compare.mjs failed (status $status); proxy log:" >&2
	sed 's/^/    /' "$workdir/proxy.log" >&2
fi
exit "$status"
