# shellcheck shell=bash
# common.sh: the setup run.sh and realtime.sh share; sourced, not run. It
# expects $script (the caller's name) and the caller's arguments, checks the
# proxy binary and Node.js/npm (exit 2 when something is missing), and
# installs the pinned SDKs with npm ci.

# shellcheck disable=SC2154 # $script is set by the sourcing script
die() {
	echo "sdkcompat/$script: $*" >&2
	exit 2
}

[[ $# -eq 1 ]] || die "usage: $0 PATH_TO_EDGE_PROXY_BINARY"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
binary="$1"
[[ "$binary" == */* ]] || binary="./$binary"
[[ -f "$binary" && -x "$binary" ]] || die "proxy binary '$1' does not exist or is not executable"
binary="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"

command -v node >/dev/null 2>&1 || die "node is not installed (Node.js >= 20 is required by the Flagsmith SDKs)"
command -v npm >/dev/null 2>&1 || die "npm is not installed (needed to install the Flagsmith SDKs)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "node $(node --version) is too old: Node.js >= 20 is required"

# shellcheck disable=SC2034 # used by the sourcing scripts
server_key="ser.compat-server-key-0001"
# shellcheck disable=SC2034
client_key="CompatClientKey0000001"

echo "sdkcompat: installing the SDKs (npm ci)" >&2
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error) >&2 || die "npm ci failed in $here"
