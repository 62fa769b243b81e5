package main

import (
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"
)

// This file is the proxy's shape: the server, its configured environments,
// and the API table.

// server is the proxy: its environments, their snapshots, and the HTTP API.
// It is safe for concurrent use; request handlers only Load snapshots.
type server struct {
	cfg    Config
	log    *slog.Logger
	envs   []*environment
	byKey  map[string]keyRef
	hub    *hub
	stats  *metrics
	mux    *http.ServeMux
	now    func() time.Time
	origin map[string]bool // allowed CORS origins; nil allows any

	// stopping turns readiness off while the server drains.
	stopping atomic.Bool

	// certs serves the TLS certificate; nil when serving plain HTTP.
	certs *certReloader
	// analytics sums flag evaluation counts for Flagsmith; nil when
	// analytics.enabled is false.
	analytics *analytics
}

type keyRef struct {
	env  *environment
	kind keyKind
}

func newServer(cfg Config, log *slog.Logger) *server {
	s := &server{cfg: cfg, log: log, byKey: map[string]keyRef{}, now: time.Now}
	s.stats = newMetrics()
	s.hub = newHub(cfg.SSE.MaxSubscribers)
	for _, p := range cfg.EnvironmentKeyPairs {
		env := newEnvironment(p)
		s.envs = append(s.envs, env)
		s.byKey[p.ClientSideKey] = keyRef{env, clientKey}
		s.byKey[string(p.ServerSideKey)] = keyRef{env, serverKey}
	}
	for _, o := range cfg.AllowOrigins {
		if o == "*" {
			s.origin = nil
			break
		}
		if s.origin == nil {
			s.origin = map[string]bool{}
		}
		s.origin[o] = true
	}
	if cfg.Analytics.Enabled {
		s.analytics = newAnalytics(cfg, s.envs)
	}
	s.mux = s.routes()
	return s
}

// routes is the API table. Each SDK path answers with and without its
// trailing slash.
func (s *server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	both := func(method, path string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+path+"/{$}", h)
		mux.HandleFunc(method+" "+path, h)
	}
	both("GET", "/api/v1/flags", s.handleFlags)
	both("GET", "/api/v1/identities", s.handleIdentitiesGet)
	both("POST", "/api/v1/identities", s.handleIdentitiesPost)
	both("GET", "/api/v1/environment-document", s.handleEnvironmentDocument)
	both("GET", "/proxy/health", s.handleReadiness)
	both("GET", "/proxy/health/readiness", s.handleReadiness)
	both("GET", "/health", s.handleReadiness)
	both("GET", "/proxy/health/liveness", s.handleLiveness)
	both("GET", "/sse/environments/{client_key}/stream", s.handleStream)
	both("GET", "/sse/health", s.handleSSEHealth)
	both("POST", "/proxy/refresh", s.handleRefresh)
	both("POST", "/proxy/webhook", s.handleWebhook)
	both("POST", "/sse/environments/{client_key}/queue-change", s.handleQueueChange)
	if s.analytics != nil {
		both("POST", "/api/v1/analytics/flags", s.handleAnalyticsV1)
		both("POST", "/api/v2/analytics/flags", s.handleAnalyticsV2)
	}
	mux.HandleFunc("POST /ofrep/v1/evaluate/flags", s.handleOFREPBulk)
	mux.HandleFunc("POST /ofrep/v1/evaluate/flags/{key...}", s.handleOFREPFlag)
	mux.HandleFunc("/ofrep/v1/evaluate/flags", s.handleOFREPMethodNotAllowed)
	mux.HandleFunc("/ofrep/v1/evaluate/flags/{key...}", s.handleOFREPMethodNotAllowed)
	mux.HandleFunc("GET /metrics", s.handleMetrics)
	mux.HandleFunc("/", s.handleUnrouted)
	return mux
}

// handler is the whole HTTP stack: recovery, CORS, the request limits, then
// the routes, with metrics and the access log around them.
func (s *server) handler() http.Handler {
	return s.observe(s.cors(s.limitRequest(s.mux)))
}

// environment is one configured key pair and its current snapshot.
type environment struct {
	pair    KeyPair
	snap    atomic.Pointer[snapshot]
	refresh chan struct{} // buffered 1: refresh requests coalesce

	// lastSuccess is when a poll last confirmed the held document (a new
	// document, a 304, or an unchanged file), as Unix nanoseconds; 0 never.
	lastSuccess atomic.Int64
	// compiling is set while a newly received document compiles: the
	// upstream has just answered, so readiness counts the environment as
	// fresh however long a large document takes.
	compiling atomic.Bool
}

func newEnvironment(p KeyPair) *environment {
	return &environment{pair: p, refresh: make(chan struct{}, 1)}
}

// triggerRefresh asks the poller for an immediate poll. Calls made while one
// is pending or in flight coalesce into it.
func (e *environment) triggerRefresh() {
	select {
	case e.refresh <- struct{}{}:
	default:
	}
}
