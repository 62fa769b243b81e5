package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestPostIdentitiesRedirect: a redirect to another host reaches it
// without the server key, as the pollers' redirects do; the request keeps
// its body (307) and the answer is read.
func TestPostIdentitiesRedirect(t *testing.T) {
	var gotKey, gotBody string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotKey = r.Header.Get("X-Environment-Key")
		body, _ := io.ReadAll(r.Body)
		gotBody = string(body)
		w.Header().Set(updatedAtHeader, "1.5")
		_, _ = w.Write([]byte(`{"flags": []}`))
	}))
	t.Cleanup(other.Close)
	up := newUpstream(t)
	up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
		http.Redirect(w, r, other.URL+"/api/v1/identities/", http.StatusTemporaryRedirect)
		return true
	})
	s := newTestServer(t, withPairs(pairA), withUpstream(up))
	ans, err := s.postIdentities(context.Background(), pollClient(t), s.env(t, clientKeyA), []byte(`{"identifier": "u"}`), true)
	if err != nil {
		t.Fatalf("postIdentities through a redirect = %v", err)
	}
	if got := up.last(t).Get("X-Environment-Key"); got != serverKeyA {
		t.Errorf("the configured host got key %q; want the server key", got)
	}
	if gotKey != "" {
		t.Errorf("another host got the key %q; want none", gotKey)
	}
	if gotBody != `{"identifier": "u"}` || string(ans.body) != `{"flags": []}` || ans.version != "1.5" {
		t.Errorf("redirected request body %q, answer %q version %q; want the body sent on and the answer read", gotBody, ans.body, ans.version)
	}
}

// TestPostIdentitiesAnswerBounded: an answer is read up to
// maxIdentitiesAnswerBytes, and a status outside 2xx is an error that says
// whether a retry may help.
func TestPostIdentitiesAnswerBounded(t *testing.T) {
	up := newUpstream(t)
	s := newTestServer(t, withPairs(pairA), withUpstream(up))
	post := func() error {
		_, err := s.postIdentities(context.Background(), pollClient(t), s.env(t, clientKeyA), []byte(`{}`), true)
		return err
	}
	huge := []byte(`"` + strings.Repeat("x", maxIdentitiesAnswerBytes) + `"`)
	up.setFault(answerWith(huge))
	if err := post(); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("postIdentities of a %d-byte answer = %v; want an error", len(huge), err)
	}
	for code, retry := range map[int]bool{500: true, 503: true, 429: true, 408: true, 401: true, 400: false, 404: false, 422: false} {
		up.setFault(failWith(code))
		err := post()
		if err == nil || retryable(err) != retry {
			t.Errorf("postIdentities answered %d = %v, retryable %v; want an error, retryable %v", code, err, err != nil && retryable(err), retry)
		}
	}
	s.logs.noServerKeys(t)
}

// TestE2EVerifyAndWriteBack runs the built binary with shadow
// verification and write-back on, against a fake Flagsmith that answers
// identities with a reference answer (wrong for one identity, with stored
// traits for another): the checks are counted in /metrics, the mismatch
// logged by hash, and the identities written once, without what is
// transient.
func TestE2EVerifyAndWriteBack(t *testing.T) {
	bin := buildEdgeProxy(t)
	doc := demoDocument(t, verifyUpdatedAt, "Welcome")
	up := newUpstream(t)
	up.set(demoServerKey, doc)
	up.answerIdentities(&identityReference{wrong: map[string]string{"e2e-id-wrong": "dark_mode"},
		stored: map[string]bool{"e2e-id-stored": true}})
	cfg := e2eWriteFile(t, t.TempDir(), "config.json", map[string]any{
		"environment_key_pairs":      []any{map[string]any{"server_side_key": demoServerKey, "client_side_key": demoClientKey}},
		"api_url":                    up.apiURL,
		"api_poll_frequency_seconds": 1,
		"server":                     map[string]any{"host": "127.0.0.1", "port": 0, "drain_seconds": 0},
		"logging":                    map[string]any{"log_format": "json"},
		"verify":                     map[string]any{"sample_rate": 1, "max_per_second": 100},
		"write_back":                 map[string]any{"enabled": true, "max_per_second": 100},
	})
	p := startProcess(t, bin, []string{"-config", cfg}, nil, nil)
	addr, _ := p.waitLog(t, "listening", 10*time.Second)["addr"].(string)
	base := "http://" + addr
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	waitStatus(t, client, base+"/proxy/health/readiness", http.StatusOK, 5*time.Second)

	checks := fmt.Sprintf("edge_proxy_verify_checks_total{environment=%q}", demoClientKey)
	requests := []struct{ method, path, body string }{
		{"POST", "/api/v1/identities/", `{"identifier": "e2e-id-honest", "traits": [{"trait_key": "plan", "trait_value": "premium"},
			{"trait_key": "email", "trait_value": "e2e-tv@example.com", "transient": true}]}`},
		{"POST", "/api/v1/identities/", `{"identifier": "e2e-id-wrong", "traits": [{"trait_key": "country", "trait_value": "GB"}]}`},
		{"GET", "/api/v1/identities/?identifier=e2e-id-stored", ""},
		{"POST", "/api/v1/identities/", `{"identifier": "e2e-id-transient", "transient": true, "traits": [{"trait_key": "plan", "trait_value": "free"}]}`},
	}
	for i, r := range requests {
		if resp, body := httpDo(t, client, r.method, base+r.path, demoClientKey, r.body); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s = %d %s", r.method, r.path, resp.StatusCode, body)
		}
		// One at a time, each past the rate's interval (10 ms), so that
		// none is dropped.
		chainWaitMetric(t, base, checks, float64(i+1))
		time.Sleep(20 * time.Millisecond)
	}
	wantMetrics := map[string]float64{
		"edge_proxy_verify_checks_total":                             4,
		"edge_proxy_verify_matches_total":                            2,
		"edge_proxy_verify_mismatches_total":                         1,
		"edge_proxy_verify_mismatched_flags_total":                   1,
		"edge_proxy_verify_rechecks_total":                           0,
		`edge_proxy_verify_skipped_total{reason="stored_traits"}`:    1,
		`edge_proxy_verify_skipped_total{reason="document_changed"}`: 0,
		`edge_proxy_verify_skipped_total{reason="upstream_error"}`:   0,
		`edge_proxy_verify_dropped_total{reason="rate_limited"}`:     0,
		`edge_proxy_verify_dropped_total{reason="queue_full"}`:       0,
		"edge_proxy_write_back_queued_total":                         3,
		"edge_proxy_write_back_written_total":                        3,
		"edge_proxy_write_back_unchanged_total":                      0,
		"edge_proxy_write_back_transient_total":                      1,
		"edge_proxy_write_back_retries_total":                        0,
		`edge_proxy_write_back_dropped_total{reason="queue_full"}`:   0,
		`edge_proxy_write_back_dropped_total{reason="failed"}`:       0,
	}
	chainWaitMetric(t, base, fmt.Sprintf("edge_proxy_write_back_written_total{environment=%q}", demoClientKey), 3)
	for name, want := range wantMetrics {
		// The environment is the first label of every series.
		env := fmt.Sprintf("environment=%q", demoClientKey)
		sample := name + "{" + env + "}"
		if metric, labels, ok := strings.Cut(name, "{"); ok {
			sample = metric + "{" + env + "," + labels
		}
		if got := chainMetric(t, base, sample); got != want {
			t.Errorf("%s = %v; want %v", sample, got, want)
		}
	}

	rec := p.waitLog(t, "shadow verification mismatch", 5*time.Second)
	if rec["feature"] != "dark_mode" || rec["identity_hash"] == nil {
		t.Errorf("mismatch logged as %v; want dark_mode with an identity_hash", rec)
	}
	for _, line := range p.stderr() {
		for _, secret := range []string{"e2e-id-", "e2e-tv", demoServerKey} {
			if strings.Contains(line, secret) {
				t.Errorf("log line holds %q: %s", secret, line)
			}
		}
	}

	// What was written: the identities as sent, less what is transient.
	var written []any
	for _, req := range up.identityRequests() {
		var body map[string]any
		mustUnmarshal(t, req.body, &body)
		if req.key != demoServerKey {
			t.Errorf("identities request with key %q; want the server key", req.key)
		}
		if body["transient"] == true {
			continue // a shadow request
		}
		written = append(written, body)
	}
	want := []any{
		jsonValue(t, `{"identifier": "e2e-id-honest", "traits": [{"trait_key": "plan", "trait_value": "premium"}]}`),
		jsonValue(t, `{"identifier": "e2e-id-wrong", "traits": [{"trait_key": "country", "trait_value": "GB"}]}`),
		jsonValue(t, `{"identifier": "e2e-id-stored"}`),
	}
	if diff := cmp.Diff(want, written); diff != "" {
		t.Errorf("written (-want +got):\n%s", diff)
	}
}
