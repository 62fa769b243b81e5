#!/usr/bin/env bash
# pages.sh: a paginated environment document through the edge proxy, checked with a real
# client. gopages/ (its own Go module) serves a document in three pages, as Flagsmith's Edge
# API splits a large one, runs the given proxy binary against it, and evaluates identities
# with Flagsmith's Go SDK v4 in local-evaluation mode through the proxy: overrides found only
# on pages 2 and 3 must apply. Exit status: 0 pass, 1 failure, 2 setup problem.
#
# Usage: sdkcompat/pages.sh PATH_TO_EDGE_PROXY_BINARY
set -euo pipefail

die() { echo "sdkcompat/pages.sh: $*" >&2; exit 2; }
[[ $# -eq 1 ]] || die "usage: $0 PATH_TO_EDGE_PROXY_BINARY"
[[ -f "$1" && -x "$1" ]] || die "proxy binary '$1' does not exist or is not executable"
command -v go >/dev/null 2>&1 || die "go is not installed (needed to build the Go SDK harness in gopages/)"
command -v timeout >/dev/null 2>&1 || die "timeout (GNU coreutils) is not installed"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
binary="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
harness="$(mktemp -d "${TMPDIR:-/tmp}/sdkcompat-pages.XXXXXX")"
trap 'rm -rf "$harness"' EXIT

# The module is fetched from the Go module proxy; go.sum pins it.
(cd "$here/gopages" && GONOSUMDB=github.com/Flagsmith/flagsmith-go-client/v4 GOFLAGS=-mod=readonly \
	go build -o "$harness/gopages" .) >&2 || die "could not build gopages (Go module download?)"

status=0
timeout 60 "$harness/gopages" "$binary" "$here/document.json" || status=$?
((status == 124)) && { echo "sdkcompat/pages.sh: gopages did not finish within 60 s" >&2; status=1; }
exit "$status"
