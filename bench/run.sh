#!/usr/bin/env bash
# Side-by-side benchmark of the edge proxy against a bare net/http ceiling
# (the README's Performance section). One command, from any directory:
#
#   bash bench/run.sh
#
# It also measures OpenFeature's OFREP endpoints (bulk and one flag) for the
# same identity, next to POST /api/v1/identities/ in the same run.
#
# It builds the proxy and the helpers in bench/, installs wrk (apt-get) and
# vegeta (go install) when missing, starts a fake upstream serving the
# benchmark document, the proxy, and a ceiling server answering the proxy's
# exact GET /api/v1/flags/ bytes; drives each with wrk, then each proxy
# endpoint and the ceiling with vegeta at half that endpoint's maximum rate;
# measures RSS with 1 and with 10 environments; prints a Markdown summary with
# PASS/FAIL per §8 target. Everything it writes goes to one mktemp -d
# directory that is removed on exit, with every process it started killed.
#
# Knobs (environment variables):
#   DURATION=10s         wrk run length per target
#   CONNECTIONS=64       wrk connections;  THREADS=2  wrk threads
#   WARMUP=2s            discarded wrk run before each measured one (0 = none)
#   VEGETA_DURATION=10s  constant-rate run length (per endpoint and ceiling)
#   VEGETA_REPEAT=3      constant-rate runs per endpoint and ceiling, alternating;
#                        the table shows medians
#   VEGETA_MAX_WORKERS=$CONNECTIONS  cap on vegeta's concurrent requests (0 =
#                        unbounded; unbounded, a stall makes vegeta open
#                        thousands of connections and measure its own storm)
#   ENVS=10              environments loaded for the memory run
#   RSS_DURATION=5s      flags load before the 10-environment RSS reading
#   BENCH_DATA=<repo>/testdata/bench  (or DOCUMENT=… IDENTITY_BODY=…)
#   SCALE_PY=<repo>/../shared/bench/scale.py  the document multiplier of SCALE mode
#   VEGETA_VERSION=v12.13.0
#   STRICT=1             exit 1 when a target FAILs (default: report only)
#   KEEP_TMP=1           keep the temporary directory (logs, raw outputs)
#   PROXY_BIN=path       benchmark this binary instead of building the repo root
#   SCALE="1:10 10:1000 1:10000:distinct"  scaled-document mode instead (see
#                        below): COPIES:OVERRIDES[:distinct] per size
#   SCALE_REPEAT=3       wrk runs per target and size in that mode, proxy and
#                        ceiling alternating; the table shows medians
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
VEGETA_DURATION=${VEGETA_DURATION:-10s}
VEGETA_REPEAT=${VEGETA_REPEAT:-3}
SCALE_REPEAT=${SCALE_REPEAT:-3}
VEGETA_MAX_WORKERS=${VEGETA_MAX_WORKERS:-$CONNECTIONS}
ENVS=${ENVS:-10}
RSS_DURATION=${RSS_DURATION:-5s}
BENCH_DATA=${BENCH_DATA:-$root/testdata/bench}
SCALE_PY=${SCALE_PY:-$root/../shared/bench/scale.py}
DOCUMENT=${DOCUMENT:-$BENCH_DATA/environment-document.json}
IDENTITY_BODY=${IDENTITY_BODY:-$BENCH_DATA/identity-body.json}
VEGETA_VERSION=${VEGETA_VERSION:-v12.13.0}
STRICT=${STRICT:-0}
KEEP_TMP=${KEEP_TMP:-0}
SERVER_KEY=ser.bench-server-key

log() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'bench/run.sh: error: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------- cleanup
tmp=$(mktemp -d "${TMPDIR:-/tmp}/edge-bench.XXXXXX")
pids=()
# shellcheck disable=SC2317 # called by the trap
cleanup() {
	local rc=$? p
	trap - EXIT INT TERM
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [[ $KEEP_TMP == 1 ]]; then
		log "kept $tmp"
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
if command -v go >/dev/null 2>&1; then
	GO=$(command -v go)
elif [[ -x /usr/local/go/bin/go ]]; then
	GO=/usr/local/go/bin/go
else
	die "go not found (PATH or /usr/local/go/bin)"
fi
[[ -r $DOCUMENT ]] || die "benchmark document not found: $DOCUMENT (set BENCH_DATA or DOCUMENT)"
[[ -r $IDENTITY_BODY ]] || die "identity body not found: $IDENTITY_BODY (set BENCH_DATA or IDENTITY_BODY)"
for t in curl awk sed grep; do
	command -v "$t" >/dev/null 2>&1 || die "$t is required"
done

as_root() {
	if [[ $(id -u) == 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root or sudo to run: $*"
	fi
}

if ! command -v wrk >/dev/null 2>&1; then
	log "installing wrk (apt-get)"
	export DEBIAN_FRONTEND=noninteractive
	if ! as_root apt-get install -y wrk >"$tmp/apt.log" 2>&1; then
		as_root apt-get update >>"$tmp/apt.log" 2>&1 || true
		as_root apt-get install -y wrk >>"$tmp/apt.log" 2>&1 || {
			cat "$tmp/apt.log" >&2
			die "could not install wrk"
		}
	fi
	command -v wrk >/dev/null 2>&1 || die "wrk still not on PATH after apt-get install"
fi
WRK=$(command -v wrk)

gobin=$("$GO" env GOBIN)
[[ -n $gobin ]] || gobin=$("$GO" env GOPATH)/bin
if command -v vegeta >/dev/null 2>&1; then
	VEGETA=$(command -v vegeta)
elif [[ -x $gobin/vegeta ]]; then
	VEGETA=$gobin/vegeta
else
	log "installing vegeta $VEGETA_VERSION (go install into $gobin)"
	(cd "$tmp" && GOBIN="$gobin" "$GO" install "github.com/tsenart/vegeta/v12@$VEGETA_VERSION") ||
		die "could not install vegeta"
	VEGETA=$gobin/vegeta
	[[ -x $VEGETA ]] || die "vegeta not found at $VEGETA after go install"
fi

# ---------------------------------------------------------------- build
log "building the proxy and bench helpers"
if [[ -n ${PROXY_BIN:-} ]]; then
	cp "$PROXY_BIN" "$tmp/edge-proxy" || die "cannot copy PROXY_BIN=$PROXY_BIN"
else
	# As the Dockerfile builds it, so that memory figures are those of the
	# binary users run (static: no C library mapped in).
	(cd "$root" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w" -o "$tmp/edge-proxy" .) ||
		die "go build of the proxy failed"
fi
(cd "$root" && "$GO" build -o "$tmp/upstream" ./bench/upstream &&
	"$GO" build -o "$tmp/ceiling" ./bench/ceiling &&
	"$GO" build -o "$tmp/targets" ./bench/targets) || die "go build of bench helpers failed"

client_key=$(grep -o '"api_key"[[:space:]]*:[[:space:]]*"[^"]*"' "$DOCUMENT" | head -n1 | sed 's/.*"\([^"]*\)"$/\1/')
[[ -n $client_key ]] || die "no api_key in $DOCUMENT"

# ---------------------------------------------------------------- helpers
# start NAME CMD...: runs CMD in the background in $tmp, output to $tmp/NAME.log
start() {
	local name=$1
	shift
	(cd "$tmp" && exec "$@") >"$tmp/$name.log" 2>&1 &
	pids+=("$!")
	last_pid=$!
}

# stop PID: kill a process started by start, wait for it, forget it.
stop() {
	local p keep=()
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	for p in "${pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
	pids=("${keep[@]}")
}

# listen_addr NAME PID: the "listening on ADDR" line of a helper's log.
listen_addr() {
	local name=$1 pid=$2 i addr
	for ((i = 0; i < 100; i++)); do
		addr=$(sed -n 's/^listening on //p' "$tmp/$name.log" | head -n1)
		if [[ -n $addr ]]; then
			echo "$addr"
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	cat "$tmp/$name.log" >&2
	die "$name did not start"
}

# free_port: a port below the ephemeral range (load generators' outgoing
# connections use that range, and could hold any port in it) that nothing
# listens on.
free_port() {
	local p i lo=32768
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
	((lo > 11024)) || die "ephemeral port range starts too low ($lo)"
	for ((i = 0; i < 100; i++)); do
		p=$((10000 + RANDOM % (lo - 11000)))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

# start_proxy NAME CONFIG: starts the proxy, waits for readiness = 200.
start_proxy() {
	local name=$1 config=$2 port=$3 i code=000
	# The environment wins over config.json: drop any such variable.
	start "$name" env -u CONFIG_PATH -u API_URL -u ENVIRONMENT_KEY_PAIRS \
		-u API_POLL_FREQUENCY_SECONDS -u API_POLL_FREQUENCY -u API_POLL_TIMEOUT_SECONDS \
		-u API_POLL_TIMEOUT -u ALLOW_ORIGINS -u ENDPOINT_CACHES -u SERVER -u LOGGING \
		-u HEALTH_CHECK -u CACHE_DIR \
		"$tmp/edge-proxy" -config "$config"
	proxy_pid=$last_pid
	proxy="http://127.0.0.1:$port"
	for ((i = 0; i < 300; i++)); do
		code=$(curl -s -o /dev/null -w '%{http_code}' "$proxy/proxy/health/readiness" || true)
		[[ $code == 200 ]] && return 0
		if ! kill -0 "$proxy_pid" 2>/dev/null; then
			cat "$tmp/$name.log" >&2
			die "proxy exited before becoming ready"
		fi
		sleep 0.1
	done
	cat "$tmp/$name.log" >&2
	die "proxy not ready after 30 s (last readiness status $code)"
}

# write_config FILE UPSTREAM PORT PAIRS_JSON
write_config() {
	cat >"$1" <<EOF
{
  "environment_key_pairs": $4,
  "api_url": "http://$2/api/v1",
  "server": {"host": "127.0.0.1", "port": $3},
  "logging": {"log_level": "WARNING"}
}
EOF
}

rss_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# expect_status WANT CURL_ARGS...: a sanity request before loading an endpoint,
# so a benchmark never measures error answers.
expect_status() {
	local want=$1 code
	shift
	code=$(curl -s -o "$tmp/probe.out" -w '%{http_code}' "$@" || true)
	if [[ $code != "$want" ]]; then
		head -c 600 "$tmp/probe.out" >&2 || true
		echo >&2
		die "expected $want from curl $*, got $code"
	fi
}

declare -A RPS P50 P99 BAD
# run_wrk NAME WRK_ARGS... : a warm-up, then the measured run; fills RPS/P50/P99/BAD.
run_wrk() {
	local name=$1
	local out=$tmp/wrk-$name.txt
	shift
	if ! [[ $WARMUP =~ ^0[a-z]*$ ]]; then
		"$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$@" >/dev/null
	fi
	log "wrk $name: -t$THREADS -c$CONNECTIONS -d$DURATION"
	"$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" >"$out"
	sed 's/^/    /' "$out" >&2
	local rps p50 p99 bad
	read -r rps p50 p99 bad < <(awk '
		function ms(v) {
			if (v ~ /us$/) return v / 1000
			if (v ~ /ms$/) return v + 0
			if (v ~ /m$/) return v * 60000
			if (v ~ /s$/) return v * 1000
			return v + 0
		}
		/^Requests\/sec:/ { rps = $2 }
		$1 == "50%" { p50 = ms($2) }
		$1 == "99%" { p99 = ms($2) }
		/Non-2xx or 3xx responses:/ { bad += $NF }
		/Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) bad += $i + 0 }
		END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, bad }' "$out")
	RPS[$name]=$rps P50[$name]=$p50 P99[$name]=$p99 BAD[$name]=$bad
}

# run_vegeta NAME RATE TARGETS_FILE FORMAT: fills VP99/VP50/VOK/VRATE.
declare -A VP50 VP99 VOK VRATE
run_vegeta() {
	local name=$1 rate=$2 targets=$3 format=$4
	local out=$tmp/vegeta-$name
	log "vegeta $name: $rate req/s for $VEGETA_DURATION"
	local cap=()
	[[ $VEGETA_MAX_WORKERS == 0 ]] || cap=(-max-workers="$VEGETA_MAX_WORKERS")
	"$VEGETA" attack -format="$format" -targets="$targets" -rate="$rate/1s" \
		-duration="$VEGETA_DURATION" -max-body=0 -timeout=5s "${cap[@]}" >"$out.bin"
	"$VEGETA" report "$out.bin" | sed 's/^/    /' >&2
	"$VEGETA" report -type=json "$out.bin" >"$out.json"
	VP50[$name]=$(grep -o '"50th":[0-9]*' "$out.json" | cut -d: -f2 | awk '{ printf "%.3f", $1 / 1e6 }')
	VP99[$name]=$(grep -o '"99th":[0-9]*' "$out.json" | cut -d: -f2 | awk '{ printf "%.3f", $1 / 1e6 }')
	VOK[$name]=$(grep -o '"success":[0-9.e+-]*' "$out.json" | cut -d: -f2 | awk '{ printf "%.2f", $1 * 100 }')
	VRATE[$name]=$(grep -o '"throughput":[0-9.e+-]*' "$out.json" | head -n1 | cut -d: -f2 | awk '{ printf "%.0f", $1 }')
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", 100 * a / b; else print "n/a" }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

load_before_scale=$(cut -d' ' -f1-3 /proc/loadavg)
# ---------------------------------------------------------------- scaled documents
# SCALE="COPIES:OVERRIDES[:distinct] ..." runs this mode instead of the one
# below: for each size, scale.py (next to the benchmark document) multiplies
# the document, and the proxy is measured on it: document size, time from
# start to ready (fetch and compile), flags and POST identities as % of a
# ceiling writing a response of the same size (the proxy's own flags body,
# and its identity response), and RSS after the load.
if [[ -n ${SCALE:-} ]]; then
	command -v python3 >/dev/null 2>&1 || die "python3 is required to run scale.py"
	scale_py=$SCALE_PY
	[[ -r $scale_py ]] || die "scale.py not found at $scale_py (set SCALE_PY)"
	now() { date +%s.%N; }
	rows=()
	for size in $SCALE; do
		IFS=: read -r copies overrides distinct <<<"$size"
		doc=$tmp/scaled-$copies-$overrides.json
		DISTINCT=$([[ $distinct == distinct ]] && echo 1 || echo 0) \
			python3 "$scale_py" "$copies" "$overrides" "$doc" >&2 || die "scale.py $size failed"
		doc_bytes=$(wc -c <"$doc")
		start upstream_s "$tmp/upstream" -addr 127.0.0.1:0 -document "$doc"
		upstream_pid=$last_pid
		upstream=$(listen_addr upstream_s "$upstream_pid")
		port=$(free_port)
		write_config "$tmp/config-s.json" "$upstream" "$port" \
			"[{\"server_side_key\": \"$SERVER_KEY\", \"client_side_key\": \"$client_key\"}]"
		t0=$(now)
		start_proxy proxy_s "$tmp/config-s.json" "$port"
		ready_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
		rss_ready=$(rss_kib "$proxy_pid" VmRSS)
		curl -fsS -H "X-Environment-Key: $client_key" -o "$tmp/flags-s.json" "$proxy/api/v1/flags/" || die "flags failed"
		curl -fsS -H "X-Environment-Key: $client_key" -H 'Content-Type: application/json' \
			--data-binary "@$IDENTITY_BODY" -o "$tmp/identity-s.json" "$proxy/api/v1/identities/" || die "identities failed"
		start ceiling_f "$tmp/ceiling" -addr 127.0.0.1:0 -body "$tmp/flags-s.json"
		cf_pid=$last_pid
		ceiling_f="http://$(listen_addr ceiling_f "$cf_pid")"
		start ceiling_i "$tmp/ceiling" -addr 127.0.0.1:0 -body "$tmp/identity-s.json"
		ci_pid=$last_pid
		ceiling_i="http://$(listen_addr ceiling_i "$ci_pid")"
		# Proxy and ceiling alternate SCALE_REPEAT times and the table shows
		# the medians: a burst of other work on the machine during one run
		# then moves one sample, not the ratio.
		declare -A samples=()
		for ((r = 1; r <= SCALE_REPEAT; r++)); do
			run_wrk s_ceiling_flags "$ceiling_f/api/v1/flags/"
			run_wrk s_flags -H "X-Environment-Key: $client_key" "$proxy/api/v1/flags/"
			run_wrk s_ceiling_identities -s "$here/identities-post.lua" -H 'Content-Type: application/json' \
				"$ceiling_i/api/v1/identities/" -- "$IDENTITY_BODY"
			run_wrk s_identities -s "$here/identities-post.lua" -H "X-Environment-Key: $client_key" \
				-H 'Content-Type: application/json' "$proxy/api/v1/identities/" -- "$IDENTITY_BODY"
			for name in s_ceiling_flags s_flags s_ceiling_identities s_identities; do
				samples[$name]+="${RPS[$name]} "
			done
			bad_total=$((${bad_total:-0} + BAD[s_flags] + BAD[s_identities]))
		done
		for name in s_ceiling_flags s_flags s_ceiling_identities s_identities; do
			# shellcheck disable=SC2086 # the samples are words on purpose
			RPS[$name]=$(median ${samples[$name]})
			log "$name req/s over $SCALE_REPEAT runs: ${samples[$name]}(median ${RPS[$name]})"
		done
		rss_load=$(rss_kib "$proxy_pid" VmRSS)
		hwm=$(rss_kib "$proxy_pid" VmHWM)
		errors=$bad_total
		bad_total=0
		rows+=("| $size | $(awk -v b="$doc_bytes" 'BEGIN { printf "%.2f", b / 1048576 }') | $ready_s | $(wc -c <"$tmp/flags-s.json") | ${RPS[s_flags]} / ${RPS[s_ceiling_flags]} | $(pct "${RPS[s_flags]}" "${RPS[s_ceiling_flags]}") | ${RPS[s_identities]} / ${RPS[s_ceiling_identities]} | $(pct "${RPS[s_identities]}" "${RPS[s_ceiling_identities]}") | $(mib "$rss_ready") | $(mib "$rss_load") | $(mib "$hwm") | $(awk -v r="$rss_load" -v d="$doc_bytes" 'BEGIN { printf "%.1f", r * 1024 / d }') | $errors |")
		stop "$proxy_pid"
		stop "$cf_pid"
		stop "$ci_pid"
		stop "$upstream_pid"
	done
	{
		echo
		echo "## Edge proxy on scaled documents, $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo
		echo "- machine: \`nproc\` = $(nproc), $(uname -sr); $("$GO" version | awk '{ print $3 }'); load average before: $load_before_scale, after: $(cut -d' ' -f1-3 /proc/loadavg)"
		echo "- wrk -t$THREADS -c$CONNECTIONS -d$DURATION per run, proxy and ceiling alternating $SCALE_REPEAT times, medians shown; sizes are scale.py COPIES:OVERRIDES (distinct: every override its own value)"
		echo
		echo "| size | document MiB | ready s | flags body bytes | flags req/s (proxy / ceiling) | flags % | identities req/s (proxy / ceiling) | identities % | RSS ready MiB | RSS after load MiB | peak MiB | RSS / document | errors |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		printf '%s\n' "${rows[@]}"
	} >"$tmp/summary.md"
	cat "$tmp/summary.md"
	exit 0
fi

# ---------------------------------------------------------------- 1 environment
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${load_before%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n / 4) }'; then
	log "WARNING: load average $load_before on $(nproc) cores before the run: other work shares the CPUs, figures will be low and noisy"
fi
start upstream "$tmp/upstream" -addr 127.0.0.1:0 -document "$DOCUMENT"
upstream=$(listen_addr upstream "$last_pid")
port=$(free_port)
write_config "$tmp/config.json" "$upstream" "$port" \
	"[{\"server_side_key\": \"$SERVER_KEY\", \"client_side_key\": \"$client_key\"}]"
log "starting the proxy on 127.0.0.1:$port (upstream $upstream)"
start_proxy proxy "$tmp/config.json" "$port"

# The ceiling answers the proxy's exact flags bytes.
curl -fsS -H "X-Environment-Key: $client_key" -o "$tmp/flags-body.json" "$proxy/api/v1/flags/" ||
	die "GET /api/v1/flags/ failed"
flags_bytes=$(wc -c <"$tmp/flags-body.json")
[[ $flags_bytes -gt 2 ]] || die "empty flags response"
start ceiling "$tmp/ceiling" -addr 127.0.0.1:0 -body "$tmp/flags-body.json"
ceiling="http://$(listen_addr ceiling "$last_pid")"
log "ceiling on $ceiling, serving the $flags_bytes-byte flags body"

expect_status 200 -H "X-Environment-Key: $client_key" -H 'Content-Type: application/json' \
	--data-binary "@$IDENTITY_BODY" "$proxy/api/v1/identities/"
identity_bytes=$(wc -c <"$tmp/probe.out")
expect_status 200 -H "X-Environment-Key: $client_key" "$proxy/api/v1/identities/?identifier=probe_user"
# OFREP evaluates the same identity: the body file's traits as the context
# (bench/ofrep-post.lua builds it the same way).
ofrep_context=$(sed -n 's/.*"traits"[[:space:]]*:[[:space:]]*\[\(.*\)\].*/\1/p' "$IDENTITY_BODY" |
	sed 's/{[[:space:]]*"trait_key"[[:space:]]*:[[:space:]]*\("[^"]*"\)[[:space:]]*,[[:space:]]*"trait_value"[[:space:]]*:[[:space:]]*\([^}]*[^[:space:]}]\)[[:space:]]*}/\1: \2/g')
[[ -n $ofrep_context ]] || die "no traits in $IDENTITY_BODY for the OFREP context"
printf '{"context": {"targetingKey": "probe_user", %s}}' "$ofrep_context" >"$tmp/ofrep-body.json"
expect_status 200 -H "X-Environment-Key: $client_key" -H 'Content-Type: application/json' \
	--data-binary "@$tmp/ofrep-body.json" "$proxy/ofrep/v1/evaluate/flags"
ofrep_bytes=$(wc -c <"$tmp/probe.out")
ofrep_flag=$(grep -o '"key":"[^"]*"' "$tmp/probe.out" | head -n1 | cut -d'"' -f4)
[[ -n $ofrep_flag ]] || die "the OFREP bulk answer lists no flag"
expect_status 200 -H "X-Environment-Key: $client_key" -H 'Content-Type: application/json' \
	--data-binary "@$tmp/ofrep-body.json" "$proxy/ofrep/v1/evaluate/flags/$ofrep_flag"

run_wrk ceiling_a -H "X-Environment-Key: $client_key" "$ceiling/api/v1/flags/"
run_wrk flags -H "X-Environment-Key: $client_key" "$proxy/api/v1/flags/"
run_wrk identities_post -s "$here/identities-post.lua" -H "X-Environment-Key: $client_key" \
	-H 'Content-Type: application/json' "$proxy/api/v1/identities/" -- "$IDENTITY_BODY"
run_wrk identities_get -s "$here/identities-get.lua" -H "X-Environment-Key: $client_key" \
	"$proxy/api/v1/identities/"
# OpenFeature (OFREP): the same identity in bulk and for one flag, then the
# identities endpoint again, so its cost is the mean of a run before and one
# after the OFREP runs, as the ceiling's is.
run_wrk ofrep_bulk -s "$here/ofrep-post.lua" -H "X-Environment-Key: $client_key" \
	"$proxy/ofrep/v1/evaluate/flags" -- "$IDENTITY_BODY"
run_wrk ofrep_flag -s "$here/ofrep-post.lua" -H "X-Environment-Key: $client_key" \
	"$proxy/ofrep/v1/evaluate/flags/$ofrep_flag" -- "$IDENTITY_BODY"
run_wrk identities_post_b -s "$here/identities-post.lua" -H "X-Environment-Key: $client_key" \
	-H 'Content-Type: application/json' "$proxy/api/v1/identities/" -- "$IDENTITY_BODY"
identities_mean=$(((RPS[identities_post] + RPS[identities_post_b]) / 2))
# The ceiling again, last: the ratios use the mean of the runs before and
# after the proxy's, so a drift in the machine's speed is shared out.
run_wrk ceiling_b -H "X-Environment-Key: $client_key" "$ceiling/api/v1/flags/"
RPS[ceiling]=$(((RPS[ceiling_a] + RPS[ceiling_b]) / 2))
BAD[ceiling]=$((BAD[ceiling_a] + BAD[ceiling_b]))
P50[ceiling]=$(awk -v a="${P50[ceiling_a]}" -v b="${P50[ceiling_b]}" 'BEGIN { printf "%.3f", (a + b) / 2 }')
P99[ceiling]=$(awk -v a="${P99[ceiling_a]}" -v b="${P99[ceiling_b]}" 'BEGIN { printf "%.3f", (a + b) / 2 }')

# Constant rate: each proxy endpoint at half its own maximum, and the ceiling
# at that same offered rate. Go's HTTP client (vegeta) asks for gzip unless a
# request names an Accept-Encoding; wrk asks for none, and the ceiling never
# compresses, so every target says "identity": same bytes as the wrk runs.
printf 'GET %s/api/v1/flags/\nX-Environment-Key: %s\nAccept-Encoding: identity\n' "$proxy" "$client_key" >"$tmp/t-flags.txt"
printf 'GET %s/api/v1/flags/\nX-Environment-Key: %s\nAccept-Encoding: identity\n' "$ceiling" "$client_key" >"$tmp/t-ceiling.txt"
"$tmp/targets" -mode post -url "$proxy/api/v1/identities/" -key "$client_key" \
	-header "Accept-Encoding: identity" -body "$IDENTITY_BODY" -n 10000 >"$tmp/t-identities_post.jsonl"
"$tmp/targets" -mode get -url "$proxy/api/v1/identities/" -key "$client_key" \
	-header "Accept-Encoding: identity" -n 10000 >"$tmp/t-identities_get.jsonl"
# The ceiling gets the very same requests at the same rate (it ignores their
# bodies and queries), so both sides of a comparison carry the same load.
"$tmp/targets" -mode post -url "$ceiling/api/v1/identities/" -key "$client_key" \
	-header "Accept-Encoding: identity" -body "$IDENTITY_BODY" -n 10000 >"$tmp/t-ceiling-identities_post.jsonl"
"$tmp/targets" -mode get -url "$ceiling/api/v1/identities/" -key "$client_key" \
	-header "Accept-Encoding: identity" -n 10000 >"$tmp/t-ceiling-identities_get.jsonl"
# A single 10 s p99 on a shared 2-core machine swings by 2x from run to run,
# so the proxy and the ceiling alternate VEGETA_REPEAT times and each reports
# its median p99 (and median p50, median throughput, worst success ratio).
worst() { printf '%s\n' "$@" | sort -g | head -n1; }
declare -A HALF
for ep in flags identities_post identities_get; do
	HALF[$ep]=$((RPS[$ep] / 2))
	[[ ${HALF[$ep]} -gt 0 ]] || die "no measured rate for $ep"
	for ((r = 1; r <= VEGETA_REPEAT; r++)); do
		case $ep in
		flags) run_vegeta "${ep}_$r" "${HALF[$ep]}" "$tmp/t-flags.txt" http ;;
		*) run_vegeta "${ep}_$r" "${HALF[$ep]}" "$tmp/t-$ep.jsonl" json ;;
		esac
		case $ep in
		flags) run_vegeta "ceiling_at_${ep}_$r" "${HALF[$ep]}" "$tmp/t-ceiling.txt" http ;;
		*) run_vegeta "ceiling_at_${ep}_$r" "${HALF[$ep]}" "$tmp/t-ceiling-$ep.jsonl" json ;;
		esac
	done
	for name in "$ep" "ceiling_at_$ep"; do
		p50s=() p99s=() oks=() rates=()
		for ((r = 1; r <= VEGETA_REPEAT; r++)); do
			p50s+=("${VP50[${name}_$r]}") p99s+=("${VP99[${name}_$r]}")
			oks+=("${VOK[${name}_$r]}") rates+=("${VRATE[${name}_$r]}")
		done
		VP50[$name]=$(median "${p50s[@]}") VP99[$name]=$(median "${p99s[@]}")
		VOK[$name]=$(worst "${oks[@]}") VRATE[$name]=$(median "${rates[@]}")
		log "$name p99 over $VEGETA_REPEAT runs: ${p99s[*]} ms (median ${VP99[$name]})"
	done
done

rss1=$(rss_kib "$proxy_pid" VmRSS)
hwm1=$(rss_kib "$proxy_pid" VmHWM)
log "proxy RSS after the load (1 environment): $(mib "$rss1") MiB (peak $(mib "$hwm1") MiB)"
stop "$proxy_pid"

# ---------------------------------------------------------------- N environments
start upstream_n "$tmp/upstream" -addr 127.0.0.1:0 -document "$DOCUMENT" -copies "$ENVS"
upstream_n=$(listen_addr upstream_n "$last_pid")
pairs="" keys=()
for ((i = 1; i <= ENVS; i++)); do
	pairs+="${pairs:+, }{\"server_side_key\": \"$SERVER_KEY-$i\", \"client_side_key\": \"$client_key-$i\"}"
	keys+=("$client_key-$i")
done
port=$(free_port)
write_config "$tmp/config-$ENVS.json" "$upstream_n" "$port" "[$pairs]"
log "restarting the proxy with $ENVS environments on 127.0.0.1:$port"
start_proxy proxy_n "$tmp/config-$ENVS.json" "$port"
for k in "${keys[@]}"; do
	expect_status 200 -H "X-Environment-Key: $k" "$proxy/api/v1/flags/"
done
rssn_idle=$(rss_kib "$proxy_pid" VmRSS)
log "wrk flags over $ENVS keys for $RSS_DURATION"
"$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$RSS_DURATION" -s "$here/flags-keys.lua" \
	"$proxy/api/v1/flags/" -- "${keys[@]}" >"$tmp/wrk-flags-$ENVS.txt"
sed 's/^/    /' "$tmp/wrk-flags-$ENVS.txt" >&2
rssn=$(rss_kib "$proxy_pid" VmRSS)
hwmn=$(rss_kib "$proxy_pid" VmHWM)
log "proxy RSS with $ENVS environments: $(mib "$rssn_idle") MiB ready, $(mib "$rssn") MiB after load (peak $(mib "$hwmn") MiB)"
stop "$proxy_pid"

# ---------------------------------------------------------------- summary
verdict() { if "$@"; then echo PASS; else echo FAIL; fi; }
valid() { [[ ${BAD[$1]} == 0 ]]; }
ratio_ok() { valid "$1" && ge "$(pct "${RPS[$1]}" "${RPS[ceiling]}")" "$2"; }
# p99_ok EP: every request answered, the offered rate reached (≥ 95%), and the
# p99 within 1.5× the ceiling's at the same offered rate.
p99_ok() {
	ge "${VOK[$1]}" 99.9 && ge "${VRATE[$1]}" "$((HALF[$1] * 95 / 100))" && awk -v a="${VP99[$1]}" -v b="${VP99[ceiling_at_$1]}" 'BEGIN { exit !(a <= 1.5 * b) }'
}
# shellcheck disable=SC2317 # called through verdict
rss_ok() { awk -v k="$rssn" 'BEGIN { exit !(k < 40 * 1024) }'; }
# cost EP: how many times the identities endpoint's cost (1 / req/s) a
# request to EP costs.
cost() { awk -v a="$identities_mean" -v b="${RPS[$1]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# shellcheck disable=SC2317 # called through verdict
cost_ok() { valid "$1" && valid identities_post && valid identities_post_b && awk -v c="$(cost "$1")" -v m="$2" 'BEGIN { exit !(c <= m) }'; }
note() { [[ ${BAD[$1]} == 0 ]] || printf ' (%s errors/non-2xx)' "${BAD[$1]}"; }

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
{
	echo
	echo "## Edge proxy benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "- machine: \`nproc\` = $(nproc), ${cpu:-unknown CPU}, $(uname -sr); $("$GO" version | awk '{ print $3 }'); load average before the run: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- load generator on the same machine: wrk -t$THREADS -c$CONNECTIONS -d$DURATION ($([[ $WARMUP =~ ^0[a-z]*$ ]] && echo "no warm-up" || echo "after a $WARMUP warm-up")), vegeta $("$GO" version -m "$VEGETA" 2>/dev/null | awk '$1 == "mod" { print $3; exit }') $VEGETA_DURATION per constant-rate run, $VEGETA_REPEAT alternating runs each, medians shown (at most $VEGETA_MAX_WORKERS in flight; 0 = unbounded)"
	echo "- document: $(basename "$DOCUMENT") ($(wc -c <"$DOCUMENT") bytes); flags response $flags_bytes bytes, identities response $identity_bytes bytes; ceiling: bare net/http writing the flags bytes"
	echo
	echo "| endpoint | req/s | % of ceiling | p50 ms | p99 ms | target | result |"
	echo "|---|---:|---:|---:|---:|---|---|"
	echo "| ceiling (net/http, same bytes; mean of ${RPS[ceiling_a]} before and ${RPS[ceiling_b]} after)$(note ceiling) | ${RPS[ceiling]} | 100 | ${P50[ceiling]} | ${P99[ceiling]} | | |"
	echo "| GET /api/v1/flags/ | ${RPS[flags]}$(note flags) | $(pct "${RPS[flags]}" "${RPS[ceiling]}") | ${P50[flags]} | ${P99[flags]} | ≥ 90% | $(verdict ratio_ok flags 90) |"
	echo "| POST /api/v1/identities/ (5 traits) | ${RPS[identities_post]}$(note identities_post) | $(pct "${RPS[identities_post]}" "${RPS[ceiling]}") | ${P50[identities_post]} | ${P99[identities_post]} | ≥ 75% | $(verdict ratio_ok identities_post 75) |"
	echo "| GET /api/v1/identities/?identifier= | ${RPS[identities_get]}$(note identities_get) | $(pct "${RPS[identities_get]}" "${RPS[ceiling]}") | ${P50[identities_get]} | ${P99[identities_get]} | (≥ 60%, informative) | $(ratio_ok identities_get 60 && echo ok || echo below) |"
	echo
	echo "OpenFeature (OFREP), the same identity and traits as POST /api/v1/identities/ (mean of ${RPS[identities_post]} req/s before and ${RPS[identities_post_b]} after: $identities_mean); cost = identities req/s ÷ OFREP req/s; bulk answer $ofrep_bytes bytes:"
	echo
	echo "| endpoint | req/s | cost vs identities | p50 ms | p99 ms | target | result |"
	echo "|---|---:|---:|---:|---:|---|---|"
	echo "| POST /ofrep/v1/evaluate/flags (bulk) | ${RPS[ofrep_bulk]}$(note ofrep_bulk) | $(cost ofrep_bulk)× | ${P50[ofrep_bulk]} | ${P99[ofrep_bulk]} | ≤ 1.3× | $(verdict cost_ok ofrep_bulk 1.3) |"
	echo "| POST /ofrep/v1/evaluate/flags/$ofrep_flag | ${RPS[ofrep_flag]}$(note ofrep_flag) | $(cost ofrep_flag)× | ${P50[ofrep_flag]} | ${P99[ofrep_flag]} | (informative) | |"
	echo
	echo "| constant rate (vegeta, half the endpoint's max) | offered req/s | achieved proxy / ceiling | proxy p50 ms | proxy p99 ms | ceiling p99 ms | p99 ratio | success | target | result |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
	for ep in flags identities_post identities_get; do
		case $ep in
		flags) label="GET /api/v1/flags/" tgt="≤ 1.5×" ;;
		identities_post) label="POST /api/v1/identities/" tgt="≤ 1.5×" ;;
		identities_get) label="GET /api/v1/identities/" tgt="(≤ 1.5×, informative)" ;;
		esac
		r=$(awk -v a="${VP99[$ep]}" -v b="${VP99[ceiling_at_$ep]}" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }')
		if [[ $ep == identities_get ]]; then res=$(p99_ok "$ep" && echo ok || echo above); else res=$(verdict p99_ok "$ep"); fi
		echo "| $label | ${HALF[$ep]} | ${VRATE[$ep]} / ${VRATE[ceiling_at_$ep]} | ${VP50[$ep]} | ${VP99[$ep]} | ${VP99[ceiling_at_$ep]} | $r | ${VOK[$ep]}% | $tgt | $res |"
	done
	echo
	echo "| memory (VmRSS) | RSS MiB | peak (VmHWM) MiB | target | result |"
	echo "|---|---:|---:|---|---|"
	echo "| 1 environment, after the runs above | $(mib "$rss1") | $(mib "$hwm1") | | |"
	echo "| $ENVS environments, ready | $(mib "$rssn_idle") | | | |"
	echo "| $ENVS environments, after $RSS_DURATION of flags load | $(mib "$rssn") | $(mib "$hwmn") | < 40 MiB | $(verdict rss_ok) |"
	echo
	echo "Binary (\`go build\`, not stripped): $(awk -v b="$(wc -c <"$tmp/edge-proxy")" 'BEGIN { printf "%.1f MiB", b / 1048576 }')."
} >"$tmp/summary.md"
fails=$(grep -c '| FAIL |$' "$tmp/summary.md" || true)
cat "$tmp/summary.md"
if [[ $fails -gt 0 ]]; then
	echo
	echo "$fails target(s) FAILED."
	[[ $STRICT == 1 ]] && exit 1
fi
exit 0
