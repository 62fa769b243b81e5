package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Forwarding what SDKs post upstream: flag analytics here, and the events
// relay (events.go) through the same machinery. Each environment's store
// is a relay: a flusher per environment (among its loops) sends what is
// pending every analytics.flush_interval_seconds and puts back what fails,
// with backoff; serve flushes once more at shutdown. Both hold their bytes
// in one budget per process (analytics.max_pending_bytes).

// relay is one environment's store of what SDKs post for the upstream: its
// analytics sums (envAnalytics) or its events (envEvents). Implementations
// are safe for concurrent use.
type relay interface {
	// flush sends what is pending; failed requests put their items back.
	// It returns the first error of those, nil when nothing is left to
	// retry.
	flush(ctx context.Context, s *server, client *http.Client) error
	// discard removes what is pending, gives back its bytes and returns
	// how many items (evaluations, events) it held.
	discard() uint64
	// stats are the relay's counters; received and pending its gauges'
	// sources.
	stats() *relayCounters
	received() uint64
	pending() int64
	// forwards is false for an environment served from a file: there is no
	// upstream, and what SDKs post is only counted.
	forwards() bool
}

// byteBudget bounds the bytes the process holds for the upstream:
// analytics sums and events, pending or in flight. It is safe for
// concurrent use; the zero value holds nothing (set max).
type byteBudget struct {
	used, max atomic.Int64
}

// take holds n more bytes, or returns false, holding nothing, when they
// would pass the bound.
func (b *byteBudget) take(n int64) bool {
	if b.used.Add(n) > b.max.Load() {
		b.used.Add(-n)
		return false
	}
	return true
}

// give returns n bytes that left memory.
func (b *byteBudget) give(n int64) { b.used.Add(-n) }

// relayCounters count, in items (evaluations, events), what became of what
// SDKs posted, and the upstream requests by result; for /metrics.
type relayCounters struct {
	forwarded, retried atomic.Uint64
	dropped            [dropReasons]atomic.Uint64
	requests           [requestResults]atomic.Uint64
}

// dropReason is why items were lost, a label of /metrics.
type dropReason int

const (
	dropBound    dropReason = iota // over the relay's count bound
	dropBytes                      // over analytics.max_pending_bytes
	dropUnknown                    // names a feature the document does not have
	dropRejected                   // refused by the upstream
	dropShutdown                   // unsent at shutdown
	dropReasons
)

var dropReasonNames = [dropReasons]string{"bound", "bytes", "unknown_feature", "rejected", "shutdown"}

// The results of an upstream request, a label of /metrics.
const (
	requestOK = iota
	requestFailed
	requestRefused
	requestResults
)

var requestResultNames = [requestResults]string{"ok", "error", "refused"}

func (c *relayCounters) stats() *relayCounters { return c }

// count records the fate of one upstream request carrying n items, and
// reports whether they are to be put back for a retry.
func (c *relayCounters) count(err error, n uint64) (retry bool) {
	switch {
	case err == nil:
		c.requests[requestOK].Add(1)
		c.forwarded.Add(n)
	case errors.Is(err, errUpstreamRefused):
		c.requests[requestRefused].Add(1)
		c.dropped[dropRejected].Add(n)
	default:
		c.requests[requestFailed].Add(1)
		return true
	}
	return false
}

// errUpstreamRefused marks an upstream answer that no retry can change (a
// 4xx other than 401, 403, 408 and 429): the batch is dropped, not retried.
var errUpstreamRefused = errors.New("upstream refused the batch")

// postUpstream posts body to target with header, within the poll timeout,
// and returns (a bounded part of) the answer.
func (s *server) postUpstream(ctx context.Context, client *http.Client, target string, header http.Header, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.config().pollTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header = header
	req.Header.Set("Content-Type", "application/json")
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "flagsmith-edge-proxy/"+version)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("post %s: %w", req.URL.Path, maskURLError(err))
	}
	defer resp.Body.Close()
	// Read (a bounded part of) the answer so the connection can be reused.
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamAnswerBytes))
	switch code := resp.StatusCode; {
	case code >= 200 && code <= 299:
		return answer, nil
	case code >= 400 && code <= 499 && code != http.StatusUnauthorized && code != http.StatusForbidden &&
		code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
		return answer, fmt.Errorf("post %s: status %d: %w", req.URL.Path, code, errUpstreamRefused)
	default:
		return answer, fmt.Errorf("post %s: upstream status %d", req.URL.Path, code)
	}
}

// flushLoop is one environment's flusher of r, among its loops: every flush
// interval, or sooner with backoff after a failure, until ctx ends. The
// final flush is serve's, after the last request.
func (s *server) flushLoop(ctx context.Context, client *http.Client, env, kind string, r relay) {
	interval := seconds(s.config().Analytics.FlushIntervalSeconds)
	failures := 0
	wait := interval
	for {
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		// A flush in flight is not cancelled at shutdown: a request the
		// upstream may already have taken must not be sent again by the
		// final flush.
		err := r.flush(context.WithoutCancel(ctx), s, client)
		if err == nil {
			failures, wait = 0, interval
			continue
		}
		failures++
		wait = backoff(failures, interval, env+kind)
		s.log.Warn("upstream flush failed; kept for retry", "relay", kind, "env", env,
			"error", err.Error(), "attempt", failures, "retry_in", wait.String(), "pending", r.pending())
	}
}

// finalFlush sends what is left when the server stops, every environment's
// analytics and events at once, within ctx (the shutdown deadline). What
// cannot be sent is counted as dropped and logged.
func (s *server) finalFlush(ctx context.Context, client *http.Client) {
	var wg sync.WaitGroup
	for _, env := range s.environments() {
		for kind, r := range env.relays() {
			if r.forwards() {
				wg.Go(func() { s.lastFlush(ctx, client, env.pair.ClientSideKey, kind, r) })
			}
		}
	}
	wg.Wait()
}

// lastFlush sends r's items one last time: at shutdown, or when a reload
// removes the environment. What cannot be sent is counted as dropped and
// logged.
func (s *server) lastFlush(ctx context.Context, client *http.Client, env, kind string, r relay) {
	err := r.flush(ctx, s, client)
	if lost := r.discard(); lost > 0 {
		r.stats().dropped[dropShutdown].Add(lost)
		s.log.Warn("lost: the last flush failed", "relay", kind, "env", env, "items", lost, "error", fmt.Sprint(err))
	}
}

// relays are the environment's stores of what SDKs post for the upstream,
// by kind; none when analytics.enabled is false.
func (e *environment) relays() iter.Seq2[string, relay] {
	return func(yield func(string, relay) bool) {
		if e.analytics != nil && !yield("analytics", e.analytics) {
			return
		}
		if e.events != nil {
			yield("events", e.events)
		}
	}
}

// analyticsGroup is what the sums of one upstream request share: a label
// set and an API version.
type analyticsGroup struct {
	labels analyticsLabels
	v2     bool
}

// open appends the start of a body of the group's API version.
func (g analyticsGroup) open(b []byte) []byte {
	if g.v2 {
		return append(b, `{"evaluations":[`...)
	}
	return append(b, '{')
}

// analyticsBatch is what one upstream request carries.
type analyticsBatch struct {
	labels  analyticsLabels
	v2      bool
	entries []analyticsEntry
	body    []byte
}

// batches groups pending sums into requests: per label set and API
// version, split when a body would pass maxFlushBodyBytes. A sum above what
// Flagsmith stores is sent in part; the rest goes back for the next flush.
// Each body is encoded as its batch is reached, into one buffer reused from
// batch to batch, so that a flush holds one body at a time, not a copy of
// everything pending: a batch's body is valid until the next is yielded.
func (ea *envAnalytics) batches(entries []analyticsEntry) iter.Seq[analyticsBatch] {
	grouped := map[analyticsGroup][]analyticsEntry{}
	var rest []analyticsEntry
	for _, e := range entries {
		if e.count > maxAnalyticsCount {
			rest = append(rest, analyticsEntry{e.key, e.count - maxAnalyticsCount})
			e.count = maxAnalyticsCount
		}
		g := analyticsGroup{e.key.labels, e.key.v2}
		grouped[g] = append(grouped[g], e)
	}
	ea.addAll(nil, rest, false)
	groups := make([]analyticsGroup, 0, len(grouped))
	totals := make(map[analyticsGroup]int64, len(grouped))
	for g, list := range grouped {
		groups = append(groups, g)
		for _, e := range list {
			totals[g] += e.count
		}
	}
	// The largest sums first, then a stable order that keeps logs and tests
	// readable.
	sort.Slice(groups, func(i, j int) bool {
		a, b := groups[i], groups[j]
		if totals[a] != totals[b] {
			return totals[a] > totals[b]
		}
		if a.labels != b.labels {
			return fmt.Sprint(a.labels) < fmt.Sprint(b.labels)
		}
		return !a.v2 && b.v2
	})
	// Client keys are public and label headers are whatever a client sends:
	// one flush never fans out into more than maxFlushGroups requests (plus
	// splits). The smallest groups wait for the next flush, still bounded by
	// maxKeys.
	if len(groups) > maxFlushGroups {
		for _, g := range groups[maxFlushGroups:] {
			ea.addAll(nil, grouped[g], true)
		}
		groups = groups[:maxFlushGroups]
	}
	return func(yield func(analyticsBatch) bool) {
		var buf []byte
		for _, g := range groups {
			list := grouped[g]
			sort.Slice(list, func(i, j int) bool { return list[i].key.feature < list[j].key.feature })
			cur := analyticsBatch{labels: g.labels, v2: g.v2, body: g.open(buf[:0])}
			for _, e := range list {
				mark := len(cur.body)
				if len(cur.entries) > 0 {
					cur.body = append(cur.body, ',')
				}
				cur.body = appendAnalyticsItem(cur.body, e)
				if len(cur.entries) > 0 && len(cur.body) > maxFlushBodyBytes {
					cur.body = cur.body[:mark]
					if !yield(cur.finish()) {
						return
					}
					buf = cur.body
					cur = analyticsBatch{labels: g.labels, v2: g.v2, body: appendAnalyticsItem(g.open(buf[:0]), e)}
				}
				cur.entries = append(cur.entries, e)
			}
			if !yield(cur.finish()) {
				return
			}
			buf = cur.body
		}
	}
}

// appendAnalyticsItem appends one entry as it appears in a request body: a
// member of the v1 object or an element of the v2 evaluations array.
func appendAnalyticsItem(b []byte, e analyticsEntry) []byte {
	if !e.key.v2 {
		return strconv.AppendInt(append(appendJSONString(b, e.key.feature), ':'), e.count, 10)
	}
	b = appendJSONString(append(b, `{"feature_name":`...), e.key.feature)
	if e.key.identifier != "" {
		b = appendJSONString(append(b, `,"identity_identifier":`...), e.key.identifier)
	}
	b = strconv.AppendBool(append(b, `,"enabled_when_evaluated":`...), e.key.enabled)
	b = strconv.AppendInt(append(b, `,"count":`...), e.count, 10)
	return append(b, '}')
}

// finish closes the body opened by open.
func (b analyticsBatch) finish() analyticsBatch {
	if b.v2 {
		b.body = append(b.body, "]}"...)
	} else {
		b.body = append(b.body, '}')
	}
	return b
}

func (b analyticsBatch) total() uint64 {
	var n uint64
	for _, e := range b.entries {
		n += uint64(e.count)
	}
	return n
}

// flush sends the environment's pending sums upstream, one request per
// batch. Failed requests put their sums back; a refused batch is logged and
// dropped: sending it again would be refused again.
func (ea *envAnalytics) flush(ctx context.Context, s *server, client *http.Client) error {
	var retry error
	for b := range ea.batches(ea.take()) {
		err := s.sendAnalytics(ctx, client, ea, b)
		if ea.count(err, b.total()) {
			ea.addBack(b.entries)
			retry = cmp.Or(retry, err)
			continue
		}
		ea.settle(b.entries)
		if err != nil {
			s.log.Error("refused by the upstream; dropped", "relay", "analytics", "env", ea.env.pair.ClientSideKey,
				"error", err.Error(), "items", b.total())
		}
	}
	return retry
}

// sendAnalytics posts one batch with the environment's server key and the
// SDK's labels.
func (s *server) sendAnalytics(ctx context.Context, client *http.Client, ea *envAnalytics, b analyticsBatch) error {
	apiURL := s.config().APIURL
	target := apiURL + "/analytics/flags/"
	if b.v2 {
		target = analyticsV2URL(apiURL)
	}
	h := http.Header{}
	h.Set("X-Environment-Key", string(ea.env.serverKey()))
	for name, v := range map[string]string{
		"User-Agent": b.labels.userAgent, "Flagsmith-SDK-User-Agent": b.labels.sdkUserAgent,
		"Flagsmith-Application-Name": b.labels.appName, "Flagsmith-Application-Version": b.labels.appVersion,
	} {
		if v != "" {
			h.Set(name, v)
		}
	}
	_, err := s.postUpstream(ctx, client, target, h, b.body)
	return err
}

// discard removes every pending sum and gives back its bytes.
func (ea *envAnalytics) discard() uint64 {
	entries := ea.take()
	ea.settle(entries)
	var n uint64
	for _, e := range entries {
		n += uint64(e.count)
	}
	return n
}

func (ea *envAnalytics) received() uint64 { return ea.receivedTotal() }
func (ea *envAnalytics) pending() int64   { return ea.pendingKeys.Load() }
func (ea *envAnalytics) forwards() bool   { return ea.forward }

// relayMetrics names one kind of relay in /metrics.
type relayMetrics struct {
	kind, unit  string // "analytics", "Flag evaluations"
	pendingName string // the gauge of relay.pending
	pendingHelp string
	bound       string // the configuration key of dropBound
}

var relayMetricsOf = []relayMetrics{
	{"analytics", "Flag evaluations", "edge_proxy_analytics_pending_keys",
		"Sums waiting to be forwarded (bounded by analytics.max_pending_keys).", "analytics.max_pending_keys"},
	{"events", "Events", "edge_proxy_events_pending",
		"Events waiting to be forwarded or on their way (bounded by analytics.max_pending_events).", "analytics.max_pending_events"},
}

// writeRelayMetrics appends the analytics and events counters to /metrics.
func (s *server) writeRelayMetrics(b *bytes.Buffer) {
	envs := s.environments()
	if len(envs) == 0 || envs[0].analytics == nil {
		return
	}
	for _, m := range relayMetricsOf {
		of := func(env *environment) relay {
			for kind, r := range env.relays() {
				if kind == m.kind {
					return r
				}
			}
			return nil
		}
		prefix := "edge_proxy_" + m.kind
		counters := []struct {
			name, help string
			value      func(relay) uint64
		}{
			{prefix + "_received_total", m.unit + " posted by SDKs.", relay.received},
			{prefix + "_forwarded_total", m.unit + " accepted by the upstream.",
				func(r relay) uint64 { return r.stats().forwarded.Load() }},
			{prefix + "_retried_total", m.unit + " put back for a retry after a failed upstream request.",
				func(r relay) uint64 { return r.stats().retried.Load() }},
		}
		for _, c := range counters {
			fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s counter\n", c.name, c.help, c.name)
			for _, env := range envs {
				fmt.Fprintf(b, "%s{environment=%s} %d\n", c.name, label(env.pair.ClientSideKey), c.value(of(env)))
			}
		}
		writeLabelledCounter(b, prefix+"_dropped_total",
			m.unit+" lost: over "+m.bound+" (bound), over analytics.max_pending_bytes (bytes), naming a feature the document does not have (unknown_feature), refused by the upstream (rejected), unsent at shutdown (shutdown).",
			"reason", envs, func(env *environment) []labelledCount {
				c := of(env).stats()
				out := make([]labelledCount, dropReasons)
				for i := range out {
					out[i] = labelledCount{dropReasonNames[i], c.dropped[i].Load()}
				}
				return out
			})
		writeLabelledCounter(b, prefix+"_upstream_requests_total", "Requests to the upstream by result ("+m.kind+").",
			"result", envs, func(env *environment) []labelledCount {
				r := of(env)
				if !r.forwards() {
					return nil
				}
				out := make([]labelledCount, requestResults)
				for i := range out {
					out[i] = labelledCount{requestResultNames[i], r.stats().requests[i].Load()}
				}
				return out
			})
		fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s gauge\n", m.pendingName, m.pendingHelp, m.pendingName)
		for _, env := range envs {
			fmt.Fprintf(b, "%s{environment=%s} %d\n", m.pendingName, label(env.pair.ClientSideKey), of(env).pending())
		}
	}
	const held = "edge_proxy_pending_bytes"
	fmt.Fprintf(b, "# HELP %s Bytes held for the upstream, analytics and events pending or in flight (bounded by analytics.max_pending_bytes).\n# TYPE %s gauge\n%s %d\n",
		held, held, held, s.pending.used.Load())
}

// labelledCount is one series of a counter family whose series are an
// environment and one more label.
type labelledCount struct {
	label string
	n     uint64
}

func writeLabelledCounter(b *bytes.Buffer, name, help, labelName string, envs []*environment, series func(*environment) []labelledCount) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
	for _, env := range envs {
		for _, c := range series(env) {
			fmt.Fprintf(b, "%s{environment=%s,%s=%s} %d\n", name, label(env.pair.ClientSideKey), labelName, label(c.label), c.n)
		}
	}
}
