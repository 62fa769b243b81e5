package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Forwarding flag analytics upstream: a flusher per environment (on the
// pollers' errgroup) turns the pending sums into requests, one per label set
// and API version, and puts back what fails; serve flushes once more at
// shutdown.

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
func (ea *envAnalytics) batches(entries []analyticsEntry) []analyticsBatch {
	type group struct {
		labels analyticsLabels
		v2     bool
	}
	grouped := map[group][]analyticsEntry{}
	var rest []analyticsEntry
	for _, e := range entries {
		if e.count > maxAnalyticsCount {
			rest = append(rest, analyticsEntry{e.key, e.count - maxAnalyticsCount})
			e.count = maxAnalyticsCount
		}
		g := group{e.key.labels, e.key.v2}
		grouped[g] = append(grouped[g], e)
	}
	if dropped := ea.addAll(nil, rest); dropped > 0 {
		ea.droppedBound.Add(dropped)
	}
	groups := make([]group, 0, len(grouped))
	totals := make(map[group]int64, len(grouped))
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
			if dropped := ea.addAll(nil, grouped[g]); dropped > 0 {
				ea.droppedBound.Add(dropped)
			}
		}
		groups = groups[:maxFlushGroups]
	}
	var out []analyticsBatch
	for _, g := range groups {
		list := grouped[g]
		sort.Slice(list, func(i, j int) bool { return list[i].key.feature < list[j].key.feature })
		cur := analyticsBatch{labels: g.labels, v2: g.v2}
		for _, e := range list {
			item := encodeAnalyticsItem(e)
			if len(cur.entries) > 0 && len(cur.body)+len(item) > maxFlushBodyBytes {
				out = append(out, cur.finish())
				cur = analyticsBatch{labels: g.labels, v2: g.v2}
			}
			if len(cur.body) > 0 {
				cur.body = append(cur.body, ',')
			}
			cur.body = append(cur.body, item...)
			cur.entries = append(cur.entries, e)
		}
		out = append(out, cur.finish())
	}
	return out
}

// encodeAnalyticsItem is one entry as it appears in a request body: a
// member of the v1 object or an element of the v2 evaluations array.
func encodeAnalyticsItem(e analyticsEntry) []byte {
	name, _ := json.Marshal(e.key.feature)
	if !e.key.v2 {
		return strconv.AppendInt(append(name, ':'), e.count, 10)
	}
	b := append([]byte(`{"feature_name":`), name...)
	if e.key.identifier != "" {
		id, _ := json.Marshal(e.key.identifier)
		b = append(append(b, `,"identity_identifier":`...), id...)
	}
	b = strconv.AppendBool(append(b, `,"enabled_when_evaluated":`...), e.key.enabled)
	b = strconv.AppendInt(append(b, `,"count":`...), e.count, 10)
	return append(b, '}')
}

func (b analyticsBatch) finish() analyticsBatch {
	if b.v2 {
		b.body = append(append([]byte(`{"evaluations":[`), b.body...), "]}"...)
	} else {
		b.body = append(append([]byte{'{'}, b.body...), '}')
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

// errAnalyticsRefused marks an upstream answer that no retry can change (a
// 4xx other than 401, 403, 408 and 429): the batch is dropped, not retried.
var errAnalyticsRefused = errors.New("upstream refused the analytics")

// flushAnalytics sends an environment's pending sums upstream. Failed
// requests put their sums back; the returned error is the first of those
// (nil when nothing is left to retry). A refused batch is logged and
// dropped: sending it again would be refused again.
func (s *server) flushAnalytics(ctx context.Context, client *http.Client, ea *envAnalytics) error {
	var retry error
	for _, b := range ea.batches(ea.take()) {
		err := s.sendAnalytics(ctx, client, ea, b)
		switch {
		case err == nil:
			ea.flushOK.Add(1)
			ea.forwarded.Add(b.total())
		case errors.Is(err, errAnalyticsRefused):
			ea.flushRefuse.Add(1)
			ea.droppedRejected.Add(b.total())
			s.log.Error("analytics refused by the upstream; dropped", "env", ea.env.pair.ClientSideKey,
				"error", err.Error(), "evaluations", b.total())
		default:
			ea.flushFailed.Add(1)
			ea.addBack(b.entries)
			if retry == nil {
				retry = err
			}
		}
	}
	return retry
}

// sendAnalytics posts one batch with the environment's server key and the
// SDK's labels.
func (s *server) sendAnalytics(ctx context.Context, client *http.Client, ea *envAnalytics, b analyticsBatch) error {
	cfg := s.config()
	ctx, cancel := context.WithTimeout(ctx, cfg.pollTimeout())
	defer cancel()
	target := cfg.APIURL + "/analytics/flags/"
	if b.v2 {
		target = analyticsV2URL(cfg.APIURL)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(b.body))
	if err != nil {
		return err
	}
	h := req.Header
	h.Set("X-Environment-Key", string(ea.env.serverKey()))
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "flagsmith-edge-proxy/"+version)
	if b.labels.userAgent != "" {
		h.Set("User-Agent", b.labels.userAgent)
	}
	if b.labels.sdkUserAgent != "" {
		h.Set("Flagsmith-SDK-User-Agent", b.labels.sdkUserAgent)
	}
	if b.labels.appName != "" {
		h.Set("Flagsmith-Application-Name", b.labels.appName)
	}
	if b.labels.appVersion != "" {
		h.Set("Flagsmith-Application-Version", b.labels.appVersion)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("post %s: %w", req.URL.Path, maskURLError(err))
	}
	defer resp.Body.Close()
	// Read (a bounded part of) the answer so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxUpstreamAnswerBytes))
	switch code := resp.StatusCode; {
	case code >= 200 && code <= 299:
		return nil
	case code >= 400 && code <= 499 && code != http.StatusUnauthorized && code != http.StatusForbidden &&
		code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
		return fmt.Errorf("post %s: status %d: %w", req.URL.Path, code, errAnalyticsRefused)
	default:
		return fmt.Errorf("post %s: upstream status %d", req.URL.Path, code)
	}
}

// flushAnalyticsLoop is one environment's flusher, on the pollers' errgroup:
// every flush interval, or sooner with backoff after a failure, until ctx
// ends. The final flush is serve's, after the last request.
func (s *server) flushAnalyticsLoop(ctx context.Context, client *http.Client, ea *envAnalytics) {
	interval := seconds(s.config().Analytics.FlushIntervalSeconds)
	jitter := jitterFraction(ea.env.pair.ClientSideKey)
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
		// upstream may already have taken must not be counted again by the
		// final flush.
		err := s.flushAnalytics(context.WithoutCancel(ctx), client, ea)
		if err == nil {
			failures, wait = 0, interval
			continue
		}
		failures++
		wait = backoff(failures, interval, jitter)
		s.log.Warn("analytics flush failed; counts kept for retry", "env", ea.env.pair.ClientSideKey,
			"error", err.Error(), "attempt", failures, "retry_in", wait.String(),
			"pending_keys", ea.pendingKeys.Load())
	}
}

// finalAnalyticsFlush sends what is left when the server stops, every
// environment at once, within ctx (the shutdown deadline). What cannot be
// sent is counted as dropped and logged.
func (s *server) finalAnalyticsFlush(ctx context.Context, client *http.Client) {
	var wg sync.WaitGroup
	for _, env := range s.environments() {
		if ea := env.analytics; ea != nil && ea.forward {
			wg.Go(func() { s.lastAnalyticsFlush(ctx, client, ea) })
		}
	}
	wg.Wait()
}

// lastAnalyticsFlush sends an environment's counts one last time: at
// shutdown, or when a reload removes the environment. What cannot be sent
// is counted as dropped and logged.
func (s *server) lastAnalyticsFlush(ctx context.Context, client *http.Client, ea *envAnalytics) {
	err := s.flushAnalytics(ctx, client, ea)
	var lost uint64
	for _, e := range ea.take() {
		lost += uint64(e.count)
	}
	if lost > 0 {
		ea.droppedShutdown.Add(lost)
		s.log.Warn("analytics lost: the last flush failed", "env", ea.env.pair.ClientSideKey,
			"evaluations", lost, "error", fmt.Sprint(err))
	}
}

// writeAnalyticsMetrics appends the analytics counters to /metrics.
func (s *server) writeAnalyticsMetrics(b *bytes.Buffer) {
	envs := s.environments()
	if len(envs) == 0 || envs[0].analytics == nil {
		return
	}
	counters := []struct {
		name, help string
		value      func(*envAnalytics) uint64
	}{
		{"edge_proxy_analytics_received_total", "Flag evaluations reported by SDKs (the sum of the posted counts).",
			func(ea *envAnalytics) uint64 { return ea.receivedTotal() }},
		{"edge_proxy_analytics_forwarded_total", "Flag evaluations accepted by the upstream.",
			func(ea *envAnalytics) uint64 { return ea.forwarded.Load() }},
		{"edge_proxy_analytics_retried_total", "Flag evaluations put back for a retry after a failed upstream request.",
			func(ea *envAnalytics) uint64 { return ea.retried.Load() }},
	}
	for _, c := range counters {
		fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s counter\n", c.name, c.help, c.name)
		for _, env := range envs {
			fmt.Fprintf(b, "%s{environment=%s} %d\n", c.name, label(env.pair.ClientSideKey), c.value(env.analytics))
		}
	}
	writeLabelledCounter(b, "edge_proxy_analytics_dropped_total",
		"Flag evaluations lost: over analytics.max_pending_keys (bound), refused by the upstream (rejected), unsent at shutdown (shutdown).",
		"reason", envs, func(ea *envAnalytics) []labelledCount {
			return []labelledCount{{"bound", ea.droppedBound.Load()}, {"rejected", ea.droppedRejected.Load()}, {"shutdown", ea.droppedShutdown.Load()}}
		})
	writeLabelledCounter(b, "edge_proxy_analytics_upstream_requests_total", "Analytics requests to the upstream by result.",
		"result", envs, func(ea *envAnalytics) []labelledCount {
			if !ea.forward {
				return nil
			}
			return []labelledCount{{"ok", ea.flushOK.Load()}, {"error", ea.flushFailed.Load()}, {"refused", ea.flushRefuse.Load()}}
		})
	const pending = "edge_proxy_analytics_pending_keys"
	fmt.Fprintf(b, "# HELP %s Sums waiting to be forwarded (bounded by analytics.max_pending_keys).\n# TYPE %s gauge\n", pending, pending)
	for _, env := range envs {
		fmt.Fprintf(b, "%s{environment=%s} %d\n", pending, label(env.pair.ClientSideKey), env.analytics.pendingKeys.Load())
	}
}

// labelledCount is one series of a counter family whose series are an
// environment and one more label.
type labelledCount struct {
	label string
	n     uint64
}

func writeLabelledCounter(b *bytes.Buffer, name, help, labelName string, envs []*environment, series func(*envAnalytics) []labelledCount) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
	for _, env := range envs {
		for _, c := range series(env.analytics) {
			fmt.Fprintf(b, "%s{environment=%s,%s=%s} %d\n", name, label(env.pair.ClientSideKey), labelName, label(c.label), c.n)
		}
	}
}
