package main

import (
	"bytes"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// metrics holds the Prometheus counters. Every label set is bounded when
// the server starts (the routes registered in routes(), status codes,
// environments), so the request path only does atomic adds and never labels
// by identifier or unknown key.
type metrics struct {
	// routes maps a route name (routeName of a pattern routes() registers)
	// to its stats. It is derived from the pattern the mux matched, so a
	// route added to routes() is counted with no second list to update.
	// Loads are lock-free; a name is stored on its first request.
	routes sync.Map

	mu    sync.Mutex // guards envs; taken by pollers and scrapes, never by requests
	envs  map[string]*envStats
	start time.Time

	// Configuration reloads by result, and whether the last one applied.
	reloadsOK, reloadsRejected atomic.Uint64
	lastReloadRejected         atomic.Bool
	// pushes counts accepted pushes by kind (pushKinds).
	pushes [len(pushKinds)]atomic.Uint64
}

// latencyBuckets are the histogram's upper bounds in seconds: the proxy
// answers in microseconds, the tail shows up in milliseconds.
var latencyBuckets = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1}

// trackedStatuses are the status codes the proxy produces; anything else is
// counted as "other".
var trackedStatuses = [...]int{200, 202, 204, 304, 400, 401, 404, 405, 413, 500, 503}

type routeStats struct {
	byStatus [len(trackedStatuses) + 1]atomic.Uint64 // trackedStatuses, then other
	buckets  [len(latencyBuckets)]atomic.Uint64      // not cumulative; summed on scrape
	count    atomic.Uint64
	sumNanos atomic.Uint64
}

type envStats struct {
	polls         map[string]uint64
	fullRefreshes uint64
	bodyBytes     uint64 // document bytes read from the upstream
	pagesFetched  uint64 // document pages read whole from the upstream

	// The upstream realtime stream (realtime_api_url).
	streamConnected bool
	streamConnects  uint64
	streamEvents    uint64
	streamPolls     uint64 // events newer than the held document
}

func newMetrics() *metrics {
	return &metrics{envs: map[string]*envStats{}, start: time.Now()}
}

// routeName turns a mux pattern into a low-cardinality metrics label: the
// path without its method or trailing slash; the catch-all "/" is
// "unrouted". The stream keeps the label it had before its pattern named
// the key.
func routeName(pattern string) string {
	_, path, found := strings.Cut(pattern, " ")
	if !found {
		path = pattern
	}
	path = strings.TrimSuffix(strings.TrimSuffix(path, "{$}"), "/")
	switch path {
	case "":
		return "unrouted"
	case "/sse/environments/{client_key}/stream":
		return "/sse/environments/stream"
	}
	return path
}

func (m *metrics) observeRequest(route string, status int, d time.Duration) {
	v, ok := m.routes.Load(route)
	if !ok {
		v, _ = m.routes.LoadOrStore(route, &routeStats{})
	}
	rs := v.(*routeStats)
	idx := len(trackedStatuses)
	for i, s := range trackedStatuses {
		if s == status {
			idx = i
			break
		}
	}
	rs.byStatus[idx].Add(1)
	secs := d.Seconds()
	for i, b := range latencyBuckets {
		if secs <= b {
			rs.buckets[i].Add(1)
			break
		}
	}
	rs.count.Add(1)
	rs.sumNanos.Add(uint64(d))
}

func (m *metrics) env(key string) *envStats {
	e := m.envs[key]
	if e == nil {
		e = &envStats{polls: map[string]uint64{}}
		m.envs[key] = e
	}
	return e
}

// observePoll counts one poll by result: ok, not_modified, error, invalid.
// observePoll counts a poll of the upstream by its outcome, with the bytes
// and whole pages it read and whether it was a full refresh.
func (m *metrics) observePoll(key string, res pollResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.env(key)
	e.polls[res.outcome]++
	e.bodyBytes += uint64(res.bodyBytes)
	e.pagesFetched += uint64(res.pagesRead)
	if res.fullRefresh {
		e.fullRefreshes++
	}
}

// observeStream records the upstream stream's state: connected, or not.
func (m *metrics) observeStream(key string, connected bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.env(key)
	if connected && !e.streamConnected {
		e.streamConnects++
	}
	e.streamConnected = connected
}

// observeStreamEvent counts an upstream event; newer says it caused a poll.
func (m *metrics) observeStreamEvent(key string, newer bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.env(key)
	e.streamEvents++
	if newer {
		e.streamPolls++
	}
}

// pushKinds are the ways a change is pushed to the proxy.
var pushKinds = [...]string{"refresh", "webhook", "queue_change"}

func (m *metrics) observePush(kind string) {
	for i, k := range pushKinds {
		if k == kind {
			m.pushes[i].Add(1)
			return
		}
	}
}

// observeReload counts one configuration reload, applied or rejected.
func (m *metrics) observeReload(applied bool) {
	if applied {
		m.reloadsOK.Add(1)
	} else {
		m.reloadsRejected.Add(1)
	}
	m.lastReloadRejected.Store(!applied)
}

func (s *server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(s.exposition())
}

// exposition renders the Prometheus text format.
func (s *server) exposition() []byte {
	var b bytes.Buffer
	m := s.stats
	help := func(name, typ, text string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, typ)
	}
	var routes []string
	stats := map[string]*routeStats{}
	m.routes.Range(func(k, v any) bool {
		routes = append(routes, k.(string))
		stats[k.(string)] = v.(*routeStats)
		return true
	})
	sort.Strings(routes)

	help("edge_proxy_http_requests_total", "counter", "HTTP requests by route and status code.")
	for _, route := range routes {
		rs := stats[route]
		for i := range rs.byStatus {
			n := rs.byStatus[i].Load()
			if n == 0 {
				continue
			}
			code := "other"
			if i < len(trackedStatuses) {
				code = strconv.Itoa(trackedStatuses[i])
			}
			fmt.Fprintf(&b, "edge_proxy_http_requests_total{route=%s,code=%s} %d\n", label(route), label(code), n)
		}
	}
	help("edge_proxy_http_request_duration_seconds", "histogram", "HTTP request latency by route.")
	for _, route := range routes {
		rs := stats[route]
		count := rs.count.Load()
		if count == 0 {
			continue
		}
		var cum uint64
		for i, le := range latencyBuckets {
			cum += rs.buckets[i].Load()
			fmt.Fprintf(&b, "edge_proxy_http_request_duration_seconds_bucket{route=%s,le=%s} %d\n", label(route), label(strconv.FormatFloat(le, 'g', -1, 64)), cum)
		}
		fmt.Fprintf(&b, "edge_proxy_http_request_duration_seconds_bucket{route=%s,le=\"+Inf\"} %d\n", label(route), count)
		fmt.Fprintf(&b, "edge_proxy_http_request_duration_seconds_sum{route=%s} %g\n", label(route), float64(rs.sumNanos.Load())/1e9)
		fmt.Fprintf(&b, "edge_proxy_http_request_duration_seconds_count{route=%s} %d\n", label(route), count)
	}

	now := s.now()
	envs := s.environments()
	help("edge_proxy_polls_total", "counter", "Upstream polls by environment and result.")
	m.mu.Lock()
	for _, env := range envs {
		key := env.pair.ClientSideKey
		e := m.env(key)
		results := make([]string, 0, len(e.polls))
		for r := range e.polls {
			results = append(results, r)
		}
		sort.Strings(results)
		for _, r := range results {
			fmt.Fprintf(&b, "edge_proxy_polls_total{environment=%s,result=%s} %d\n", label(key), label(r), e.polls[r])
		}
	}
	help("edge_proxy_document_updated_at_seconds", "gauge", "The updated_at of each environment's current document, Unix seconds.")
	for _, env := range envs {
		if snap := env.snap.Load(); snap != nil && !snap.updatedAt.IsZero() {
			fmt.Fprintf(&b, "edge_proxy_document_updated_at_seconds{environment=%s} %f\n", label(env.pair.ClientSideKey), float64(snap.updatedAt.UnixMicro())/1e6)
		}
	}
	help("edge_proxy_snapshot_compile_seconds", "gauge", "Time to compile each environment's current document into a snapshot.")
	for _, env := range envs {
		if snap := env.snap.Load(); snap != nil {
			fmt.Fprintf(&b, "edge_proxy_snapshot_compile_seconds{environment=%s} %g\n", label(env.pair.ClientSideKey), snap.compile.Seconds())
		}
	}
	help("edge_proxy_upstream_body_bytes_total", "counter", "Document bytes read from the upstream, by environment (a 304 reads none).")
	for _, env := range s.environments() {
		fmt.Fprintf(&b, "edge_proxy_upstream_body_bytes_total{environment=%s} %d\n", label(env.pair.ClientSideKey), m.env(env.pair.ClientSideKey).bodyBytes)
	}
	help("edge_proxy_document_pages_fetched_total", "counter", "Document pages read whole from the upstream, by environment: one per poll that brings a document, more when the upstream paginates it (a 304 reads none).")
	for _, env := range s.environments() {
		fmt.Fprintf(&b, "edge_proxy_document_pages_fetched_total{environment=%s} %d\n", label(env.pair.ClientSideKey), m.env(env.pair.ClientSideKey).pagesFetched)
	}
	help("edge_proxy_document_pages", "gauge", "Pages of each environment's last document fetched whole from the upstream (1 unless the upstream paginates it).")
	for _, env := range s.environments() {
		if n := env.documentPages.Load(); n > 0 {
			fmt.Fprintf(&b, "edge_proxy_document_pages{environment=%s} %d\n", label(env.pair.ClientSideKey), n)
		}
	}
	help("edge_proxy_full_refreshes_total", "counter", "Polls sent without conditions because full_refresh_seconds had passed.")
	for _, env := range s.environments() {
		fmt.Fprintf(&b, "edge_proxy_full_refreshes_total{environment=%s} %d\n", label(env.pair.ClientSideKey), m.env(env.pair.ClientSideKey).fullRefreshes)
	}
	if s.config().RealtimeAPIURL != "" {
		help("edge_proxy_upstream_stream_connected", "gauge", "Whether the upstream realtime stream (realtime_api_url) of each environment is open.")
		for _, env := range s.environments() {
			if env.pair.DocumentPath == "" {
				fmt.Fprintf(&b, "edge_proxy_upstream_stream_connected{environment=%s} %d\n", label(env.pair.ClientSideKey), b2i(m.env(env.pair.ClientSideKey).streamConnected))
			}
		}
		help("edge_proxy_upstream_stream_connects_total", "counter", "Upstream realtime stream connections opened.")
		for _, env := range s.environments() {
			if env.pair.DocumentPath == "" {
				fmt.Fprintf(&b, "edge_proxy_upstream_stream_connects_total{environment=%s} %d\n", label(env.pair.ClientSideKey), m.env(env.pair.ClientSideKey).streamConnects)
			}
		}
		help("edge_proxy_upstream_stream_events_total", "counter", "Upstream realtime events received; newer=true ones announced a document newer than the held one and caused a poll.")
		for _, env := range s.environments() {
			if env.pair.DocumentPath == "" {
				e := m.env(env.pair.ClientSideKey)
				fmt.Fprintf(&b, "edge_proxy_upstream_stream_events_total{environment=%s,newer=\"true\"} %d\n", label(env.pair.ClientSideKey), e.streamPolls)
				fmt.Fprintf(&b, "edge_proxy_upstream_stream_events_total{environment=%s,newer=\"false\"} %d\n", label(env.pair.ClientSideKey), e.streamEvents-e.streamPolls)
			}
		}
	}
	m.mu.Unlock()
	help("edge_proxy_pushes_total", "counter", "Accepted pushes by kind: POST /proxy/refresh, /proxy/webhook, /sse/environments/{key}/queue-change.")
	for i, kind := range pushKinds {
		fmt.Fprintf(&b, "edge_proxy_pushes_total{kind=%s} %d\n", label(kind), m.pushes[i].Load())
	}
	help("edge_proxy_seconds_since_last_update", "gauge", "Seconds since each environment's document was last confirmed by a successful poll.")
	for _, env := range envs {
		if last := env.lastSuccess.Load(); last != 0 {
			fmt.Fprintf(&b, "edge_proxy_seconds_since_last_update{environment=%s} %g\n", label(env.pair.ClientSideKey), now.Sub(time.Unix(0, last)).Seconds())
		}
	}
	s.writeRelayMetrics(&b)
	s.writePeerMetrics(&b)
	s.writeIdentityWorkerMetrics(&b)
	help("edge_proxy_sse_subscribers", "gauge", "Open realtime streams.")
	fmt.Fprintf(&b, "edge_proxy_sse_subscribers %d\n", s.hub.subscribers())
	help("edge_proxy_sse_refused_total", "counter", "Realtime streams refused with 503 because sse.max_subscribers were open (full).")
	fmt.Fprintf(&b, "edge_proxy_sse_refused_total{reason=\"full\"} %d\n", s.hub.refusedTotal())
	if s.certs != nil {
		s.certs.writeMetrics(&b)
	}
	help("edge_proxy_config_reloads_total", "counter", "Configuration reloads by result: applied (ok) or rejected, keeping the running configuration (error).")
	fmt.Fprintf(&b, "edge_proxy_config_reloads_total{result=\"error\"} %d\n", m.reloadsRejected.Load())
	fmt.Fprintf(&b, "edge_proxy_config_reloads_total{result=\"ok\"} %d\n", m.reloadsOK.Load())
	help("edge_proxy_config_last_reload_successful", "gauge", "1 unless the last configuration reload was rejected.")
	lastOK := 1
	if m.lastReloadRejected.Load() {
		lastOK = 0
	}
	fmt.Fprintf(&b, "edge_proxy_config_last_reload_successful %d\n", lastOK)
	help("edge_proxy_uptime_seconds", "gauge", "Seconds since the process started.")
	fmt.Fprintf(&b, "edge_proxy_uptime_seconds %g\n", now.Sub(m.start).Seconds())
	return b.Bytes()
}

// label quotes a label value as the Prometheus text format wants: only
// backslash, double quote and newline are escaped.
func label(v string) string {
	return `"` + labelEscaper.Replace(v) + `"`
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
