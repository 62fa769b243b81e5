package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Tests of staying in sync: conditional polling that cannot go stale, the content
// version SDKs see, pushes, and following an upstream's realtime stream.

// syncFlag is the value of "banner" served to key, "" when none is served.
func syncFlag(t testing.TB, s *testServer, key string) string {
	t.Helper()
	code, body := pollerFlagsBody(t, s, key)
	if code != http.StatusOK {
		return ""
	}
	var flags []apiFlag
	mustUnmarshal(t, []byte(body), &flags)
	var v string
	if len(flags) != 1 || json.Unmarshal(flags[0].Value, &v) != nil {
		t.Fatalf("flags = %s; want one flag with a string value", body)
	}
	return v
}

// syncValidators names the upstreams of the fault rows: Flagsmith's API,
// which sends Last-Modified, and one that sends no validator.
var syncValidators = map[upstreamValidators]string{
	upstreamLastModified: "last-modified",
	upstreamNoValidators: "no validators",
}

// forEachValidator runs row under synctest (fake clock, starting on a whole
// second) once per way the upstream can date its documents, with an
// in-memory upstream that does so.
func forEachValidator(t *testing.T, row func(t *testing.T, up *fakeUpstream)) {
	for v, name := range syncValidators {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				up := newUpstreamInMemory(t)
				up.sendValidators(v)
				row(t, up)
			})
		})
	}
}

// TestSyncFaultRows: each way an If-Modified-Since could pin an old document
// ( issue "never stale") converges to the upstream's document. Under
// synctest the clock is fake and the bubble starts on a whole second.
func TestSyncFaultRows(t *testing.T) {
	t.Run("future date", func(t *testing.T) {
		// The upstream once served a document dated an hour ahead, then the
		// corrected one. Asking from the future document's date would make
		// every later document look old.
		forEachValidator(t, func(t *testing.T, up *fakeUpstream) {
			t0 := time.Now()
			up.set(serverKeyA, testDocument(clientKeyA, testTime(t0.Add(time.Hour)), "future"))
			s := newTestServer(t, withPairs(pairA), func(c *Config) { c.PollFrequency = 10 })
			s.poll(t, &http.Client{Transport: up})
			time.Sleep(5 * time.Second)
			up.set(serverKeyA, testDocument(clientKeyA, testTime(time.Now()), "fixed"))
			time.Sleep(6 * time.Second)
			synctest.Wait()
			if got := syncFlag(t, s, clientKeyA); got != "fixed" {
				t.Errorf("banner = %q one poll after the fix; want \"fixed\"", got)
			}
			for _, req := range up.recorded() {
				if ims, err := http.ParseTime(req.header.Get("If-Modified-Since")); err == nil && ims.After(req.at) {
					t.Errorf("If-Modified-Since %v sent at %v: in the future", ims, req.at)
				}
			}
		})
	})
	t.Run("same-second change", func(t *testing.T) {
		// Two changes within one second (the second pushed): Flagsmith
		// compares whole seconds, so asking from the first one's second
		// would hide the second one.
		forEachValidator(t, func(t *testing.T, up *fakeUpstream) {
			t0 := time.Now()
			up.set(serverKeyA, testDocument(clientKeyA, testTime(t0.Add(100*time.Millisecond)), "one"))
			time.Sleep(150 * time.Millisecond)
			s := newTestServer(t, withPairs(pairA), func(c *Config) { c.PollFrequency = 10 })
			s.poll(t, &http.Client{Transport: up})
			synctest.Wait()
			time.Sleep(150 * time.Millisecond)
			up.set(serverKeyA, testDocument(clientKeyA, testTime(time.Now()), "two"))
			s.environments()[0].triggerRefresh()
			time.Sleep(pushInterval)
			synctest.Wait()
			if got := syncFlag(t, s, clientKeyA); got != "two" {
				t.Errorf("banner = %q after a change within the same second and a push; want \"two\"", got)
			}
			// The next poll, answered in a later second than the
			// document's, fetches it once more; after it, polls are
			// conditional again: the fourth is a 304.
			time.Sleep(20 * time.Second)
			synctest.Wait()
			if n := up.notModified(); n != 1 {
				t.Errorf("%d polls answered 304 by 21s; want 1 (the fourth poll)", n)
			}
		})
	})
	t.Run("cache reload", func(t *testing.T) {
		// A restart loads the cached document; the upstream changed after
		// it was cached, within the same second or after a future date.
		now := time.Now()
		base := now.Truncate(time.Second)
		tests := []struct {
			name           string
			cached, latest time.Time
		}{
			{"same second", base, base.Add(time.Millisecond)},
			{"cached document from the future", now.Add(time.Hour), now},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				dir := t.TempDir()
				if err := writeCache(dir, clientKeyA, testDocument(clientKeyA, testTime(tt.cached), "cached")); err != nil {
					t.Fatal(err)
				}
				up := newUpstream(t)
				up.sendValidators(upstreamLastModified)
				up.set(serverKeyA, testDocument(clientKeyA, testTime(tt.latest), "latest"))
				s := newTestServer(t, withUpstream(up), withPairs(pairA), func(c *Config) { c.CacheDir = dir })
				s.loadCache()
				if got := syncFlag(t, s, clientKeyA); got != "cached" {
					t.Fatalf("banner after loadCache = %q; want \"cached\"", got)
				}
				pollerMustPoll(t, s, s.environments()[0], pollClient(t))
				if got := syncFlag(t, s, clientKeyA); got != "latest" {
					t.Errorf("banner after the first poll of a warm start = %q; want \"latest\" (If-Modified-Since %q)",
						got, up.last(t).Get("If-Modified-Since"))
				}
			})
		}
	})
	t.Run("wrong 304s: full refresh", func(t *testing.T) {
		// An upstream (or a cache in front of it) answers 304 to every
		// conditional request: every full_refresh_seconds a poll without
		// conditions brings the document anyway.
		synctest.Test(t, func(t *testing.T) {
			up := newUpstreamInMemory(t)
			up.set(serverKeyA, testDocument(clientKeyA, testTime(time.Now()), "old"))
			up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
				if r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != "" {
					w.WriteHeader(http.StatusNotModified)
					return true
				}
				return false
			})
			s := newTestServer(t, withPairs(pairA), func(c *Config) { c.PollFrequency = 10; c.FullRefresh = 30 })
			s.poll(t, &http.Client{Transport: up})
			time.Sleep(5 * time.Second)
			up.set(serverKeyA, testDocument(clientKeyA, testTime(time.Now()), "new"))
			time.Sleep(24 * time.Second)
			synctest.Wait()
			if got := syncFlag(t, s, clientKeyA); got != "old" {
				t.Fatalf("banner at 29s = %q; want \"old\" (the upstream answered 304)", got)
			}
			time.Sleep(2 * time.Second)
			synctest.Wait()
			if got := syncFlag(t, s, clientKeyA); got != "new" {
				t.Errorf("banner at 31s = %q; want \"new\" (full refresh at 30s)", got)
			}
			if !strings.Contains(string(s.exposition()), `edge_proxy_full_refreshes_total{environment="`+clientKeyA+`"} 1`) {
				t.Errorf("/metrics does not count one full refresh:\n%s", s.exposition())
			}
		})
	})
}

// TestSyncServedVersion: the updated_at SDKs see (header and events) moves
// forward with every change of content, even when the document's own
// updated_at does not, and stays put when nothing changed.
func TestSyncServedVersion(t *testing.T) {
	h := newTestServer(t).listen(t, nil)
	doc := func(updatedAt time.Time, banner string) []byte {
		return testDocument(clientKeyA, testTime(updatedAt), banner)
	}
	h.publishDoc(t, clientKeyA, doc(sseBase, "v1"))
	st := sseOpen(t, h, sseStreamPath(clientKeyA), nil)
	st.wantUpdated(t, sseBase)
	wantHeader := func(step string, want time.Time) {
		t.Helper()
		_, header, _ := h.do(t, "GET", "/api/v1/flags/", http.Header{"X-Environment-Key": {clientKeyA}})
		if got, wantText := header.Get(updatedAtHeader), strconv.FormatFloat(sseFloat(want), 'f', -1, 64); got != wantText {
			t.Errorf("%s: %s = %q; want %q", step, updatedAtHeader, got, wantText)
		}
	}
	steps := []struct {
		name string
		doc  []byte
		want time.Time // the version shown after it; the zero time: no event
	}{
		{"value edited, updated_at unchanged", doc(sseBase, "v2"), sseBase.Add(time.Microsecond)},
		{"the same document again", doc(sseBase, "v2"), time.Time{}},
		{"another edit, updated_at unchanged", doc(sseBase, "v3"), sseBase.Add(2 * time.Microsecond)},
		{"an older updated_at", doc(sseBase.Add(-time.Hour), "v4"), sseBase.Add(3 * time.Microsecond)},
		{"a newer updated_at", doc(sseBase.Add(time.Hour), "v5"), sseBase.Add(time.Hour)},
	}
	shown := sseBase
	for _, step := range steps {
		h.publishDoc(t, clientKeyA, step.doc)
		if !step.want.IsZero() {
			st.wantUpdated(t, step.want)
			shown = step.want
		}
		wantHeader(step.name, shown)
	}
	// No event was sent for the unchanged document: the next one is v6's.
	h.publishDoc(t, clientKeyA, doc(sseBase.Add(2*time.Hour), "v6"))
	st.wantUpdated(t, sseBase.Add(2*time.Hour))
}

// syncSign is the X-Flagsmith-Signature of body.
func syncSign(secret, body string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	return hex.EncodeToString(mac.Sum(nil))
}

// syncWebhookBody is a webhook as Flagsmith sends it when a flag changes in
// the environment whose id is env (a JSON value: 23, or {"id": 23, …}).
func syncWebhookBody(env string) string {
	state := `{"enabled": true, "environment": ` + env + `, "feature": {"id": 7, "name": "banner", "type": "CONFIG",
	  "project": 12, "initial_value": null, "default_enabled": false, "description": null, "created_date": "2026-11-20T10:00:00.000000Z"},
	  "feature_segment": null, "feature_state_value": "green", "id": 10430, "identity": null, "identity_identifier": null}`
	return `{"data": {"changed_by": "Some User", "new_state": ` + state + `, "previous_state": ` + state + `,
	  "timestamp": "2026-11-20T10:00:00.040Z"}, "event_type": "FLAG_UPDATED"}`
}

// TestSyncPushAuth: who may push, and which environments each push names.
func TestSyncPushAuth(t *testing.T) {
	const token, secret = "queue-change-token-0123456789", "webhook-secret-0123456789"
	withID := func(id string) docEdit { return func(doc map[string]any) { doc["id"] = json.Number(id) } }
	enabled := func(c *Config) {
		c.AdminToken = sseToken
		c.SSE.AuthenticationToken = token
		c.WebhookSecret = secret
	}
	queue := func(key string) string { return "/sse/environments/" + key + "/queue-change" }
	changeBody := `{"updated_at": "2026-11-20T10:00:00.123456+00:00"}`
	webhook := syncWebhookBody("23")
	tests := []struct {
		name        string
		disabled    bool
		path        string
		headers     map[string]string
		body        string
		wantCode    int
		wantSignals []string // environments with a refresh pending
	}{
		{name: "queue-change", path: queue(clientKeyA), body: changeBody,
			headers: map[string]string{"Authorization": "Token " + token}, wantCode: 200, wantSignals: []string{clientKeyA}},
		{name: "queue-change: scheme in lower case", path: queue(clientKeyB), body: changeBody,
			headers: map[string]string{"Authorization": "token " + token}, wantCode: 200, wantSignals: []string{clientKeyB}},
		{name: "queue-change: wrong token", path: queue(clientKeyA), body: changeBody,
			headers: map[string]string{"Authorization": "Token not-the-token"}, wantCode: 401},
		{name: "queue-change: Bearer scheme", path: queue(clientKeyA), body: changeBody,
			headers: map[string]string{"Authorization": "Bearer " + token}, wantCode: 401},
		{name: "queue-change: no token", path: queue(clientKeyA), body: changeBody, wantCode: 401},
		{name: "queue-change: unknown key", path: queue("unknownKey"), body: changeBody,
			headers: map[string]string{"Authorization": "Token " + token}, wantCode: 404},
		{name: "queue-change: server key", path: queue(serverKeyA), body: changeBody,
			headers: map[string]string{"Authorization": "Token " + token}, wantCode: 404},
		{name: "queue-change: body not JSON", path: queue(clientKeyA), body: `updated`,
			headers: map[string]string{"Authorization": "Token " + token}, wantCode: 400},
		{name: "queue-change: updated_at not a time", path: queue(clientKeyA), body: `{"updated_at": "soon"}`,
			headers: map[string]string{"Authorization": "Token " + token}, wantCode: 400},
		{name: "queue-change: disabled", disabled: true, path: queue(clientKeyA), body: changeBody,
			headers: map[string]string{"Authorization": "Token " + token}, wantCode: 404},
		{name: "webhook naming environment 23", path: "/proxy/webhook", body: webhook,
			headers: map[string]string{"X-Flagsmith-Signature": syncSign(secret, webhook)}, wantCode: 200, wantSignals: []string{clientKeyB}},
		{name: "webhook naming it as an object", path: "/proxy/webhook", body: syncWebhookBody(`{"id": 23, "name": "Development"}`),
			headers:  map[string]string{"X-Flagsmith-Signature": syncSign(secret, syncWebhookBody(`{"id": 23, "name": "Development"}`))},
			wantCode: 200, wantSignals: []string{clientKeyB}},
		{name: "webhook naming no environment", path: "/proxy/webhook", body: `{"event_type": "FLAG_UPDATED"}`,
			headers:  map[string]string{"X-Flagsmith-Signature": syncSign(secret, `{"event_type": "FLAG_UPDATED"}`)},
			wantCode: 200, wantSignals: []string{clientKeyA, clientKeyB}},
		{name: "webhook naming an environment not served here", path: "/proxy/webhook", body: syncWebhookBody("99"),
			headers: map[string]string{"X-Flagsmith-Signature": syncSign(secret, syncWebhookBody("99"))}, wantCode: 200},
		{name: "webhook: bad signature", path: "/proxy/webhook", body: webhook,
			headers: map[string]string{"X-Flagsmith-Signature": syncSign("another-secret", webhook)}, wantCode: 401},
		{name: "webhook: signature of another body", path: "/proxy/webhook", body: webhook,
			headers: map[string]string{"X-Flagsmith-Signature": syncSign(secret, webhook+" ")}, wantCode: 401},
		{name: "webhook: no signature", path: "/proxy/webhook", body: webhook, wantCode: 401},
		{name: "webhook: disabled", disabled: true, path: "/proxy/webhook", body: webhook,
			headers: map[string]string{"X-Flagsmith-Signature": syncSign(secret, webhook)}, wantCode: 404},
		{name: "refresh: bearer in lower case", path: "/proxy/refresh?environment=" + clientKeyA,
			headers: map[string]string{"Authorization": "bearer " + sseToken}, wantCode: 202, wantSignals: []string{clientKeyA}},
		{name: "refresh: BEARER", path: "/proxy/refresh?environment=" + clientKeyB,
			headers: map[string]string{"Authorization": "BEARER " + sseToken}, wantCode: 202, wantSignals: []string{clientKeyB}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var edit func(*Config)
			if !tt.disabled {
				edit = enabled
			}
			s := newTestServer(t, edit)
			s.publishDoc(t, clientKeyA, testDocument(clientKeyA, pollerUpdatedAt, "a", withID("12")))
			s.publishDoc(t, clientKeyB, testDocument(clientKeyB, pollerUpdatedAt, "b", withID("23")))
			rec := callHandler(t, s.handler(), "POST", tt.path, tt.headers, tt.body)
			if rec.Code != tt.wantCode {
				t.Errorf("POST %s = %d %s; want %d", tt.path, rec.Code, rec.Body, tt.wantCode)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" || !json.Valid(rec.Body.Bytes()) {
				t.Errorf("POST %s answered %q %q; want a JSON body", tt.path, ct, rec.Body)
			}
			var got []string
			for _, key := range []string{clientKeyA, clientKeyB} {
				if len(s.env(t, key).refresh) > 0 {
					got = append(got, key)
				}
			}
			if diff := cmp.Diff(tt.wantSignals, got); diff != "" {
				t.Errorf("environments with a refresh pending (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSyncPushRate sends 10,000 pushes of every kind within one second:
// they make each environment poll at most once per second, and the last
// push is answered by a poll that starts after it.
func TestSyncPushRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const token, secret = "queue-change-token-0123456789", "webhook-secret-0123456789"
		up := newUpstreamInMemory(t)
		up.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "a"))
		up.set(serverKeyB, testDocument(clientKeyB, pollerUpdatedAt, "b"))
		s := newTestServer(t, func(c *Config) {
			c.PollFrequency = 3600
			c.AdminToken = sseToken
			c.SSE.AuthenticationToken = token
			c.WebhookSecret = secret
		})
		start := time.Now()
		s.poll(t, &http.Client{Transport: up})
		synctest.Wait()
		webhook := `{"event_type": "FLAG_UPDATED"}`
		pushes := []struct {
			path    string
			headers map[string]string
			body    string
		}{
			{"/proxy/refresh", map[string]string{"Authorization": "Bearer " + sseToken}, ""},
			{"/sse/environments/" + clientKeyA + "/queue-change", map[string]string{"Authorization": "Token " + token}, `{"updated_at": "2026-11-20T10:00:00Z"}`},
			{"/sse/environments/" + clientKeyB + "/queue-change", map[string]string{"Authorization": "Token " + token}, `{"updated_at": "2026-11-20T10:00:00Z"}`},
			{"/proxy/webhook", map[string]string{"X-Flagsmith-Signature": syncSign(secret, webhook)}, webhook},
		}
		h := s.handler()
		var lastPush time.Duration
		for i := range 10_000 {
			p := pushes[i%len(pushes)]
			if rec := callHandler(t, h, "POST", p.path, p.headers, p.body); rec.Code >= 300 {
				t.Fatalf("push %d to %s = %d %s", i, p.path, rec.Code, rec.Body)
			}
			lastPush = time.Since(start)
			time.Sleep(100 * time.Microsecond)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		for _, key := range []string{serverKeyA, serverKeyB} {
			polls := up.offsets(key, start)[1:] // after the first, scheduled poll
			for i := 1; i < len(polls); i++ {
				if gap := polls[i] - polls[i-1]; gap < pushInterval {
					t.Errorf("%s: polls %d and %d %v apart (%d polls); want at least %v", key, i, i+1, gap, len(polls), pushInterval)
					break
				}
			}
			if n := len(polls); n > 2 {
				t.Errorf("%s: %d polls for 10,000 pushes within %v; want at most 2 (one a second)", key, n, lastPush)
			}
			if last := polls[len(polls)-1]; last < lastPush {
				t.Errorf("%s: last poll at %v, before the last push at %v", key, last, lastPush)
			}
		}
		text := string(s.exposition())
		for kind, want := range map[string]int{"refresh": 2500, "queue_change": 5000, "webhook": 2500} {
			if line := fmt.Sprintf("edge_proxy_pushes_total{kind=%q} %d", kind, want); !strings.Contains(text, line) {
				t.Errorf("/metrics has no %q", line)
			}
		}
	})
}

// TestSyncConditionalDocument: GET /api/v1/environment-document/ answers
// conditional requests as Flagsmith's API does, so that a proxy polling this
// one downloads nothing while nothing changed.
func TestSyncConditionalDocument(t *testing.T) {
	s := newTestServer(t)
	s.publishDoc(t, clientKeyA, testDocument(clientKeyA, pollerUpdatedAt, "blue"))
	future := time.Now().Add(time.Hour)
	s.publishDoc(t, clientKeyB, testDocument(clientKeyB, testTime(future), "blue"))
	get := func(key string, headers map[string]string) *httptest.ResponseRecorder {
		headers["X-Environment-Key"] = key
		return callHandler(t, s.handler(), "GET", documentPath, headers, "")
	}
	first := get(serverKeyA, map[string]string{})
	etag := first.Header().Get("ETag")
	if lm := first.Header().Get("Last-Modified"); first.Code != 200 || lm != pollerIMS || etag == "" {
		t.Fatalf("GET = %d, Last-Modified %q, ETag %q; want 200, %q and an ETag", first.Code, lm, etag, pollerIMS)
	}
	tests := []struct {
		name     string
		headers  map[string]string
		wantCode int
	}{
		{"If-Modified-Since equal", map[string]string{"If-Modified-Since": pollerIMS}, 304},
		{"If-Modified-Since later", map[string]string{"If-Modified-Since": "Sat, 21 Nov 2026 10:00:00 GMT"}, 304},
		{"If-Modified-Since earlier", map[string]string{"If-Modified-Since": "Fri, 20 Nov 2026 09:59:59 GMT"}, 200},
		{"If-Modified-Since not a date", map[string]string{"If-Modified-Since": "yesterday"}, 200},
		{"If-None-Match", map[string]string{"If-None-Match": etag}, 304},
		{"If-None-Match decides over If-Modified-Since", map[string]string{"If-None-Match": `"other"`, "If-Modified-Since": pollerIMS}, 200},
	}
	for _, tt := range tests {
		rec := get(serverKeyA, tt.headers)
		if rec.Code != tt.wantCode {
			t.Errorf("%s: GET = %d; want %d", tt.name, rec.Code, tt.wantCode)
		}
		if tt.wantCode == 304 && rec.Body.Len() != 0 {
			t.Errorf("%s: 304 with a body %q", tt.name, rec.Body)
		}
	}
	// A document dated in the future is said to be modified now, not then.
	rec := get(serverKeyB, map[string]string{})
	lm, err := http.ParseTime(rec.Header().Get("Last-Modified"))
	if err != nil || lm.After(time.Now()) {
		t.Errorf("future document: Last-Modified = %q; want no later than now", rec.Header().Get("Last-Modified"))
	}
	if rec := get(serverKeyB, map[string]string{"If-Modified-Since": future.UTC().Format(http.TimeFormat)}); rec.Code != 304 {
		t.Errorf("future document, If-Modified-Since its date: %d; want 304", rec.Code)
	}
}

// TestSyncFollowProxy chains two proxies in process: B polls A and follows
// A's realtime stream, with a poll period of an hour, so only A's events can
// bring B a change. A value-only edit on A (same updated_at) reaches B's SDKs.
func TestSyncFollowProxy(t *testing.T) {
	a := newTestServer(t, withPairs(pairA)).listen(t, nil)
	a.publishDoc(t, clientKeyA, testDocument(clientKeyA, testTime(sseBase), "v1"))
	b := newTestServer(t, withPairs(pairA), func(c *Config) {
		c.APIURL = a.url + "/api/v1"
		c.RealtimeAPIURL = a.url + "/"
		c.PollFrequency = 3600
	}).listen(t, nil)
	b.poll(t, pollClient(t))
	eventually(t, "B holds A's document", func() bool { return syncFlag(t, b, clientKeyA) == "v1" })
	st := sseOpen(t, b, sseStreamPath(clientKeyA), nil)
	st.wantUpdated(t, sseBase)
	eventually(t, "B's upstream stream is open", func() bool {
		return strings.Contains(string(b.exposition()), `edge_proxy_upstream_stream_connected{environment="`+clientKeyA+`"} 1`)
	})

	v2 := sseBase.Add(time.Minute)
	a.publishDoc(t, clientKeyA, testDocument(clientKeyA, testTime(v2), "v2"))
	st.wantUpdated(t, v2)
	if got := syncFlag(t, b, clientKeyA); got != "v2" {
		t.Errorf("B serves %q after A's event; want v2", got)
	}
	a.publishDoc(t, clientKeyA, testDocument(clientKeyA, testTime(v2), "v3")) // value only
	st.wantUpdated(t, v2.Add(time.Microsecond))
	if got := syncFlag(t, b, clientKeyA); got != "v3" {
		t.Errorf("B serves %q after a value-only edit on A; want v3", got)
	}
	// Two events announced newer documents (a third does when the stream
	// opened before B's first poll answered); B fetched three documents.
	if n := syncMetric(t, b, `edge_proxy_upstream_stream_events_total{environment="`+clientKeyA+`",newer="true"}`); n < 2 || n > 3 {
		t.Errorf("B counted %v events announcing newer documents; want 2 or 3", n)
	}
	// The poll that brought v3 is counted just after its event is sent.
	eventually(t, "B counted 3 fetched documents", func() bool {
		return syncMetric(t, b, `edge_proxy_polls_total{environment="`+clientKeyA+`",result="ok"}`) >= 3
	})
	if n := syncMetric(t, b, `edge_proxy_polls_total{environment="`+clientKeyA+`",result="ok"}`); n != 3 {
		t.Errorf("B fetched %v documents; want 3", n)
	}
}

// syncMetric is the value of one sample of s's /metrics.
func syncMetric(t testing.TB, s *testServer, sample string) float64 {
	t.Helper()
	for _, line := range strings.Split(string(s.exposition()), "\n") {
		if v, found := strings.CutPrefix(line, sample+" "); found {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no sample %s", sample)
	return 0
}

// TestSyncStreamReconnects cuts the upstream stream: the proxy reconnects
// with backoff, and an event on the new connection that announces a newer
// document brings it.
func TestSyncStreamReconnects(t *testing.T) {
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, testTime(sseBase), "v1"))
	var connects atomic.Int32
	announce := make(chan string, 4)
	cut := make(chan struct{})
	realtime := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != sseStreamPath(clientKeyA) {
			http.NotFound(w, r)
			return
		}
		connects.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		for {
			select {
			case v := <-announce:
				fmt.Fprintf(w, "event: environment_updated\ndata: {\"updated_at\": %s}\n\n", v)
				w.(http.Flusher).Flush()
			case <-cut:
				return
			case <-r.Context().Done():
				return
			}
		}
	}))
	t.Cleanup(realtime.Close)
	t.Cleanup(func() { close(cut) })
	s := newTestServer(t, withUpstream(up), withPairs(pairA), func(c *Config) {
		c.RealtimeAPIURL = realtime.URL
		c.PollFrequency = 3600
	})
	s.poll(t, pollClient(t))
	eventually(t, "the first document", func() bool { return syncFlag(t, s, clientKeyA) == "v1" })
	eventually(t, "the stream connected", func() bool { return connects.Load() == 1 })

	// An event no newer than the held document asks for nothing.
	announce <- unixSeconds(sseBase)
	eventually(t, "the event counted", func() bool {
		return strings.Contains(string(s.exposition()), `edge_proxy_upstream_stream_events_total{environment="`+clientKeyA+`",newer="false"} 1`)
	})
	if n := up.count(serverKeyA); n != 1 {
		t.Errorf("%d polls after an event for the held document; want 1", n)
	}

	cut <- struct{}{}
	s.logs.waitFor(t, logRecord{level: "WARN", msg: "upstream stream lost", env: clientKeyA})
	eventually(t, "the stream reconnected", func() bool { return connects.Load() == 2 })
	v2 := sseBase.Add(time.Minute)
	up.set(serverKeyA, testDocument(clientKeyA, testTime(v2), "v2"))
	announce <- unixSeconds(v2)
	eventually(t, "the announced document", func() bool { return syncFlag(t, s, clientKeyA) == "v2" })
}
