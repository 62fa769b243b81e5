#!/usr/bin/env bash
# The status page in a real browser: starts the binary with two
# environments, one served from the demo document file and one polled from
# an upstream (a second edge-proxy) that then goes away, so that it turns
# stale; loads GET /proxy/status in headless Chromium with HTTP Basic auth,
# and checks what a person sees: both environments, the stale one marked,
# and nothing fetched from anywhere but the proxy.
#
#   scripts/status-page.sh ./edge-proxy [SCREENSHOT.png]
#
# Needs Debian's chromium (apt-get install -y chromium); installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "status-page: $*" >&2; exit 1; }
bin=${1:-}
[ -n "$bin" ] || fail "usage: scripts/status-page.sh EDGE_PROXY_BINARY [SCREENSHOT.png]"
[ -x "$bin" ] || fail "$bin is not an executable edge-proxy binary (go build -o edge-proxy .)"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
command -v chromium >/dev/null 2>&1 || fail "chromium is required but not installed (Debian: apt-get install -y chromium)"

work=$(mktemp -d)
shot=${2:-$work/status-page.png}
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
token="status-page-token-$RANDOM$RANDOM"

# listen_addr waits for a proxy started on port 0 to log the address it
# listens on, and prints it.
listen_addr() {
	for _ in $(seq 1 100); do
		addr=$(grep -o '=listening addr=[^ ]*' "$1" | sed 's/.*addr=//' || true)
		if [ -n "$addr" ]; then
			echo "$addr"
			return
		fi
		sleep 0.1
	done
	cat "$1" >&2
	fail "no listening address in $1"
}

# The upstream: a second proxy serving the demo document under another key
# and name (its /api/v1/environment-document/ is what a proxy polls).
sed -e 's/"api_key": "DemoEnvClientKey000001"/"api_key": "MobileEnvClientKey0002"/' \
	-e 's/"name": "Demo"/"name": "Mobile \& Web (staging)"/' examples/environment-document.json >"$work/mobile.json"
printf '%s\n' '{"environment_key_pairs": [{"server_side_key": "ser.mobile-server-key-02",' \
	'"client_side_key": "MobileEnvClientKey0002", "environment_document_path": "mobile.json"}],' \
	'"server": {"host": "127.0.0.1", "port": 0, "drain_seconds": 0}, "analytics": {"enabled": false}}' >"$work/upstream.json"
"$bin" -config "$work/upstream.json" 2>"$work/upstream.log" &
up_pid=$!
pids+=("$up_pid")
up_addr=$(listen_addr "$work/upstream.log")

# The proxy under test: the demo environment from its file, the other polled
# every second from the upstream.
printf '%s\n' '{"environment_key_pairs": [' \
	'{"server_side_key": "ser.demo-server-key-000001", "client_side_key": "DemoEnvClientKey000001",' \
	"\"environment_document_path\": \"$PWD/examples/environment-document.json\"}," \
	'{"server_side_key": "ser.mobile-server-key-02", "client_side_key": "MobileEnvClientKey0002"}],' \
	"\"api_url\": \"http://$up_addr/api/v1\", \"api_poll_frequency_seconds\": 1, \"api_poll_timeout_seconds\": 1," \
	"\"admin_token\": \"$token\", \"server\": {\"host\": \"127.0.0.1\", \"port\": 0, \"drain_seconds\": 0}}" >"$work/proxy.json"
"$bin" -config "$work/proxy.json" 2>"$work/proxy.log" &
pids+=("$!")
addr=$(listen_addr "$work/proxy.log")

# edge-proxy status exits 0 once both environments are served, 1 while one
# is not ok.
wait_status() {
	for i in $(seq 1 100); do
		code=0
		"$bin" status -url "http://$addr" -token "$token" >"$work/status.txt" 2>&1 || code=$?
		[ "$code" -eq "$1" ] && return
		[ "$i" -lt 100 ] || { cat "$work/status.txt" "$work/proxy.log" >&2; fail "edge-proxy status never exited $1 ($2)"; }
		sleep 0.1
	done
}
wait_status 0 "both environments served"
kill "$up_pid" # the upstream goes: the polled environment turns stale
wait_status 1 "the polled environment stale"

url="http://ops:$token@$addr/proxy/status"
chrome() {
	chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
		--disable-sync --no-first-run --disable-default-apps \
		--user-data-dir="$(mktemp -d -p "$work")" "$@"
}
chrome --log-net-log="$work/net.json" --dump-dom "$url" >"$work/dom.html" 2>"$work/chromium.log" ||
	{ cat "$work/chromium.log" >&2; fail "chromium could not load $url"; }
chrome --window-size=1400,720 --hide-scrollbars --screenshot="$shot" "$url" >/dev/null 2>>"$work/chromium.log" ||
	{ cat "$work/chromium.log" >&2; fail "chromium could not take a screenshot"; }

dom="$work/dom.html"
problems=()
check() { grep -q -- "$1" "$dom" || problems+=("the page does not show $2"); }
check '<h1>Edge proxy status</h1>' "its title (was the Basic auth refused?)"
check 'Demo</strong>' "the demo environment"
check 'Mobile &amp; Web (staging)</strong>' "the polled environment"
check '1 of 2 environments not ok' "the summary"
check 'class="mark stale">STALE<' "a STALE mark in words"
check 'the last poll failed' "the stale environment's error"
[ "$(grep -c 'data-state="ok"' "$dom")" -eq 1 ] || problems+=("not exactly one environment marked ok")
[ "$(grep -c 'data-state="stale"' "$dom")" -eq 1 ] || problems+=("not exactly one environment marked stale")
# Nothing that would fetch: no script, style sheet, image, frame or font.
refs='<(script|link|img|iframe|object|embed)\b| (src|href)=|@import|url\('
if grep -Eqi "$refs" "$dom"; then
	problems+=("a resource reference: $(grep -Eoi "$refs" "$dom" | head -3 | tr '\n' ' ')")
fi
# Every request the page made is to the proxy. In Chromium's network log a
# request a page makes names the page as its initiator; Chromium's own
# background requests (time, accounts) name "not an origin".
requests=$(grep -o '"initiator":"[^"]*".*"url":"[^"]*"' "$work/net.json" | sed -E 's/^"initiator":"([^"]*)".*"url":"([^"]*)"$/\1 \2/' || true)
grep -q " http://$addr/proxy/status" <<<"$requests" || problems+=("no request for the page in the network log (was --log-net-log honoured?)")
others=$(grep -v '^not an origin ' <<<"$requests" | grep -v " http://$addr/" || true)
[ -z "$others" ] || problems+=("requests to elsewhere: $others")
[ -s "$shot" ] || problems+=("no screenshot at $shot")

if [ "${#problems[@]}" -gt 0 ]; then
	printf 'status-page: %s\n' "${problems[@]}" >&2
	echo "--- DOM" >&2
	cat "$dom" >&2
	exit 1
fi
echo "status-page: ok: 2 environments shown, the stale one marked, nothing fetched from elsewhere; screenshot $shot"
