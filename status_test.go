package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const statusToken = "status-admin-token-0123456789"

func withAdminToken(c *Config) { c.AdminToken = statusToken }

func withName(name string) docEdit {
	return func(doc map[string]any) { doc["name"] = name }
}

// statusOf decodes GET /proxy/status through h with the admin token.
func statusOfServer(t testing.TB, h http.Handler) statusReport {
	t.Helper()
	rec := callHandler(t, h, http.MethodGet, "/proxy/status", map[string]string{"Authorization": "Bearer " + statusToken}, "")
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("GET /proxy/status = %d %q %s; want 200 JSON", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	var r statusReport
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatalf("status body %s: %v", rec.Body, err)
	}
	return r
}

// TestStatusAuth: the status needs admin_token (404 without one, as
// /proxy/config), then the token: as a Bearer token for tools, or as the
// password of HTTP Basic for a browser, whose 401 asks for Basic.
func TestStatusAuth(t *testing.T) {
	off := newTestServer(t).handler()
	if rec := callHandler(t, off, http.MethodGet, "/proxy/status", map[string]string{"Authorization": "Bearer " + statusToken}, ""); rec.Code != http.StatusNotFound {
		t.Errorf("GET /proxy/status without admin_token = %d; want 404", rec.Code)
	}

	h := newTestServer(t, withAdminToken).handler()
	browser := "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	basic := func(user, password string) string {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.SetBasicAuth(user, password)
		return r.Header.Get("Authorization")
	}
	tests := []struct {
		name, accept, auth string
		code               int
		challenge, ctype   string
	}{
		{"no token", "", "", http.StatusUnauthorized, "Bearer", "application/json"},
		{"wrong bearer token", "", "Bearer not-the-token", http.StatusUnauthorized, "Bearer", "application/json"},
		{"bearer token", "", "Bearer " + statusToken, http.StatusOK, "", "application/json"},
		{"browser without credentials", browser, "", http.StatusUnauthorized, "Basic", "application/json"},
		{"browser with a wrong password", browser, basic("ops", "nope"), http.StatusUnauthorized, "Basic", "application/json"},
		{"browser with the token as password", browser, basic("anyone", statusToken), http.StatusOK, "", "text/html"},
		{"basic for a tool", "application/json", basic("", statusToken), http.StatusOK, "", "application/json"},
	}
	for _, tt := range tests {
		rec := callHandler(t, h, http.MethodGet, "/proxy/status", map[string]string{"Accept": tt.accept, "Authorization": tt.auth}, "")
		challenge := rec.Header().Get("WWW-Authenticate")
		if rec.Code != tt.code || !strings.HasPrefix(challenge, tt.challenge) || (tt.challenge == "" && challenge != "") ||
			!strings.HasPrefix(rec.Header().Get("Content-Type"), tt.ctype) {
			t.Errorf("%s: %d, WWW-Authenticate %q, Content-Type %q; want %d, %q…, %q", tt.name, rec.Code, challenge,
				rec.Header().Get("Content-Type"), tt.code, tt.challenge, tt.ctype)
		}
		if strings.Contains(rec.Body.String(), statusToken) {
			t.Errorf("%s: the answer holds the admin token: %s", tt.name, rec.Body)
		}
	}
}

// TestStatusStaleEnvironment polls two environments; then B's upstream
// fails. The status shows A ok and B stale with the error in words, the
// last poll of each, and keys only as short prefixes.
func TestStatusStaleEnvironment(t *testing.T) {
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, "2026-11-20T10:00:00Z", "blue", withName("Alpha")))
	up.set(serverKeyB, testDocument(clientKeyB, "2026-11-20T11:00:00Z", "green", withName("Beta")))
	s := newTestServer(t, withUpstream(up), withAdminToken)
	s.poll(t, pollClient(t))
	h := s.handler()
	eventually(t, "both environments polled", func() bool {
		r := s.status()
		return !r.Stale && r.Environments[0].LastPoll != nil && r.Environments[1].LastPoll != nil
	})
	r := statusOfServer(t, h)
	if r.Version == "" || r.StartedAt.IsZero() || r.Config.Generation != 1 || r.Config.LoadedAt.IsZero() || r.TLS != nil {
		t.Errorf("status header = version %q, started %v, config %+v, tls %v; want a version, times, generation 1, no TLS",
			r.Version, r.StartedAt, r.Config, r.TLS)
	}
	a := r.Environments[0]
	if a.Name != "Alpha" || a.State != "ok" || a.Stale || a.Source != "upstream" || a.UpdatedAt != "2026-11-20T10:00:00Z" ||
		a.ContentVersion == "" || a.ContentAgeSeconds == nil || a.PagesFetched != 1 || a.NextPoll == nil ||
		a.UpstreamStream != "off" || a.Analytics == nil || !a.Analytics.Forwarding {
		t.Errorf("environment A = %+v; want Alpha, ok, from upstream, its updated_at and content version, 1 page, a next poll, stream off, analytics forwarded", a)
	}
	if p := a.LastPoll; p == nil || p.Outcome != "ok" || p.HTTPStatus != http.StatusOK || p.Error != "" {
		t.Errorf("environment A last poll = %+v; want ok 200", p)
	}

	up.setFault(func(w http.ResponseWriter, r *http.Request, _ int) bool {
		if r.Header.Get("X-Environment-Key") != serverKeyB {
			return false
		}
		w.WriteHeader(http.StatusBadGateway)
		return true
	})
	s.env(t, clientKeyB).triggerRefresh()
	eventually(t, "B stale", func() bool { return s.status().Environments[1].Stale })
	r = statusOfServer(t, h)
	b := r.Environments[1]
	if !r.Stale || b.State != "stale" || !b.Stale || b.Name != "Beta" || !strings.Contains(b.Error, "upstream status 502") {
		t.Errorf("after B's upstream failed: report stale %t, B = %+v; want stale, B stale with the upstream's 502 in its error", r.Stale, b)
	}
	if p := b.LastPoll; p == nil || p.Outcome != "error" || p.HTTPStatus != http.StatusBadGateway || !strings.Contains(p.Error, "502") {
		t.Errorf("B last poll = %+v; want error 502", p)
	}
	if r.Environments[0].Stale {
		t.Errorf("A = %+v; want ok while only B fails", r.Environments[0])
	}
	raw, _ := json.Marshal(r)
	for _, key := range []string{clientKeyA, clientKeyB, serverKeyA, serverKeyB} {
		if strings.Contains(string(raw), key) {
			t.Errorf("status holds the key %q in full", key)
		}
	}
	if b.ClientKey != maskedKey(clientKeyB) || len(b.ServerKeys) != 1 || b.ServerKeys[0] != maskedKey(serverKeyB) {
		t.Errorf("B keys = %q %q; want the short prefixes %q %q", b.ClientKey, b.ServerKeys, maskedKey(clientKeyB), maskedKey(serverKeyB))
	}
}

// TestStatusWithoutDocument: an environment that never got a document is
// an error, said in words with the poll's failure.
func TestStatusWithoutDocument(t *testing.T) {
	up := newUpstream(t) // no document for any key: 401
	s := newTestServer(t, withUpstream(up), withAdminToken, withPairs(pairA))
	s.poll(t, pollClient(t))
	eventually(t, "A polled", func() bool { return s.status().Environments[0].LastPoll != nil })
	e := statusOfServer(t, s.handler()).Environments[0]
	if e.State != "error" || !e.Stale || !strings.Contains(e.Error, "no document") || !strings.Contains(e.Error, "401") || e.Source != "" {
		t.Errorf("environment without a document = %+v; want error, stale, the 401 in words, no source", e)
	}
}

// TestStatusPageEscapes: the page is one self-contained document that
// names every environment and marks the stale one, and a document name is
// text, never markup.
func TestStatusPageEscapes(t *testing.T) {
	s := newTestServer(t, withAdminToken)
	evil := `<script>alert("owned")</script><img src="https://evil.example/x.png">`
	s.publishDoc(t, clientKeyA, testDocument(clientKeyA, "2026-11-20T10:00:00Z", "blue", withName(evil)))
	s.publishDoc(t, clientKeyB, testDocument(clientKeyB, "2026-11-20T10:00:00Z", "blue", withName("Beta & Co")))
	s.env(t, clientKeyB).status.setLastPoll(pollRecord{at: s.now(), httpStatus: 500, err: errBoom})

	rec := callHandler(t, s.handler(), http.MethodGet, "/proxy/status",
		map[string]string{"Accept": "text/html", "Authorization": "Bearer " + statusToken}, "")
	page := rec.Body.String()
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("status page = %d %q; want 200 text/html", rec.Code, rec.Header().Get("Content-Type"))
	}
	for _, bad := range []string{"<script", "<img", ` src="`, ` href="`, "<link", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("status page holds %q; want no script and nothing fetched from elsewhere:\n%s", bad, page)
		}
	}
	for _, want := range []string{
		`&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;&lt;img src=&#34;https://evil.example/x.png&#34;&gt;`,
		"Beta &amp; Co", ">STALE<", ">OK<", `http-equiv="refresh"`, "boom: the upstream is down", "1 of 2 environments not ok",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q:\n%s", want, page)
		}
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy = %q; want default-src 'none'", csp)
	}
}

var errBoom = errorString("boom: the upstream is down")

type errorString string

func (e errorString) Error() string { return string(e) }

// TestStatusStreamReloadTLS: the upstream stream's state, the configuration
// generation after a reload, and the certificate served over HTTPS.
func TestStatusStreamReloadTLS(t *testing.T) {
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, "2026-11-20T10:00:00Z", "blue"))
	up.set(serverKeyB, testDocument(clientKeyB, "2026-11-20T10:00:00Z", "blue"))
	cut := make(chan struct{})
	realtime := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-cut:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(realtime.Close)
	var once sync.Once
	closeCut := func() { once.Do(func() { close(cut) }) }
	t.Cleanup(closeCut)
	s := newTestServer(t, withUpstream(up), withPairs(pairA), withAdminToken, func(c *Config) { c.RealtimeAPIURL = realtime.URL })
	files := tlsFiles(t, newTLSCA(t).issue(t, "proxy.example", "proxy.example"))
	certs, err := newCertReloader(files, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	s.certs = certs
	s.poll(t, pollClient(t))
	eventually(t, "the upstream stream connected", func() bool { return s.status().Environments[0].UpstreamStream == "connected" })

	closeCut() // the upstream ends the stream: the proxy reconnects with backoff
	eventually(t, "the upstream stream reconnecting", func() bool { return s.status().Environments[0].UpstreamStream == "reconnecting" })

	next := *s.config()
	next.EnvironmentKeyPairs = []KeyPair{pairA, pairB}
	s.applyConfig(t.Context(), next)
	r := statusOfServer(t, s.handler())
	if r.Config.Generation != 2 || len(r.Environments) != 2 {
		t.Errorf("after a reload: generation %d, %d environments; want 2 and 2", r.Config.Generation, len(r.Environments))
	}
	if r.TLS == nil || time.Until(r.TLS.NotAfter) < 23*time.Hour || !slices.Contains(r.TLS.DNSNames, "proxy.example") {
		t.Errorf("tls = %+v; want the served certificate's expiry, a day away, and its names", r.TLS)
	}
}

// TestStatusPages: a document the upstream paginates shows how many pages
// it came in.
func TestStatusPages(t *testing.T) {
	up := newUpstream(t)
	first, later := pagedDocument("blue", "")
	up.setPages(serverKeyA, first, later...)
	s := newTestServer(t, withUpstream(up), withPairs(pairA), withAdminToken)
	s.poll(t, pollClient(t))
	eventually(t, "A polled", func() bool { return s.status().Environments[0].LastPoll != nil })
	if e := statusOfServer(t, s.handler()).Environments[0]; e.PagesFetched != 3 || e.State != "ok" {
		t.Errorf("paginated environment = %d pages, %s; want 3 pages, ok", e.PagesFetched, e.State)
	}
}

// TestStatusVerifyMismatches: the last mismatches shadow verification
// found are in the status, the environment masked, and on the page as text.
func TestStatusVerifyMismatches(t *testing.T) {
	s := newTestServer(t, withAdminToken)
	s.publishDoc(t, clientKeyA, testDocument(clientKeyA, "2026-11-20T10:00:00Z", "blue"))
	s.env(t, clientKeyA).verify.mismatches.Add(1)
	s.verify.remember(verifyMismatch{At: s.now(), Environment: clientKeyA, Feature: "<b>banner</b>", Identity: "3f2a",
		DocumentVersion: "1795168800.0", Proxy: &flagAnswer{Enabled: true, Value: json.RawMessage(`"blue"`)}})
	r := statusOfServer(t, s.handler())
	if len(r.VerifyMismatches) != 1 || r.VerifyMismatches[0].Environment != maskedKey(clientKeyA) || r.VerifyMismatches[0].Upstream != nil {
		t.Errorf("verify_mismatches = %+v; want the one mismatch, its environment masked", r.VerifyMismatches)
	}
	if v := r.Environments[0].Verify; v.Mismatches != 1 {
		t.Errorf("environment A verify = %+v; want 1 mismatch", v)
	}
	page := callHandler(t, s.handler(), http.MethodGet, "/proxy/status",
		map[string]string{"Accept": "text/html", "Authorization": "Bearer " + statusToken}, "").Body.String()
	for _, want := range []string{"&lt;b&gt;banner&lt;/b&gt;", "enabled true, value &#34;blue&#34;", "no such flag"} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q:\n%s", want, page)
		}
	}
}
