package main

import (
	"net/http"
	"strings"
	"sync"
	"time"
)

// This file is the operator's view (GET /proxy/status): what every
// environment serves and how its last poll went, as JSON for tools and as a
// page for a person (status_page.go), and the `edge-proxy status` command
// that prints it (status_cli.go). The figures are recorded by the loops
// that produce them (envStatus) and read only here, never on the request
// path.

// envStatus is what an environment's loops last saw. Its zero value is
// ready to use; it is safe for concurrent use. The poll loop (or file
// watcher), the upstream stream and publishing write it; /proxy/status
// reads it.
type envStatus struct {
	mu sync.Mutex
	d  envStatusData
}

type envStatusData struct {
	lastPoll pollRecord
	stream   streamState
}

// read returns a copy of the figures.
func (e *envStatus) read() envStatusData {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.d
}

// pollRecord is one poll (or read of a document file) as the status shows
// it.
type pollRecord struct {
	at         time.Time // zero: no poll yet
	latency    time.Duration
	httpStatus int // 0 when no answer came (or for a file)
	err        error
}

// streamState is the state of an environment's upstream realtime stream.
type streamState uint8

const (
	streamOff streamState = iota
	streamConnecting
	streamConnected
	streamReconnecting
)

func (st streamState) String() string {
	return [...]string{"off", "connecting", "connected", "reconnecting"}[st]
}

// recordPoll records a poll (or a read of a document file) for
// /proxy/status and, a poll of the upstream, for /metrics.
func (s *server) recordPoll(env *environment, res pollResult) {
	env.status.setLastPoll(pollRecord{at: res.began, latency: res.took, httpStatus: res.httpStatus, err: res.err})
	if res.pages > 0 {
		env.documentPages.Store(int32(res.pages))
	}
	if res.outcome != "" {
		s.stats.observePoll(env.pair.ClientSideKey, res)
	}
}

// setLastPoll keeps the outcome of a poll.
func (e *envStatus) setLastPoll(p pollRecord) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.d.lastPoll = p
}

func (e *envStatus) setStream(st streamState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.d.stream = st
}

// statusReport is the answer of GET /proxy/status, and what `edge-proxy
// status` decodes and prints.
type statusReport struct {
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	// Config is the configuration in force: its generation counts loads (1
	// at start, one more per accepted reload).
	Config struct {
		Generation uint64    `json:"generation"`
		LoadedAt   time.Time `json:"loaded_at"`
	} `json:"config"`
	// TLS is the certificate served; null over plain HTTP.
	TLS *struct {
		NotAfter time.Time `json:"not_after"`
		DNSNames []string  `json:"dns_names"`
	} `json:"tls"`
	// Stale is true when any environment is not ok.
	Stale        bool           `json:"stale"`
	Environments []statusOfEnv  `json:"environments"`
	GeneratedAt  time.Time      `json:"generated_at"`
	SSE          statusOfStream `json:"sse"`
	// VerifyMismatches are the last flags on which shadow verification
	// found the upstream disagreeing, oldest first (verify.go); the
	// environment by its masked client key, the identity by a hash.
	VerifyMismatches []verifyMismatch `json:"verify_mismatches"`
}

type statusOfStream struct {
	Enabled     bool `json:"enabled"`
	Subscribers int  `json:"subscribers"`
}

// statusOfEnv is one environment in the status.
type statusOfEnv struct {
	Name       string   `json:"name"` // the document's; "" before one arrives
	ClientKey  string   `json:"client_key"`
	ServerKeys []string `json:"server_keys"`
	// State is ok, stale (a document is served but the last poll failed)
	// or error (no document is served).
	State        string `json:"state"`
	Stale        bool   `json:"stale"`
	Error        string `json:"error,omitempty"`
	Source       string `json:"source"` // upstream, file or cache; "" before a document
	DocumentPath string `json:"document_path,omitempty"`
	// UpdatedAt is the document's updated_at as written; ContentVersion is
	// what SDKs are shown (X-Flagsmith-Document-Updated-At, realtime
	// events, OFREP updatedAt), Unix seconds.
	UpdatedAt         string             `json:"updated_at"`
	ContentVersion    string             `json:"content_version"`
	ContentAgeSeconds *float64           `json:"content_age_seconds"`
	PublishedAt       *time.Time         `json:"published_at"`
	PagesFetched      int                `json:"pages_fetched"`
	LastPoll          *statusOfPoll      `json:"last_poll"`
	NextPoll          *time.Time         `json:"next_poll"`
	UpstreamStream    string             `json:"upstream_stream"`
	SSESubscribers    int                `json:"sse_subscribers"`
	Analytics         *statusOfAnalytics `json:"analytics"`
	Events            *statusOfEvents    `json:"events"`
	// Verify counts shadow verification's checks of this environment.
	Verify statusOfVerify `json:"verify"`
}

type statusOfVerify struct {
	Checks     uint64 `json:"checks"`
	Matches    uint64 `json:"matches"`
	Mismatches uint64 `json:"mismatches"`
}

type statusOfPoll struct {
	At         time.Time `json:"at"`
	Outcome    string    `json:"outcome"` // ok, not_modified, error
	HTTPStatus int       `json:"http_status,omitempty"`
	LatencyMS  float64   `json:"latency_ms"`
	Error      string    `json:"error,omitempty"`
}

// statusOfAnalytics counts flag evaluations, as the analytics metrics do.
type statusOfAnalytics struct {
	Forwarding  bool   `json:"forwarding"` // false for a file environment: counted only
	PendingKeys int64  `json:"pending_keys"`
	Received    uint64 `json:"received"`
	Forwarded   uint64 `json:"forwarded"`
	Dropped     uint64 `json:"dropped"`
}

// statusOfEvents is one environment's events relay, in events.
type statusOfEvents struct {
	Pending   int64  `json:"pending"`
	Received  uint64 `json:"received"`
	Forwarded uint64 `json:"forwarded"`
	Dropped   uint64 `json:"dropped"`
}

// droppedTotal is every item a relay lost, whatever the reason.
func (c *relayCounters) droppedTotal() uint64 {
	var n uint64
	for i := range c.dropped {
		n += c.dropped[i].Load()
	}
	return n
}

// status builds the report of every environment of the configuration in
// force.
func (s *server) status() statusReport {
	live := s.live.Load()
	now := s.now()
	r := statusReport{Version: buildVersion(), StartedAt: s.started.UTC(), GeneratedAt: now.UTC(),
		Environments: make([]statusOfEnv, 0, len(live.envs))}
	r.Config.Generation, r.Config.LoadedAt = live.generation, live.loadedAt.UTC()
	if s.certs != nil {
		if leaf := s.certs.pair.Load().Leaf; leaf != nil {
			r.TLS = &struct {
				NotAfter time.Time `json:"not_after"`
				DNSNames []string  `json:"dns_names"`
			}{leaf.NotAfter.UTC(), leaf.DNSNames}
		}
	}
	r.SSE = statusOfStream{Enabled: live.cfg.SSE.Enabled, Subscribers: s.hub.subscribers()}
	r.VerifyMismatches = s.verifyMismatches()
	for i := range r.VerifyMismatches {
		m := &r.VerifyMismatches[i]
		m.Environment = maskedKey(m.Environment)
	}
	for _, env := range live.envs {
		e := s.statusOf(env, live.cfg, now)
		r.Stale = r.Stale || e.Stale
		r.Environments = append(r.Environments, e)
	}
	return r
}

func (s *server) statusOf(env *environment, cfg *Config, now time.Time) statusOfEnv {
	e := statusOfEnv{ClientKey: maskedKey(env.pair.ClientSideKey), DocumentPath: env.pair.DocumentPath,
		PagesFetched: int(env.documentPages.Load()), SSESubscribers: s.hub.subscribersOf(env.pair.ClientSideKey)}
	for _, k := range env.pair.serverKeys() {
		e.ServerKeys = append(e.ServerKeys, maskedKey(string(k)))
	}
	st := env.status.read()

	e.UpstreamStream = streamOff.String()
	if cfg.RealtimeAPIURL != "" && env.pair.DocumentPath == "" {
		e.UpstreamStream = st.stream.String()
	}
	if next := env.nextPoll.Load(); next != 0 {
		at := time.Unix(0, next).UTC()
		e.NextPoll = &at
	}
	if p := st.lastPoll; !p.at.IsZero() {
		e.LastPoll = &statusOfPoll{At: p.at.UTC(), HTTPStatus: p.httpStatus,
			LatencyMS: float64(p.latency.Microseconds()) / 1000, Outcome: "ok"}
		switch {
		case p.err != nil:
			e.LastPoll.Outcome, e.LastPoll.Error = "error", p.err.Error()
		case p.httpStatus == http.StatusNotModified:
			e.LastPoll.Outcome = "not_modified"
		}
	}

	snap := env.snap.Load()
	switch {
	case snap == nil:
		e.State, e.Error = "error", "no document has been received yet"
		if e.LastPoll != nil && e.LastPoll.Error != "" {
			e.Error = "no document has been received yet: " + e.LastPoll.Error
		}
	case e.LastPoll != nil && e.LastPoll.Error != "":
		e.State, e.Error = "stale", "the last poll failed; serving the last good document: "+e.LastPoll.Error
	default:
		e.State = "ok"
	}
	e.Stale = e.State != "ok"
	if snap != nil {
		e.Name, e.UpdatedAt, e.ContentVersion = snap.name, snap.updatedAtText, snap.updatedAtUnix
		e.Source = snap.source
		if !snap.publishedAt.IsZero() {
			at := snap.publishedAt.UTC()
			e.PublishedAt = &at
		}
		if !snap.served.IsZero() {
			age := now.Sub(snap.served).Seconds()
			e.ContentAgeSeconds = &age
		}
	}
	e.Verify = statusOfVerify{Checks: env.verify.checks.Load(), Matches: env.verify.matches.Load(),
		Mismatches: env.verify.mismatches.Load()}
	if ea := env.analytics; ea != nil {
		e.Analytics = &statusOfAnalytics{Forwarding: ea.forward, PendingKeys: ea.pendingKeys.Load(),
			Received: ea.receivedTotal(), Forwarded: ea.forwarded.Load(), Dropped: ea.droppedTotal()}
	}
	if ev := env.events; ev != nil {
		e.Events = &statusOfEvents{Pending: ev.pending(), Received: ev.received(),
			Forwarded: ev.forwarded.Load(), Dropped: ev.droppedTotal()}
	}
	return e
}

// handleStatus answers GET /proxy/status: JSON, or the status page for a
// browser (one that prefers text/html). Tools send the admin token as a
// Bearer token; a browser sends it as the password of HTTP Basic, which
// it asks the person for after a 401 carrying WWW-Authenticate: Basic.
func (s *server) handleStatus(w http.ResponseWriter, r *http.Request) {
	cfg := s.config()
	page := wantsHTML(r)
	if cfg.AdminToken == "" {
		writeError(w, http.StatusNotFound, "not_found", "the status endpoint is disabled: set admin_token to enable it")
		return
	}
	_, password, basic := r.BasicAuth()
	if !authorized(r, "Bearer", cfg.AdminToken) && !(basic && secretEqual(password, cfg.AdminToken)) {
		if page {
			w.Header().Set("WWW-Authenticate", `Basic realm="edge-proxy status", charset="UTF-8"`)
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edge-proxy status"`)
		}
		writeError(w, http.StatusUnauthorized, "unauthorized",
			"the admin token is required: Authorization: Bearer <admin_token>, or HTTP Basic with it as the password")
		return
	}
	report := s.status()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Add("Vary", "Accept")
	if page {
		s.writeStatusPage(w, report)
		return
	}
	writeJSON(w, http.StatusOK, report)
}

// wantsHTML reports whether the client prefers HTML to JSON: a browser
// navigating sends text/html first; curl sends */*, tools JSON.
func wantsHTML(r *http.Request) bool {
	for part := range strings.SplitSeq(r.Header.Get("Accept"), ",") {
		media, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		switch strings.ToLower(strings.TrimSpace(media)) {
		case "text/html", "application/xhtml+xml":
			return true
		case "application/json":
			return false
		}
	}
	return false
}
