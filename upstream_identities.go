package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// The upstream's identities endpoint, as shadow verification (verify.go)
// and trait write-back (writeback.go) call it: POST {api_url}/identities/
// with the environment's server key, through the pollers' client (whose
// redirect rules keep the key on the configured host and off plain HTTP:
// newPollClient), within the poll timeout, its answer read through a size
// limit. Logs name the environment by its client key, never the server key.

// startIdentityWorkers runs the workers of shadow verification and trait
// write-back, each one goroutine, until ctx ends; the channel returned is
// closed once both have returned.
func (s *server) startIdentityWorkers(ctx context.Context, client *http.Client) <-chan struct{} {
	var wg sync.WaitGroup
	wg.Go(func() { s.runVerifier(ctx, client) })
	wg.Go(func() { s.runWriteBack(ctx, client) })
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// maxIdentitiesAnswerBytes bounds an upstream identities answer read: one
// flag object per feature, so megabytes only for documents of many
// thousands of features.
const maxIdentitiesAnswerBytes = 8 << 20

// upstreamIdentities is what the upstream answered to POST /identities/.
type upstreamIdentities struct {
	// version is its X-Flagsmith-Document-Updated-At, "" when it sent none.
	version string
	// body is the answer's body when it was asked for and the status was 2xx.
	body []byte
}

// upstreamStatusError is an upstream answer outside 2xx.
type upstreamStatusError struct{ code int }

func (e *upstreamStatusError) Error() string { return fmt.Sprintf("upstream status %d", e.code) }

// retryable reports whether sending the same request again may succeed: a
// network error, a timeout, a 5xx, 408 or 429, or 401/403 (a server key
// rotation may be under way: environment.serverKey follows the poller).
// Any other 4xx is the upstream refusing this body, which a retry would not
// change.
func retryable(err error) bool {
	var se *upstreamStatusError
	if !errors.As(err, &se) {
		return true
	}
	switch c := se.code; {
	case c >= 500, c == http.StatusRequestTimeout, c == http.StatusTooManyRequests,
		c == http.StatusUnauthorized, c == http.StatusForbidden:
		return true
	}
	return false
}

// postIdentities posts body to the upstream's identities endpoint with
// env's server key. With read it returns the answer's body; otherwise the
// body is only drained (bounded) so the connection can be reused.
func (s *server) postIdentities(ctx context.Context, client *http.Client, env *environment, body []byte, read bool) (upstreamIdentities, error) {
	cfg := s.config()
	ctx, cancel := context.WithTimeout(ctx, cfg.pollTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.APIURL+"/identities/", bytes.NewReader(body))
	if err != nil {
		return upstreamIdentities{}, fmt.Errorf("post identities: %w", err)
	}
	h := req.Header
	h.Set("X-Environment-Key", string(env.serverKey()))
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json")
	h.Set("User-Agent", "flagsmith-edge-proxy/"+version)
	resp, err := client.Do(req)
	if err != nil {
		return upstreamIdentities{}, fmt.Errorf("post identities: %w", err)
	}
	defer resp.Body.Close()
	ans := upstreamIdentities{version: resp.Header.Get(updatedAtHeader)}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxUpstreamAnswerBytes))
		return ans, fmt.Errorf("post identities: %w", &upstreamStatusError{resp.StatusCode})
	}
	if !read {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxUpstreamAnswerBytes))
		return ans, nil
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxIdentitiesAnswerBytes+1))
	if err != nil {
		return ans, fmt.Errorf("read identities answer: %w", err)
	}
	if len(raw) > maxIdentitiesAnswerBytes {
		return ans, fmt.Errorf("identities answer larger than %d bytes", maxIdentitiesAnswerBytes)
	}
	ans.body = raw
	return ans, nil
}

// writeIdentityWorkerMetrics appends the counters of shadow verification
// and trait write-back to /metrics: per environment served from an
// upstream, every series present from the start (zeros included), so that
// a dashboard's rate() sees the first event.
func (s *server) writeIdentityWorkerMetrics(b *bytes.Buffer) {
	var envs []*environment
	for _, env := range s.environments() {
		if env.pair.DocumentPath == "" {
			envs = append(envs, env)
		}
	}
	for _, f := range identityWorkerCounters {
		fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s counter\n", f.name, f.help, f.name)
		for _, env := range envs {
			for _, c := range f.series(env) {
				if f.label == "" {
					fmt.Fprintf(b, "%s{environment=%s} %d\n", f.name, label(env.pair.ClientSideKey), c.n)
					continue
				}
				fmt.Fprintf(b, "%s{environment=%s,%s=%s} %d\n", f.name, label(env.pair.ClientSideKey), f.label, label(c.label), c.n)
			}
		}
	}
	const pending = "edge_proxy_write_back_pending_bytes"
	fmt.Fprintf(b, "# HELP %s Bytes of identities bodies waiting to be written (at most %d).\n# TYPE %s gauge\n%s %d\n",
		pending, writeBackQueueBytes, pending, pending, s.writeBack.pending.Load())
}

// identityWorkerCounters are the counter families of
// writeIdentityWorkerMetrics; label is the series' label besides the
// environment, "" for none.
var identityWorkerCounters = []struct {
	name, help, label string
	series            func(*environment) []labelledCount
}{
	{"edge_proxy_verify_checks_total", "Shadow verification checks completed: matches + mismatches + skipped.", "",
		count(func(e *environment) *atomic.Uint64 { return &e.verify.checks })},
	{"edge_proxy_verify_matches_total", "Checks whose upstream answer agreed with the proxy's on every flag the key may see.", "",
		count(func(e *environment) *atomic.Uint64 { return &e.verify.matches })},
	{"edge_proxy_verify_mismatches_total", "Checks whose answers disagreed on at least one flag (logged once per flag and document version).", "",
		count(func(e *environment) *atomic.Uint64 { return &e.verify.mismatches })},
	{"edge_proxy_verify_mismatched_flags_total", "Flags on which the answers of mismatched checks disagreed.", "",
		count(func(e *environment) *atomic.Uint64 { return &e.verify.mismatchedFlags })},
	{"edge_proxy_verify_rechecks_total", "Mismatches asked again of an upstream that did not say which document answered (an API call each, besides the checks).", "",
		count(func(e *environment) *atomic.Uint64 { return &e.verify.rechecks })},
	{"edge_proxy_verify_skipped_total", "Checks neither matched nor mismatched: the document changed in between, Flagsmith holds stored traits for the identity, or the upstream failed.", "reason",
		func(e *environment) []labelledCount { return labelled(verifySkipReasons[:], e.verify.skipped[:]) }},
	{"edge_proxy_verify_dropped_total", "Sampled requests never checked: over verify.max_per_second, or the queue was full.", "reason",
		func(e *environment) []labelledCount { return labelled(verifyDropReasons[:], e.verify.dropped[:]) }},
	{"edge_proxy_write_back_queued_total", "Identities queued for writing to the upstream.", "",
		count(func(e *environment) *atomic.Uint64 { return &e.writeBack.queued })},
	{"edge_proxy_write_back_written_total", "Identities the upstream accepted.", "",
		count(func(e *environment) *atomic.Uint64 { return &e.writeBack.written })},
	{"edge_proxy_write_back_unchanged_total", "Identity requests not written: the traits were those last written.", "",
		count(func(e *environment) *atomic.Uint64 { return &e.writeBack.unchanged })},
	{"edge_proxy_write_back_transient_total", "Transient identity requests, never written.", "",
		count(func(e *environment) *atomic.Uint64 { return &e.writeBack.transient })},
	{"edge_proxy_write_back_retries_total", "Writes tried again after the upstream failed.", "",
		count(func(e *environment) *atomic.Uint64 { return &e.writeBack.retries })},
	{"edge_proxy_write_back_dropped_total", "Writes not made: the queue was full, every try failed, the upstream refused the body (4xx), or the proxy stopped.", "reason",
		func(e *environment) []labelledCount { return labelled(writeBackDropReasons[:], e.writeBack.dropped[:]) }},
}

func count(field func(*environment) *atomic.Uint64) func(*environment) []labelledCount {
	return func(e *environment) []labelledCount { return []labelledCount{{"", field(e).Load()}} }
}

func labelled(names []string, counts []atomic.Uint64) []labelledCount {
	out := make([]labelledCount, len(names))
	for i, name := range names {
		out[i] = labelledCount{name, counts[i].Load()}
	}
	return out
}

// handUpstream offers an answered identity request to shadow verification
// and trait write-back, which do their work off the request path. body and
// traits are nil for GET.
func (s *server) handUpstream(ref keyRef, identifier string, body []byte, traits *decodedTraits) {
	cfg := s.config()
	s.sampleIdentity(cfg, ref, identifier, body)
	s.offerWriteBack(cfg, ref.env, identifier, body, traits)
}
