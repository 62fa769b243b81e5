# shellcheck shell=bash
# common.sh: the setup the SDK scripts share; sourced, not run. It
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

# wait_ready URL PID LOGFN: polls URL with node (no curl needed) until it
# answers 200; exits 2, after calling LOGFN to show the logs, when the
# process PID dies first or 15 s pass.
wait_ready() {
	local url=$1 pid=$2 logfn=$3 status
	local probe='fetch(process.argv[1], {signal: AbortSignal.timeout(1000)}).then(r => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))'
	local deadline=$((SECONDS + 15))
	until node -e "$probe" "$url" 2>/dev/null; do
		if ! kill -0 "$pid" 2>/dev/null; then
			status=0
			wait "$pid" || status=$?
			echo "sdkcompat/$script: the proxy exited (status $status) before it was ready" >&2
			"$logfn"
			exit 2
		fi
		if ((SECONDS >= deadline)); then
			echo "sdkcompat/$script: $url did not return 200 within 15 s" >&2
			"$logfn"
			exit 2
		fi
		sleep 0.2
	done
	echo "sdkcompat: proxy ready" >&2
}

# with_proxy_and_upstream makes the work folder ($workdir) of a script that
# starts the proxy ($proxy_pid) and a fake upstream ($upstream_pid), and
# traps EXIT to stop both and remove the folder; show_logs prints both logs.
with_proxy_and_upstream() {
	workdir="$(mktemp -d "${TMPDIR:-/tmp}/sdkcompat-${script%.sh}.XXXXXX")"
	proxy_pid=""
	upstream_pid=""
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# shellcheck disable=SC2317 # stop and cleanup run from the EXIT trap
# stop PID: SIGTERM, up to 5 s to exit, then SIGKILL.
stop() {
	local pid="$1"
	[[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317
cleanup() {
	stop "$proxy_pid"
	stop "$upstream_pid"
	rm -rf "$workdir"
}

show_logs() {
	echo "--- proxy log:" >&2
	sed 's/^/    /' "$workdir/proxy.log" >&2 || true
	echo "--- upstream log:" >&2
	sed 's/^/    /' "$workdir/upstream.log" >&2 || true
}

# start_upstream starts the fake Flagsmith (upstream.mjs, serving
# document.json) and sets $upstream to its base URL; it picks a free port
# and writes it to a file once it listens.
start_upstream() {
	node "$here/upstream.mjs" "$here/document.json" "$server_key" "$workdir/upstream.port" >"$workdir/upstream.log" 2>&1 &
	upstream_pid=$!
	local deadline=$((SECONDS + 10))
	until [[ -s "$workdir/upstream.port" ]]; do
		kill -0 "$upstream_pid" 2>/dev/null || { show_logs; die "the fake upstream exited before it listened"; }
		((SECONDS < deadline)) || { show_logs; die "the fake upstream did not listen within 10 s"; }
		sleep 0.1
	done
	upstream="http://127.0.0.1:$(cat "$workdir/upstream.port")"
}

# free_port prints a free loopback port: bind port 0 and read back what the
# kernel chose. It fails (for `|| die` at the call) when there is none.
free_port() {
	local port
	port="$(node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });')"
	[[ "$port" =~ ^[0-9]+$ ]] || return 1
	echo "$port"
}

# start_proxy CONFIG LOGFN starts the proxy binary with CONFIG on $port, its
# output in $workdir/proxy.log, sets $proxy_pid and $base, and waits until it
# is ready (LOGFN shows the logs when it is not).
start_proxy() {
	echo "sdkcompat: starting $binary on 127.0.0.1:$port${upstream:+ (upstream $upstream)}" >&2
	"$binary" -config "$1" >"$workdir/proxy.log" 2>&1 &
	proxy_pid=$!
	base="http://127.0.0.1:$port"
	wait_ready "$base/proxy/health/readiness" "$proxy_pid" "$2"
}

# show_proxy_log prints the proxy's log.
show_proxy_log() {
	echo "--- proxy log:" >&2
	sed 's/^/    /' "$workdir/proxy.log" >&2 || true
}
