package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"os"
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

// pollUpstream is one environment's poll loop. Its state (the upstream's
// validators, the backoff) lives here, not in shared fields.
func (s *server) pollUpstream(ctx context.Context, env *environment, client *http.Client) {
	jitter := jitterFraction(env.pair.ClientSideKey)
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
		began := time.Now()
		err := s.pollOnce(ctx, env, client, &st)
		took := time.Since(began)
		// Read each round: a reload may change it.
		freq := s.config().pollFrequency()
		wait := freq
		switch {
		case err == nil:
			failures = 0
		case ctx.Err() != nil:
			return
		default:
			failures++
			wait = backoff(failures, freq, jitter)
			s.log.Warn("poll failed", "env", env.pair.ClientSideKey, "error", err.Error(),
				"attempt", failures, "retry_in", wait.String())
		}
		env.status.recordPoll(pollRecord{at: began, latency: took, httpStatus: st.httpStatus, err: err}, began.Add(took+wait))
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

// sleepCtx sleeps for d (nothing when d <= 0); false once ctx has ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// wait sleeps for d or until a refresh is requested; refreshed says which.
// ok is false once ctx has ended.
func (e *environment) wait(ctx context.Context, d time.Duration) (refreshed, ok bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false, false
	case <-timer.C:
		return false, true
	case <-e.refresh:
		return true, true
	}
}

// backoff is the wait after the n-th failure in a row: doubling from a
// second, never above the poll frequency, spread by a fixed per-environment
// jitter so that environments failing together do not retry together.
func backoff(n int, freq time.Duration, jitter float64) time.Duration {
	d := time.Second
	for i := 1; i < n && d < freq; i++ {
		d *= 2
	}
	d = time.Duration(float64(d) * (0.8 + 0.2*jitter))
	return min(d, freq)
}

// jitterFraction is a stable number in [0, 1) derived from the key.
func jitterFraction(key string) float64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return float64(h.Sum32()%1000) / 1000
}

// pollState is what one environment's poll loop remembers of the upstream
// between polls: the validators of the held document, and when it last
// polled without them. The zero value sends no conditions.
type pollState struct {
	// etag is the upstream's ETag of the held document, sent back as
	// If-None-Match.
	etag string
	// modifiedSince is the If-Modified-Since to send: the upstream's
	// Last-Modified or, when it sent neither validator, the document's
	// updated_at; never later than a second before the upstream's Date of
	// the answer that brought the document (see safeSince). Zero: none.
	modifiedSince time.Time
	// lastFull is when the last poll without conditions was answered.
	lastFull time.Time
	// httpStatus is the status of the upstream's last answer, 0 when the
	// last poll got none.
	httpStatus int
}

// newPollState is the state a poll loop starts from. A document loaded from
// cache_dir carries no validators, so it falls back to the document's
// updated_at, bounded by when the cache file was written: a warm start asks
// for changes since then, and an unchanged upstream answers 304.
func (s *server) newPollState(env *environment) pollState {
	st := pollState{lastFull: time.Now()}
	cur := env.snap.Load()
	if cur == nil || cur.updatedAt.IsZero() || s.config().CacheDir == "" {
		return st
	}
	if fi, err := os.Stat(cachePath(s.config().CacheDir, env.pair.ClientSideKey)); err == nil {
		st.modifiedSince = safeSince(cur.updatedAt, fi.ModTime())
	}
	return st
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

// setConditions asks the upstream for the document only if it changed.
func (st *pollState) setConditions(req *http.Request) {
	if st.etag != "" {
		req.Header.Set("If-None-Match", st.etag)
	}
	if !st.modifiedSince.IsZero() {
		req.Header.Set("If-Modified-Since", st.modifiedSince.UTC().Format(http.TimeFormat))
	}
}

// remember keeps the validators of the answer that brought snap.
func (st *pollState) remember(resp *http.Response, snap *snapshot) {
	received := time.Now()
	if date, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		received = date
	}
	st.etag = resp.Header.Get("ETag")
	st.modifiedSince = time.Time{}
	lastModified, err := http.ParseTime(resp.Header.Get("Last-Modified"))
	switch {
	case err == nil:
		st.modifiedSince = safeSince(lastModified, received)
	case st.etag == "" && !snap.updatedAt.IsZero():
		st.modifiedSince = safeSince(snap.updatedAt, received)
	}
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
func (s *server) pollOnce(ctx context.Context, env *environment, client *http.Client, st *pollState) error {
	keys := env.pair.serverKeys()
	first := int(env.keyInUse.Load()) % len(keys)
	var err error
	for i := range keys {
		at := (first + i) % len(keys)
		err = s.pollWithKey(ctx, env, client, st, keys[at])
		if !errors.Is(err, errKeyRejected) {
			if at != first && err == nil {
				env.keyInUse.Store(int32(at))
				s.log.Info("server key in use", "env", env.pair.ClientSideKey, "server_key", keys[at])
			}
			return err
		}
		if len(keys) > 1 {
			s.log.Warn("upstream rejected a server key; trying the next", "env", env.pair.ClientSideKey, "server_key", keys[at])
		}
	}
	s.log.Error("upstream rejected the server key; serving the last good document",
		"env", env.pair.ClientSideKey, "server_key", keys[first], "keys_tried", len(keys))
	return err
}

// pollWithKey is one poll with one server key: page 1 of the document,
// with conditions unless a full refresh is due, then every later page the
// upstream links to (pages.go).
func (s *server) pollWithKey(ctx context.Context, env *environment, client *http.Client, st *pollState, serverKey secret) error {
	cfg := s.config()
	key := env.pair.ClientSideKey
	held := env.snap.Load()
	// Every full_refresh_seconds the poll goes without conditions: an
	// upstream that wrongly answers 304 cannot pin a document for longer.
	fullDue := held != nil && time.Since(st.lastFull) >= cfg.fullRefresh()
	var conditions *pollState
	if held != nil && !fullDue {
		conditions = st
	}
	start := time.Now()
	st.httpStatus = 0
	resp, raw, err := s.getPage(ctx, client, cfg, env, serverKey, "", conditions, maxDocumentBytes)
	if resp != nil {
		st.httpStatus = resp.StatusCode
	}
	if err != nil {
		s.stats.observePoll(key, "error")
		return err
	}
	if resp.StatusCode == http.StatusNotModified {
		if held == nil {
			s.stats.observePoll(key, "error")
			return errors.New("upstream answered 304 Not Modified but no document is held")
		}
		s.stats.observePoll(key, "not_modified")
		s.markSuccess(env)
		return nil
	}
	raw, pages, err := s.fetchLaterPages(ctx, client, cfg, env, serverKey, resp.Header, raw, maxDocumentBytes)
	if err != nil {
		s.stats.observePoll(key, "error")
		return err
	}
	if err := s.publish(env, raw, "upstream"); err != nil {
		s.stats.observePoll(key, "invalid")
		return err
	}
	env.documentPages.Store(int32(pages))
	if pages > 1 && env.snap.Load() != held {
		s.log.Info("document pages merged", "env", key, "pages", pages, "bytes", len(raw))
	}
	// Validators are kept only for a document that was published: those of
	// a refused one would make the next poll a 304 for it.
	st.remember(resp, env.snap.Load())
	if fullDue {
		st.lastFull = time.Now()
		s.stats.observeFullRefresh(key)
	}
	s.stats.observePoll(key, "ok")
	s.log.Debug("poll done", "env", key, "duration", time.Since(start).String(), "full_refresh", fullDue, "pages", pages)
	return nil
}

// getPage is one request for a page of the document (pageID "" asks for
// page 1), bounded by the poll timeout, with conditions when not nil. Its
// body is read through limit; a 304 comes back with none. The answer's
// body is closed; its headers stay readable. An answer whose status is an
// error comes back with the error, for the status it records.
func (s *server) getPage(ctx context.Context, client *http.Client, cfg *Config, env *environment,
	serverKey secret, pageID string, conditions *pollState, limit int) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.pollTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pageURL(cfg.APIURL, pageID), nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("X-Environment-Key", string(serverKey))
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "flagsmith-edge-proxy/"+version)
	if conditions != nil {
		conditions.setConditions(req)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("request: %w", maskURLError(err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified:
		return resp, nil, nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return resp, nil, fmt.Errorf("upstream status %d: %w", resp.StatusCode, errKeyRejected)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return resp, nil, fmt.Errorf("upstream status %d", resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	s.stats.observeBodyBytes(env.pair.ClientSideKey, len(raw))
	if err != nil {
		return nil, nil, fmt.Errorf("read body: %w", err)
	}
	if len(raw) > limit {
		return nil, nil, errDocumentSize
	}
	s.stats.observePageFetched(env.pair.ClientSideKey)
	return resp, raw, nil
}
