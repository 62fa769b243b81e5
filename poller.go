package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// maxDocumentBytes bounds an upstream document read; real documents are far
// smaller, and a runaway body must not exhaust memory.
const maxDocumentBytes = 32 << 20

var errDocumentSize = fmt.Errorf("document larger than %d bytes", maxDocumentBytes)

// newPollClient is the HTTP client of the pollers. Redirects are followed,
// as by Flagsmith's proxy; each request (each page of a paginated document)
// carries its own timeout. The server key is a secret: it is not forwarded
// to another host, as Go already does for Authorization, nor over plain
// HTTP when the configured URL is HTTPS.
//
// Requests go through the proxy named by HTTPS_PROXY or HTTP_PROXY unless
// NO_PROXY exempts the host (http.ProxyFromEnvironment; Go never proxies
// requests to localhost or loopback addresses). With HTTPS the proxy sees
// only the host name: the key travels inside the tunnel.
func newPollClient() *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = http.ProxyFromEnvironment
	return &http.Client{
		Transport: transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			// Headers are copied from the first request on every hop, so
			// each hop is judged against it.
			first := via[0].URL
			downgrade := first.Scheme == "https" && req.URL.Scheme != "https"
			if req.URL.Host != first.Host || downgrade {
				req.Header.Del("X-Environment-Key")
			}
			return nil
		},
	}
}

// pushInterval is the least time between two polls of one environment that
// pushes cause: pushes (refresh, webhook, queue-change, upstream events)
// arriving faster coalesce into the next poll. Scheduled polls come on top,
// at the poll frequency.
const pushInterval = time.Second

// pollUpstream is one environment's poll loop: poll (the pages, pages.go),
// publish (snapshot.go), record (status.go), then wait (backoff.go). Its
// state (the upstream's validators, the failures in a row) lives here, not
// in shared fields.
func (s *server) pollUpstream(ctx context.Context, env *environment, client *http.Client) {
	key := env.pair.ClientSideKey
	st := s.newPollState(env)
	failures := 0
	var lastPushed time.Time // when a push last caused a poll
	for {
		// A push waiting now is answered by this poll; one that arrives
		// while it is in flight makes the next.
		select {
		case <-env.refresh:
		default:
		}
		res := s.pollOnce(ctx, env, client, &st)
		if res.err != nil && ctx.Err() != nil {
			return
		}
		s.recordPoll(env, res)
		// Read each round: a reload may change it.
		wait := s.config().pollFrequency()
		if res.err == nil {
			failures = 0
		} else {
			failures++
			wait = backoff(failures, wait, key)
			s.log.Warn("poll failed", "env", key, "error", res.err.Error(), "attempt", failures, "retry_in", wait.String())
		}
		refreshed, ok := env.wait(ctx, wait)
		if !ok {
			return
		}
		if refreshed {
			// Scheduled polls do not delay a push: only pushes are held
			// to one poll per pushInterval.
			if !sleepCtx(ctx, pushInterval-time.Since(lastPushed)) {
				return
			}
			lastPushed = time.Now()
		}
	}
}

// pollState is what one environment's poll loop remembers of the upstream
// between polls: the validators of the held document, and when it last
// polled without them. The zero value sends no conditions.
type pollState struct {
	// etag and lastModified are the upstream's validators of the held
	// document, received when the answer that brought it arrived (the
	// upstream's Date, never later than our clock); updatedAt is the
	// document's own, the fallback when the upstream sent neither.
	etag                              string
	lastModified, received, updatedAt time.Time
	// lastFull is when the last poll without conditions was answered.
	lastFull time.Time
}

// newPollState is the state a poll loop starts from. A document loaded from
// cache_dir carries no validators, so it falls back to the document's
// updated_at, bounded by when the cache file was written: a warm start asks
// for changes since then, and an unchanged upstream answers 304.
func (s *server) newPollState(env *environment) pollState {
	st := pollState{lastFull: time.Now()}
	if cur := env.snap.Load(); cur != nil && !cur.cachedAt.IsZero() {
		st.updatedAt, st.received = cur.updatedAt, cur.cachedAt
	}
	return st
}

// conditions ask the upstream for the document only if it changed since
// the held one. If-Modified-Since is the upstream's Last-Modified or, when
// it sent neither validator, the document's updated_at, made safe by
// safeSince.
func (st *pollState) conditions() conditions {
	c := conditions{etag: st.etag}
	switch {
	case !st.lastModified.IsZero():
		c.since = safeSince(st.lastModified, st.received)
	case st.etag == "" && !st.updatedAt.IsZero():
		c.since = safeSince(st.updatedAt, st.received)
	}
	return c
}

// safeSince is the If-Modified-Since that cannot hide a change, for a
// document modified at modified and received at received (the upstream's
// Date, else our clock). Flagsmith compares whole seconds, so a change made
// later within the second the document was served would look unchanged to
// an If-Modified-Since of that second; and a document dated in the future
// would make every later change look old. Both are avoided by never asking
// from later than the second before the answer (and never from the future).
func safeSince(modified, received time.Time) time.Time {
	if now := time.Now(); received.After(now) {
		received = now
	}
	bound := received.Truncate(time.Second).Add(-time.Second)
	if modified.After(bound) {
		return bound
	}
	return modified.Truncate(time.Second)
}

// pollResult is what one poll (or read of a document file) did, for
// /proxy/status and /metrics (recordPoll).
type pollResult struct {
	began      time.Time
	took       time.Duration
	err        error
	httpStatus int    // of the upstream's last answer; 0 when none came (or for a file)
	outcome    string // for /metrics: ok, not_modified, invalid or error; "" for a file
	// pages is how many pages the document it fetched whole came in; 0
	// when it fetched none.
	pages       int
	pagesRead   int // pages read whole
	bodyBytes   int // document bytes read
	fullRefresh bool
}

// errKeyRejected is a poll answered 401 or 403: the server key is not (or
// no longer) valid.
var errKeyRejected = errors.New("upstream rejected the server key")

// pollOnce fetches the document once. A failure keeps the last good
// snapshot: flags keep being served while the upstream is broken.
//
// With several server keys (a rotation), it polls with the key the upstream
// last accepted and, when that one is rejected, moves on to the next in the
// same call, so a revoked key costs one request, not a poll period. The
// first accepted key is kept for the next polls.
func (s *server) pollOnce(ctx context.Context, env *environment, client *http.Client, st *pollState) (res pollResult) {
	res.began = time.Now()
	defer func() { res.took = time.Since(res.began) }()
	keys := env.pair.serverKeys()
	first := int(env.keyInUse.Load()) % len(keys)
	for i := range keys {
		at := (first + i) % len(keys)
		res.err = s.pollWithKey(ctx, env, client, st, keys[at], &res)
		if !errors.Is(res.err, errKeyRejected) {
			if at != first && res.err == nil {
				env.keyInUse.Store(int32(at))
				s.log.Info("server key in use", "env", env.pair.ClientSideKey, "server_key", keys[at])
			}
			return res
		}
		if len(keys) > 1 {
			s.log.Warn("upstream rejected a server key; trying the next", "env", env.pair.ClientSideKey, "server_key", keys[at])
		}
	}
	s.log.Error("upstream rejected the server key; serving the last good document",
		"env", env.pair.ClientSideKey, "server_key", keys[first], "keys_tried", len(keys))
	return res
}

// pollWithKey is one poll with one server key: the document's pages, with
// conditions unless a full refresh is due (pages.go), then its publication.
// What it did is added to res.
func (s *server) pollWithKey(ctx context.Context, env *environment, client *http.Client, st *pollState, serverKey secret, res *pollResult) error {
	cfg := s.config()
	held := env.snap.Load()
	// Every full_refresh_seconds the poll goes without conditions: an
	// upstream that wrongly answers 304 cannot pin a document for longer.
	fullDue := held != nil && time.Since(st.lastFull) >= cfg.fullRefresh()
	var cond conditions
	if held != nil && !fullDue {
		cond = st.conditions()
	}
	f := newFetcher(client, cfg, serverKey)
	doc, err := f.document(ctx, cond)
	res.httpStatus = doc.status
	res.bodyBytes += f.bytesRead
	res.pagesRead += f.pagesRead
	switch {
	case err != nil:
		res.outcome = "error"
		return err
	case doc.status == http.StatusNotModified && held == nil:
		res.outcome = "error"
		return errors.New("upstream answered 304 Not Modified but no document is held")
	case doc.status == http.StatusNotModified:
		res.outcome = "not_modified"
		s.markSuccess(env)
		return nil
	}
	// Nothing here may hold the raw document while publish compiles it:
	// publishing a large one returns its garbage to the OS (settleMemory),
	// and a raw document still referenced would stay resident.
	body, size := doc.body, len(doc.body)
	doc.body = nil
	snap, err := s.publish(env, body, "upstream")
	if err != nil {
		res.outcome = "invalid"
		return err
	}
	res.outcome, res.pages, res.fullRefresh = "ok", doc.pages, fullDue
	if doc.pages > 1 && snap != held {
		s.log.Info("document pages merged", "env", env.pair.ClientSideKey, "pages", doc.pages, "bytes", size)
	}
	// Validators are kept only for a document that was published: those of
	// a refused one would make the next poll a 304 for it.
	st.etag, st.lastModified, st.received, st.updatedAt = doc.etag, doc.lastModified, doc.received, snap.updatedAt
	if fullDue {
		st.lastFull = time.Now()
	}
	s.log.Debug("poll done", "env", env.pair.ClientSideKey, "duration", time.Since(res.began).String(), "full_refresh", fullDue, "pages", doc.pages)
	return nil
}
