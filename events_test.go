package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// eventsSink plays Flagsmith's events API on a fake upstream: it records
// each batch posted to /v1/events, or answers status when one is set.
type eventsSink struct {
	status atomic.Int32 // 0 takes the batch (202)

	mu      sync.Mutex
	batches [][]string // each event's JSON, per request taken
	keys    []string   // X-Environment-Key of each request taken
	tries   int        // requests, taken or not
}

// fault answers the events API's requests and leaves the rest (documents)
// to the fake upstream.
func (k *eventsSink) fault() fault {
	return func(w http.ResponseWriter, r *http.Request, _ int) bool {
		if r.Method != http.MethodPost {
			return false
		}
		body, _ := io.ReadAll(r.Body)
		k.mu.Lock()
		defer k.mu.Unlock()
		k.tries++
		if r.URL.Path != "/v1/events" || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusNotFound)
			return true
		}
		if code := k.status.Load(); code != 0 {
			w.WriteHeader(int(code))
			return true
		}
		var batch struct{ Events []json.RawMessage }
		if err := json.Unmarshal(body, &batch); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return true
		}
		var events []string
		for _, e := range batch.Events {
			events = append(events, string(e))
		}
		k.batches = append(k.batches, events)
		k.keys = append(k.keys, r.Header.Get("X-Environment-Key"))
		w.WriteHeader(http.StatusAccepted)
		_, _ = fmt.Fprintf(w, `{"accepted": %d, "rejected": []}`, len(events))
		return true
	}
}

func (k *eventsSink) attempts() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.tries
}

// received is every event taken so far, in order.
func (k *eventsSink) received() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var all []string
	for _, b := range k.batches {
		all = append(all, b...)
	}
	return all
}

// eventsServer is a test server for environment A holding a document with
// the feature "banner", its events API the in-memory upstream (returned as
// the client to flush with) answered by a new sink.
func eventsServer(t *testing.T, edits ...func(*Config)) (*testServer, *eventsSink, *http.Client) {
	t.Helper()
	up := newUpstreamInMemory(t)
	up.set(serverKeyA, testDocument(clientKeyA, testTime(time.Now()), "blue"))
	sink := &eventsSink{}
	up.setFault(sink.fault())
	edits = append([]func(*Config){withPairs(pairA), func(c *Config) {
		c.Analytics.EventsAPIURL = "http://events.test/"
	}}, edits...)
	s := newTestServer(t, edits...)
	s.publishDoc(t, clientKeyA, testDocument(clientKeyA, testTime(time.Now()), "blue"))
	return s, sink, &http.Client{Transport: up}
}

// postEvents posts body to the relay with key and returns the answer.
func postEvents(t *testing.T, s *testServer, key, body string) (int, string) {
	t.Helper()
	rec := callHandler(t, s.handler(), http.MethodPost, "/v1/events", withKey(key), body)
	return rec.Code, rec.Body.String()
}

// event is one event as Flagsmith's Python SDK writes it, identified by id.
func event(id int, feature string) string {
	name := `null`
	if feature != "" {
		name = fmt.Sprintf("%q", feature)
	}
	return fmt.Sprintf(`{"event":"$flag_exposure","feature_name":%s,"identifier":"user-%d","value":"variant_a","traits":{"plan":"pro","age":42},"metadata":{"sdk_version":"6.1.0"},"timestamp":%d}`,
		name, id, 1765000000000+id)
}

func eventsBody(events ...string) string {
	return `{"events": [` + strings.Join(events, ", ") + `]}`
}

func eventsMetric(t *testing.T, s *testServer, name string) float64 {
	t.Helper()
	return anaMetric(t, s.server, fmt.Sprintf("edge_proxy_events_%s{environment=%q}", name, clientKeyA))
}

func eventsDropped(t *testing.T, s *testServer, reason string) float64 {
	t.Helper()
	return anaMetric(t, s.server, fmt.Sprintf("edge_proxy_events_dropped_total{environment=%q,reason=%q}", clientKeyA, reason))
}

// TestEventsRelay: events posted as SDKs post them, with either key and
// either path, reach the events API as they came (compacted), in order,
// with the environment's server key; what SDKs add beyond the documented
// fields is passed on.
func TestEventsRelay(t *testing.T) {
	s, sink, client := eventsServer(t)
	custom := `{"event": "checkout", "feature_name": null, "identifier": null, "value": 19.5,
		"traits": null, "metadata": null, "timestamp": 1765000000999, "session": {"id": "abc"}}`
	for _, post := range []struct{ key, path, body string }{
		{clientKeyA, "/v1/events", eventsBody(event(1, "banner"), custom)},
		{serverKeyA, "/v1/events/", eventsBody(event(2, ""))},
	} {
		rec := callHandler(t, s.handler(), http.MethodPost, post.path, withKey(post.key), post.body)
		if rec.Code != http.StatusAccepted || rec.Body.Len() != 0 {
			t.Fatalf("POST %s with %s = %d %q; want 202 with an empty body", post.path, post.key, rec.Code, rec.Body)
		}
	}
	if err := s.env(t, clientKeyA).events.flush(t.Context(), s.server, client); err != nil {
		t.Fatalf("flush = %v", err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(custom)); err != nil {
		t.Fatal(err)
	}
	want := []string{event(1, "banner"), compact.String(), event(2, "")}
	if diff := cmp.Diff(want, sink.received()); diff != "" {
		t.Errorf("events at the events API (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{serverKeyA}, sink.keys); diff != "" {
		t.Errorf("keys sent to the events API (-want +got):\n%s", diff)
	}
	for name, want := range map[string]float64{"received_total": 3, "forwarded_total": 3, "retried_total": 0, "pending": 0} {
		if got := eventsMetric(t, s, name); got != want {
			t.Errorf("edge_proxy_events_%s = %v; want %v", name, got, want)
		}
	}
	if got := s.pending.used.Load(); got != 0 {
		t.Errorf("pending bytes after the flush = %d; want 0", got)
	}
}

// TestEventsBadInput: what is not an events batch as SDKs send it is a 400
// naming the field; nothing of such a post is kept.
func TestEventsBadInput(t *testing.T) {
	s, _, _ := eventsServer(t)
	long := strings.Repeat("é", maxAnalyticsNameChars+1)
	ok := `"event":"e","timestamp":1`
	tests := []struct {
		name, key, body string
		wantCode        int
		wantIn          string
	}{
		{"unknown key", "NotAKnownKey", eventsBody(`{` + ok + `}`), 401, "unknown key"},
		{"missing key", "", eventsBody(`{` + ok + `}`), 401, "unknown key"},
		{"not JSON", clientKeyA, `{"events": [`, 400, "body"},
		{"not an object", clientKeyA, `[1]`, 400, "body"},
		{"no events", clientKeyA, `{"evnts": []}`, 400, "events: required"},
		{"events not an array", clientKeyA, `{"events": {}}`, 400, "events: must be an array"},
		{"event not an object", clientKeyA, eventsBody(`{`+ok+`}`, `"e"`), 400, "events[1]: must be an object"},
		{"null event", clientKeyA, eventsBody(`null`), 400, "events[0]: must be an object"},
		{"no name", clientKeyA, eventsBody(`{"timestamp":1}`), 400, "events[0].event: required"},
		{"empty name", clientKeyA, eventsBody(`{"event":"","timestamp":1}`), 400, "events[0].event: must not be empty"},
		{"name too long", clientKeyA, eventsBody(`{"event":"` + long + `","timestamp":1}`), 400, "events[0].event: longer than 2000"},
		{"feature name a number", clientKeyA, eventsBody(`{` + ok + `,"feature_name":3}`), 400, "events[0].feature_name"},
		{"identifier too long", clientKeyA, eventsBody(`{` + ok + `,"identifier":"` + long + `"}`), 400, "events[0].identifier: longer than 2000"},
		{"value an object", clientKeyA, eventsBody(`{` + ok + `,"value":{}}`), 400, "events[0].value"},
		{"value too long", clientKeyA, eventsBody(`{` + ok + `,"value":"` + long + `"}`), 400, "events[0].value: longer than 2000"},
		{"traits an array", clientKeyA, eventsBody(`{` + ok + `,"traits":[]}`), 400, "events[0].traits: must be an object"},
		{"trait an object", clientKeyA, eventsBody(`{` + ok + `,"traits":{"plan":{}}}`), 400, "events[0].traits.plan"},
		{"metadata a string", clientKeyA, eventsBody(`{` + ok + `,"metadata":"x"}`), 400, "events[0].metadata"},
		{"no timestamp", clientKeyA, eventsBody(`{"event":"e"}`), 400, "events[0].timestamp"},
		{"negative timestamp", clientKeyA, eventsBody(`{"event":"e","timestamp":-1}`), 400, "events[0].timestamp"},
		{"fractional timestamp", clientKeyA, eventsBody(`{"event":"e","timestamp":1.5}`), 400, "events[0].timestamp"},
		{"too large", clientKeyA, eventsBody(`{"event":"` + strings.Repeat("x", 1<<20) + `","timestamp":1}`), 413, "over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := postEvents(t, s, tt.key, tt.body)
			if code != tt.wantCode || !strings.Contains(body, tt.wantIn) {
				t.Errorf("POST /v1/events = %d %.200s; want %d naming %q", code, body, tt.wantCode, tt.wantIn)
			}
			var e errorBody
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Message == "" {
				t.Errorf("error body %.200s is not a JSON error", body)
			}
		})
	}
	if got := eventsMetric(t, s, "pending"); got != 0 {
		t.Errorf("events pending after bad posts = %v; want 0", got)
	}
}

// TestEventsUnknownFeature: an event naming a feature the document does
// not have is counted and not forwarded; the rest of its post is.
func TestEventsUnknownFeature(t *testing.T) {
	s, sink, client := eventsServer(t)
	if code, body := postEvents(t, s, clientKeyA, eventsBody(event(1, "banner"), event(2, "no_such_feature"), event(3, ""))); code != http.StatusAccepted {
		t.Fatalf("POST = %d %s; want 202", code, body)
	}
	if err := s.env(t, clientKeyA).events.flush(t.Context(), s.server, client); err != nil {
		t.Fatalf("flush = %v", err)
	}
	if diff := cmp.Diff([]string{event(1, "banner"), event(3, "")}, sink.received()); diff != "" {
		t.Errorf("events at the events API (-want +got):\n%s", diff)
	}
	if got := eventsDropped(t, s, "unknown_feature"); got != 1 {
		t.Errorf("dropped{unknown_feature} = %v; want 1", got)
	}
}

// TestEventsBounds: past analytics.max_pending_events or max_pending_bytes
// events are dropped and counted; a failed flush puts its events back
// without passing either bound and without losing one; once forwarded,
// every byte is given back.
func TestEventsBounds(t *testing.T) {
	t.Run("count", func(t *testing.T) {
		s, sink, client := eventsServer(t, func(c *Config) { c.Analytics.MaxPendingEvents = 3 })
		postEvents(t, s, clientKeyA, eventsBody(event(1, ""), event(2, ""), event(3, ""), event(4, ""), event(5, "")))
		if got := eventsDropped(t, s, "bound"); got != 2 {
			t.Errorf("dropped{bound} = %v; want 2", got)
		}
		ev := s.env(t, clientKeyA).events
		sink.status.Store(http.StatusServiceUnavailable)
		if err := ev.flush(t.Context(), s.server, client); err == nil {
			t.Fatal("flush to a failing events API = nil; want its error")
		}
		// In flight or put back, the three still hold their places.
		postEvents(t, s, clientKeyA, eventsBody(event(6, "")))
		sink.status.Store(0)
		if err := ev.flush(t.Context(), s.server, client); err != nil {
			t.Fatalf("flush = %v", err)
		}
		if diff := cmp.Diff([]string{event(1, ""), event(2, ""), event(3, "")}, sink.received()); diff != "" {
			t.Errorf("events at the events API (-want +got):\n%s", diff)
		}
		if got, want := eventsDropped(t, s, "bound"), 3.0; got != want {
			t.Errorf("dropped{bound} = %v; want %v", got, want)
		}
		if got := eventsMetric(t, s, "retried_total"); got != 3 {
			t.Errorf("retried = %v; want 3", got)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		s, sink, client := eventsServer(t, func(c *Config) { c.Analytics.MaxPendingBytes = minPendingBytes })
		long := func(i int) string {
			return fmt.Sprintf(`{"event":"e","identifier":%q,"timestamp":%d}`, longText(fmt.Sprint(i), maxAnalyticsNameChars), i)
		}
		var sent []string
		for i := range 20 { // 20 × 8 KB: past 64 KiB
			sent = append(sent, long(i))
		}
		postEvents(t, s, clientKeyA, eventsBody(sent...))
		dropped := eventsDropped(t, s, "bytes")
		if dropped <= 0 || dropped >= 20 {
			t.Errorf("dropped{bytes} = %v; want some of the 20 events", dropped)
		}
		if used := s.pending.used.Load(); used > minPendingBytes {
			t.Errorf("pending bytes = %d; want at most %d", used, minPendingBytes)
		}
		held := s.pending.used.Load()
		ev := s.env(t, clientKeyA).events
		sink.status.Store(http.StatusBadGateway)
		if err := ev.flush(t.Context(), s.server, client); err == nil {
			t.Fatal("flush to a failing events API = nil; want its error")
		}
		if got := s.pending.used.Load(); got != held {
			t.Errorf("pending bytes after a failed flush = %d; want %d (put back as they were)", got, held)
		}
		sink.status.Store(0)
		if err := ev.flush(t.Context(), s.server, client); err != nil {
			t.Fatalf("flush = %v", err)
		}
		if got := len(sink.received()); float64(got) != 20-dropped {
			t.Errorf("%d events forwarded; want %v", got, 20-dropped)
		}
		if got := s.pending.used.Load(); got != 0 {
			t.Errorf("pending bytes after the flush = %d; want 0", got)
		}
		if received, forwarded := eventsMetric(t, s, "received_total"), eventsMetric(t, s, "forwarded_total"); received != forwarded+dropped {
			t.Errorf("received %v, forwarded %v, dropped %v; want received = forwarded + dropped", received, forwarded, dropped)
		}
	})
}

// TestEventsBatches: a long queue goes in requests of at most
// maxEventsPerBatch events, in order; a refused batch is dropped and
// counted, the next ones still sent.
func TestEventsBatches(t *testing.T) {
	s, sink, client := eventsServer(t)
	var want []string
	for p := range 5 {
		var events []string
		for i := range 500 {
			events = append(events, event(p*500+i, ""))
		}
		postEvents(t, s, clientKeyA, eventsBody(events...))
		want = append(want, events...)
	}
	if err := s.env(t, clientKeyA).events.flush(t.Context(), s.server, client); err != nil {
		t.Fatalf("flush = %v", err)
	}
	if diff := cmp.Diff(want, sink.received()); diff != "" {
		t.Errorf("events at the events API (-want +got):\n%s", diff)
	}
	for i, b := range sink.batches {
		if len(b) > maxEventsPerBatch {
			t.Errorf("request %d carried %d events; want at most %d", i, len(b), maxEventsPerBatch)
		}
	}
	if len(sink.batches) != 3 {
		t.Errorf("%d requests for 2,500 events; want 3", len(sink.batches))
	}

	sink.status.Store(http.StatusUnprocessableEntity)
	postEvents(t, s, clientKeyA, eventsBody(event(1, "")))
	if err := s.env(t, clientKeyA).events.flush(t.Context(), s.server, client); err != nil {
		t.Fatalf("flush of a refused batch = %v; want nil (nothing to retry)", err)
	}
	if got := eventsDropped(t, s, "rejected"); got != 1 {
		t.Errorf("dropped{rejected} = %v; want 1", got)
	}
}

// TestEventsRetryBackoff runs the environment's loops under synctest: the
// events API fails twice, and the flusher retries with backoff within the
// flush interval until every event arrives, once and in order.
func TestEventsRetryBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, sink, client := eventsServer(t)
		sink.status.Store(http.StatusServiceUnavailable)
		stop := s.poll(t, client)
		defer stop()
		postEvents(t, s, clientKeyA, eventsBody(event(1, ""), event(2, "")))
		time.Sleep(10*time.Second + time.Millisecond) // the first flush: fails
		synctest.Wait()
		postEvents(t, s, clientKeyA, eventsBody(event(3, "")))
		time.Sleep(9 * time.Second) // a retry within the interval: fails
		synctest.Wait()
		if got := sink.attempts(); got < 2 {
			t.Fatalf("%d requests 19 s in, the first failing; want a retry within the flush interval", got)
		}
		sink.status.Store(0)
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if diff := cmp.Diff([]string{event(1, ""), event(2, ""), event(3, "")}, sink.received()); diff != "" {
			t.Errorf("events at the events API (-want +got):\n%s", diff)
		}
		if got := eventsMetric(t, s, "retried_total"); got < 2 {
			t.Errorf("retried = %v; want at least 2", got)
		}
	})
}

// TestEventsFinalFlush: what is queued at shutdown is sent once more; what
// that cannot send is counted as dropped at shutdown, its bytes given back.
func TestEventsFinalFlush(t *testing.T) {
	s, sink, client := eventsServer(t)
	postEvents(t, s, clientKeyA, eventsBody(event(1, "")))
	s.finalFlush(t.Context(), client)
	if diff := cmp.Diff([]string{event(1, "")}, sink.received()); diff != "" {
		t.Errorf("events at the events API after the final flush (-want +got):\n%s", diff)
	}
	sink.status.Store(http.StatusServiceUnavailable)
	postEvents(t, s, clientKeyA, eventsBody(event(2, ""), event(3, "")))
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	s.finalFlush(ctx, client)
	if got := eventsDropped(t, s, "shutdown"); got != 2 {
		t.Errorf("dropped{shutdown} = %v; want 2", got)
	}
	if got := s.pending.used.Load(); got != 0 {
		t.Errorf("pending bytes after the final flush = %d; want 0", got)
	}
}
