package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestHandlersHealth(t *testing.T) {
	s := newTestServer(t, withPairs(KeyPair{ServerSideKey: apiServerKey, ClientSideKey: apiClientKey}))
	h := s.handler()
	readinessPaths := []string{
		"/proxy/health", "/proxy/health/", "/proxy/health/readiness", "/proxy/health/readiness/",
		"/health", "/health/",
	}
	liveness := func(t *testing.T) {
		for _, path := range []string{"/proxy/health/liveness", "/proxy/health/liveness/"} {
			rec := callHandler(t, h, "GET", path, nil, "")
			if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
				t.Errorf("GET %s = %d %q; want 200 and an empty body", path, rec.Code, rec.Body)
			}
		}
	}

	t.Run("before any document", func(t *testing.T) {
		for _, path := range readinessPaths {
			rec := callHandler(t, h, "GET", path, nil, "")
			want := `{"status":"error","reason":"environment document(s) not updated.","last_successful_update":null}`
			if rec.Code != http.StatusServiceUnavailable {
				t.Errorf("GET %s = %d; want 503", path, rec.Code)
			}
			if diff := cmp.Diff(apiJSON(t, []byte(want)), apiJSON(t, rec.Body.Bytes())); diff != "" {
				t.Errorf("GET %s body mismatch (-want +got):\n%s", path, diff)
			}
		}
		liveness(t)
	})

	if _, err := s.publish(s.environments()[0], []byte(apiDocument), "test"); err != nil {
		t.Fatalf("publish = %v", err)
	}
	t.Run("after a document", func(t *testing.T) {
		for _, path := range readinessPaths {
			rec := callHandler(t, h, "GET", path, nil, "")
			if rec.Code != http.StatusOK {
				t.Errorf("GET %s = %d %s; want 200", path, rec.Code, rec.Body)
				continue
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("GET %s Content-Type = %q; want application/json", path, ct)
			}
			var got readiness
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("GET %s body %q: %v", path, rec.Body, err)
			}
			if got.Status != "ok" || got.Reason != nil || got.LastSuccessfulUpdate == nil {
				t.Errorf("GET %s = %s; want status ok, reason null, a last_successful_update", path, rec.Body)
				continue
			}
			if _, err := time.Parse(time.RFC3339, *got.LastSuccessfulUpdate); err != nil {
				t.Errorf("GET %s last_successful_update %q is not RFC 3339: %v", path, *got.LastSuccessfulUpdate, err)
			}
		}
		liveness(t)
	})

	t.Run("sse health", func(t *testing.T) {
		for _, path := range []string{"/sse/health", "/sse/health/"} {
			rec := callHandler(t, h, "GET", path, nil, "")
			if rec.Code != http.StatusOK {
				t.Errorf("GET %s = %d; want 200", path, rec.Code)
			}
			if diff := cmp.Diff(map[string]any{"status": "ok"}, apiJSON(t, rec.Body.Bytes())); diff != "" {
				t.Errorf("GET %s body mismatch (-want +got):\n%s", path, diff)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		rec := callHandler(t, h, "GET", "/metrics", nil, "")
		if rec.Code != http.StatusOK {
			t.Fatalf("GET /metrics = %d; want 200", rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("GET /metrics Content-Type = %q; want text/plain", ct)
		}
		if !strings.Contains(rec.Body.String(), "edge_proxy_http_requests_total") {
			t.Errorf("GET /metrics body has no request counter:\n%.500s", rec.Body)
		}
	})
}

// TestReadinessWhileDraining: a draining proxy is unready, but still says
// when its documents last refreshed; they did not vanish with the SIGTERM.
func TestReadinessWhileDraining(t *testing.T) {
	s := newTestServer(t, withPairs(pairA))
	s.publishDoc(t, clientKeyA, testDocument(clientKeyA, "2026-11-20T10:00:00Z", "blue"))
	confirmed := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	s.env(t, clientKeyA).lastSuccess.Store(confirmed.UnixNano())
	s.now = func() time.Time { return confirmed.Add(time.Second) }
	s.stopping.Store(true)

	rec := callHandler(t, s.handler(), http.MethodGet, "/proxy/health/readiness", nil, "")
	var got readiness
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("readiness body %s: %v", rec.Body, err)
	}
	if rec.Code != http.StatusServiceUnavailable || got.Reason == nil || *got.Reason != reasonStopping {
		t.Errorf("readiness while draining = %d %s; want 503 with reason %q", rec.Code, rec.Body, reasonStopping)
	}
	want := confirmed.Format(time.RFC3339Nano)
	if got.LastSuccessfulUpdate == nil || *got.LastSuccessfulUpdate != want {
		t.Errorf("last_successful_update while draining = %v; want %q", got.LastSuccessfulUpdate, want)
	}
}
