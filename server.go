package main

import (
	"context"
	"hash/maphash"
	"log/slog"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
)

// This file is the proxy's shape: the server, its configured environments,
// and the API table.

// server is the proxy: its environments, their snapshots, and the HTTP API.
// It is safe for concurrent use; request handlers only Load snapshots.
type server struct {
	log     *slog.Logger
	hub     *hub
	stats   *metrics
	mux     *http.ServeMux
	now     func() time.Time
	started time.Time

	// live is the configuration in force; a reload swaps it whole (reload.go).
	live atomic.Pointer[liveConfig]

	// stopping turns readiness off while the server drains.
	stopping atomic.Bool

	// pending bounds the bytes held for the upstream, analytics and events
	// of every environment (analytics.max_pending_bytes); decoding bounds
	// the analytics and events bodies read at once (maxDecodingBytes).
	pending  byteBudget
	decoding *semaphore.Weighted

	// certs serves the TLS certificate; nil when serving plain HTTP.
	certs *certReloader

	// fleet relays pushes to the other replicas (peers.go).
	fleet *fleet
	// verify and writeBack queue what identity requests hand to the
	// upstream off the request path (verify.go, writeback.go).
	verify    *verifier
	writeBack *writeBack

	// reloadMu serializes reloads with the starting and stopping of the
	// pollers; request handlers never take it. polling is what runLoops
	// runs pollers with, nil while they are not running.
	reloadMu sync.Mutex
	polling  *loopRunner
}

// liveConfig is a configuration and what requests derive from it: the
// environments and the key lookup. It is immutable once published: a reload
// builds a new one and swaps it in, so a request reads one consistent
// configuration with a single atomic load.
type liveConfig struct {
	cfg    *Config
	envs   []*environment
	byKey  map[string]keyRef
	origin map[string]bool // allowed CORS origins; nil allows any
	// generation counts the configurations loaded, 1 for the first;
	// loadedAt is when this one was. /proxy/status shows both.
	generation uint64
	loadedAt   time.Time
}

type keyRef struct {
	env  *environment
	kind keyKind
}

// config is the configuration in force. Callers must not modify it.
func (s *server) config() *Config { return s.live.Load().cfg }

// lookup finds the environment of a client or server key.
func (s *server) lookup(key string) (keyRef, bool) {
	ref, ok := s.live.Load().byKey[key]
	return ref, ok
}

// environments is the configured environments, in configuration order.
// Callers must not modify the slice.
func (s *server) environments() []*environment { return s.live.Load().envs }

func newServer(cfg Config, log *slog.Logger) *server {
	s := &server{log: log, now: time.Now, started: time.Now()}
	s.stats = newMetrics()
	s.fleet = newFleet()
	s.hub = newHub(cfg.SSE.MaxSubscribers)
	s.verify, s.writeBack = newVerifier(), newWriteBack()
	s.pending.max.Store(cfg.Analytics.MaxPendingBytes)
	s.decoding = semaphore.NewWeighted(maxDecodingBytes)
	s.live.Store(newLiveConfig(&cfg, nil, &s.pending))
	s.mux = s.routes()
	return s
}

// newLiveConfig derives the environments and lookups of cfg. An environment
// whose key pair is unchanged from prev is kept as it is (snapshot, poller,
// streams); every other pair gets a new environment, whose analytics and
// events hold their bytes in budget.
func newLiveConfig(cfg *Config, prev *liveConfig, budget *byteBudget) *liveConfig {
	l := &liveConfig{cfg: cfg, byKey: map[string]keyRef{}, generation: 1, loadedAt: time.Now()}
	if prev != nil {
		l.generation = prev.generation + 1
	}
	for _, p := range cfg.EnvironmentKeyPairs {
		env := prev.environment(p)
		if env == nil {
			env = newEnvironment(p)
			if cfg.Analytics.Enabled {
				env.analytics = newEnvAnalytics(env, cfg, budget)
				env.events = newEnvEvents(env, budget)
			}
		}
		l.envs = append(l.envs, env)
		l.byKey[p.ClientSideKey] = keyRef{env, clientKey}
		for _, k := range p.serverKeys() {
			l.byKey[string(k)] = keyRef{env, serverKey}
		}
	}
	for _, o := range cfg.AllowOrigins {
		if o == "*" {
			l.origin = nil
			break
		}
		if l.origin == nil {
			l.origin = map[string]bool{}
		}
		l.origin[o] = true
	}
	return l
}

// environment is the environment of exactly this key pair, nil if none.
func (l *liveConfig) environment(p KeyPair) *environment {
	if l == nil {
		return nil
	}
	for _, env := range l.envs {
		if env.pair.equal(p) {
			return env
		}
	}
	return nil
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
	both("GET", "/proxy/config", s.handleConfig)
	both("GET", "/proxy/status", s.handleStatus)
	both("POST", "/proxy/explain", s.handleExplain)
	both("POST", "/proxy/webhook", s.handleWebhook)
	both("POST", peerRefreshPath, s.handlePeerRefresh)
	both("POST", "/sse/environments/{client_key}/queue-change", s.handleQueueChange)
	if s.config().Analytics.Enabled {
		both("POST", "/api/v1/analytics/flags", s.analyticsHandler(decodeAnalyticsV1, http.StatusOK))
		both("POST", "/api/v2/analytics/flags", s.analyticsHandler(decodeAnalyticsV2, http.StatusNoContent))
		// SDKs post to {events_api_url}v1/events: the proxy's base URL as
		// events_api_url makes it this path.
		both("POST", "/v1/events", s.handleEvents)
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

// environment is one configured key pair and its current snapshot. Its pair
// never changes: a reload that changes a pair replaces the environment.
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

	// keyInUse indexes pair.serverKeys(): the key the upstream last
	// accepted, tried first by the next poll. Only the poller writes it.
	keyInUse atomic.Int32
	// documentPages is how many pages the last document fetched whole from
	// the upstream came in (1 unless it is paginated; 0 before the first).
	// Only the poller writes it; /metrics reads it.
	documentPages atomic.Int32
	// status is what the environment's loops last saw, for /proxy/status:
	// written by them, never read on the request path.
	status envStatus
	// nextPoll is when the poll loop (or file watcher) next wakes unless
	// a refresh comes first, as Unix nanoseconds; 0 before it first waits.
	nextPoll atomic.Int64

	// loops is the environment's running poll loop, nil when none runs;
	// guarded by server.reloadMu.
	loops *envLoops
	// analytics holds the flag evaluation counts waiting to be sent
	// upstream, events the events; nil when analytics.enabled is false.
	analytics *envAnalytics
	events    *envEvents
	// verify and writeBack count what shadow verification and trait
	// write-back did for the environment; hashSalt tells its identities
	// from another environment's in the memory of recent writes.
	verify    verifyStats
	writeBack writeBackStats
	hashSalt  uint64
	// arrived is closed when the environment holds its first document.
	arrived     chan struct{}
	arrivedOnce sync.Once
}

func newEnvironment(p KeyPair) *environment {
	return &environment{pair: p, refresh: make(chan struct{}, 1), arrived: make(chan struct{}),
		hashSalt: maphash.String(writeBackSeed, p.ClientSideKey)}
}

// serverKey is the server key to call the upstream with: the one the
// upstream last accepted (see pollOnce).
func (e *environment) serverKey() secret {
	keys := e.pair.serverKeys()
	return keys[int(e.keyInUse.Load())%len(keys)]
}

// store makes snap the environment's current snapshot.
func (e *environment) store(snap *snapshot) {
	e.snap.Store(snap)
	e.arrivedOnce.Do(func() { close(e.arrived) })
}

// equal reports whether two pairs configure the same environment the same
// way; an environment whose pair is unchanged survives a reload untouched.
func (p KeyPair) equal(q KeyPair) bool { return reflect.DeepEqual(p, q) }

// triggerRefresh asks the poller for an immediate poll. Calls made while one
// is pending or in flight coalesce into it.
func (e *environment) triggerRefresh() {
	select {
	case e.refresh <- struct{}{}:
	default:
	}
}

// runLoops runs every environment's loops (envLoops) until ctx ends, each
// in goroutines of its own, and returns once they have all stopped. One
// environment's failures or slowness never delay another's. While it runs,
// a reload starts the loops of added environments and stops those of
// removed ones (applyConfig).
func (s *server) runLoops(ctx context.Context, client *http.Client) error {
	s.reloadMu.Lock()
	s.polling = &loopRunner{ctx: ctx, client: client}
	for _, env := range s.environments() {
		s.startLoops(env)
	}
	s.reloadMu.Unlock()

	<-ctx.Done()
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.polling = nil
	for _, env := range s.environments() {
		env.stopLoops()
	}
	return nil
}

// loopRunner is what runLoops starts the environments' loops with.
type loopRunner struct {
	ctx    context.Context
	client *http.Client
}

// envLoops is one environment's running loops: its poll loop, with
// realtime_api_url its upstream stream, and with analytics forwarded its
// analytics and events flushers.
type envLoops struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the loops have returned
}

// startLoops starts env's loops, unless they run already or the pollers
// are not running. The caller holds s.reloadMu.
func (s *server) startLoops(env *environment) {
	if s.polling == nil || env.loops != nil {
		return
	}
	ctx, cancel := context.WithCancel(s.polling.ctx)
	p := &envLoops{cancel: cancel, done: make(chan struct{})}
	env.loops = p
	client := s.polling.client
	// The loops return only when ctx ends, and never with an error: one
	// loop's trouble is logged and retried, never a reason to stop another.
	var loops errgroup.Group
	loops.Go(func() error {
		if env.pair.DocumentPath != "" {
			s.watchFile(ctx, env)
		} else {
			s.pollUpstream(ctx, env, client)
		}
		return nil
	})
	if env.pair.DocumentPath == "" && s.config().RealtimeAPIURL != "" {
		// Follows the upstream's realtime stream for immediate polls.
		loops.Go(func() error { s.followUpstream(ctx, env, client); return nil })
	}
	for kind, r := range env.relays() {
		if r.forwards() {
			loops.Go(func() error { s.flushLoop(ctx, client, env.pair.ClientSideKey, kind, r); return nil })
		}
	}
	go func() {
		_ = loops.Wait()
		close(p.done)
	}()
}

// stopLoops stops env's loops and waits for them to return: afterwards
// nothing publishes to env. The caller holds s.reloadMu.
func (env *environment) stopLoops() {
	if env.loops == nil {
		return
	}
	env.loops.cancel()
	<-env.loops.done
	env.loops = nil
}
