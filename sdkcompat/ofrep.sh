#!/usr/bin/env bash
# ofrep.sh: OpenFeature compatibility test of the edge proxy's OFREP endpoints with the real
# OpenFeature SDKs and OFREP providers (pinned in package.json; see ofrep.mjs). Starts the given
# proxy binary on a free local port serving document.json plus an object-valued flag, an
# identity override of it and a server-only flag (OFREP's value types and key filtering), from a
# file the test rewrites to change the document; waits for readiness, runs ofrep.mjs and exits
# with its status (0 pass, 1 failure, 2 setup problem).
#
# Usage: sdkcompat/ofrep.sh PATH_TO_EDGE_PROXY_BINARY
set -euo pipefail

script=ofrep.sh
# shellcheck source=common.sh disable=SC2034 # $script is read by common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
command -v timeout >/dev/null 2>&1 || die "timeout (GNU coreutils) is not installed"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/sdkcompat-ofrep.XXXXXX")"
proxy_pid=""
# shellcheck disable=SC2317 # runs from the EXIT trap
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

# The environment's document: document.json with what OFREP adds to the comparison.
node -e '
const fs = require("fs");
const doc = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
const state = (id, name, value, enabled = true) => ({
  feature: { id, name, type: "STANDARD" }, enabled, django_id: 29000 + id % 1000, feature_segment: null,
  featurestate_uuid: `0f0e0d0c-0000-4000-8000-00000000${id}`, feature_state_value: value,
  multivariate_feature_state_values: [],
});
doc.feature_states.push(state(9001, "ofrep_theme", { colour: "teal", radius: 4, tags: ["a", "b"] }));
doc.feature_states.push(state(9002, "ofrep_server_only", "internal"));
doc.feature_states.push(state(9003, "ofrep_limits_off", { max: 3 }, false));
doc.project.server_key_only_feature_ids = [9002];
const alice = doc.identity_overrides.find((o) => o.identifier === "vip-alice");
alice.identity_features.push(state(9001, "ofrep_theme", { colour: "gold", radius: 8 }));
fs.writeFileSync(process.argv[2], JSON.stringify(doc, null, 1));
' "$here/document.json" "$workdir/document.json"

port="$(free_port)" || die "could not find a free port"

config="$workdir/config.json"
DOC="$workdir/document.json" SERVER_KEY="$server_key" CLIENT_KEY="$client_key" PORT="$port" node -e '
const env = process.env;
const config = {
  environment_key_pairs: [{
    server_side_key: env.SERVER_KEY,
    client_side_key: env.CLIENT_KEY,
    environment_document_path: env.DOC,
  }],
  sse: { heartbeat_seconds: 1 },
  server: { host: "127.0.0.1", port: Number(env.PORT) },
};
require("fs").writeFileSync(process.argv[1], JSON.stringify(config, null, 2) + "\n");
' "$config"

start_proxy "$config" show_proxy_log

status=0
(cd "$here" && PROXY_URL="$base" CLIENT_KEY="$client_key" SERVER_KEY="$server_key" \
	IDENTITIES_FILE="$here/identities.json" DOCUMENT_FILE="$workdir/document.json" \
	timeout 180 node ofrep.mjs) || status=$?

if ((status != 0)); then
	((status == 124)) && { echo "sdkcompat/ofrep.sh: ofrep.mjs did not finish within 180 s" >&2; status=1; }
	echo "sdkcompat/ofrep.sh: ofrep.mjs failed (status $status)" >&2
	show_proxy_log
fi
exit "$status"
