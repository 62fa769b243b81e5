package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const (
	anaClientKey  = "AnalyticsClientKey0001"
	anaServerKey  = "ser.AnalyticsServerKey0001"
	anaClientKey2 = "AnalyticsClientKey0002"
	anaServerKey2 = "ser.AnalyticsServerKey0002"
)

// anaFeatures are the features of anaDocument: the names the analytics
// tests count. Any other name is unknown to an environment that holds the
// document.
var anaFeatures = []string{"banner", "footer", "checkout", "search", "all", "new_onboarding", "other-env", "hot"}

// anaDocument is a minimal environment document for clientKey, with a flag
// for each of anaFeatures.
func anaDocument(clientKey string) []byte {
	var states []any
	for i, name := range anaFeatures {
		states = append(states, map[string]any{
			"feature": map[string]any{"id": i + 1, "name": name, "type": "STANDARD"}, "enabled": true,
			"django_id": 11 + i, "feature_state_value": "blue", "multivariate_feature_state_values": []any{},
		})
	}
	doc := map[string]any{
		"api_key":    clientKey,
		"name":       "analytics test",
		"updated_at": "2026-11-20T10:00:00.123456Z",
		"project": map[string]any{
			"hide_disabled_flags": false, "server_key_only_feature_ids": []int{}, "segments": []any{},
		},
		"feature_states":     states,
		"identity_overrides": []any{},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return b
}

// anaV2Key is one v2 sum as the fake upstream records it.
type anaV2Key struct {
	Feature, Identifier string
	Enabled             bool
}

// anaPost is one analytics request the fake upstream accepted.
type anaPost struct {
	Path, Key, UserAgent, SDKUserAgent, AppName, AppVersion string
	Body                                                    string
}

// anaUpstream is a fake Flagsmith: it serves each environment's document to
// its server key and records the analytics posts it accepts. fail, when
// set, decides an analytics request's fate first: a status to answer
// without recording, 0 to accept, or -1 to hang until the client gives up.
type anaUpstream struct {
	t        testing.TB
	srv      *httptest.Server
	docs     map[string][]byte // server key → document
	fail     atomic.Pointer[func(r *http.Request) int]
	mu       sync.Mutex
	v1       map[string]int64   // feature → sum
	v2       map[anaV2Key]int64 // evaluation → sum
	posts    []anaPost
	attempts int // analytics requests, accepted or not
}

func newAnaUpstream(t testing.TB) *anaUpstream {
	t.Helper()
	u := &anaUpstream{t: t, v1: map[string]int64{}, v2: map[anaV2Key]int64{}, docs: map[string][]byte{
		anaServerKey:  anaDocument(anaClientKey),
		anaServerKey2: anaDocument(anaClientKey2),
	}}
	u.srv = httptest.NewServer(u)
	t.Cleanup(u.srv.Close)
	return u
}

func (u *anaUpstream) apiURL() string { return u.srv.URL + "/api/v1" }

func (u *anaUpstream) setFail(f func(r *http.Request) int) { u.fail.Store(&f) }

func (u *anaUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("X-Environment-Key")
	if r.Method == http.MethodGet && r.URL.Path == "/api/v1/environment-document/" {
		doc, ok := u.docs[key]
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write(doc)
		return
	}
	if r.Method != http.MethodPost || (r.URL.Path != "/api/v1/analytics/flags/" && r.URL.Path != "/api/v2/analytics/flags/") {
		u.t.Errorf("fake upstream: unexpected %s %s", r.Method, r.URL.Path)
		w.WriteHeader(http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	u.mu.Lock()
	u.attempts++
	u.mu.Unlock()
	if f := u.fail.Load(); f != nil {
		switch code := (*f)(r); {
		case code < 0:
			<-r.Context().Done()
			return
		case code > 0:
			w.WriteHeader(code)
			return
		}
	}
	if _, ok := u.docs[key]; !ok {
		u.t.Errorf("fake upstream: analytics post with key %q, not a server key", key)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.Header.Get("Content-Type") != "application/json" {
		u.t.Errorf("fake upstream: Content-Type %q", r.Header.Get("Content-Type"))
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.posts = append(u.posts, anaPost{
		Path: r.URL.Path, Key: key, UserAgent: r.UserAgent(), SDKUserAgent: r.Header.Get("Flagsmith-SDK-User-Agent"),
		AppName: r.Header.Get("Flagsmith-Application-Name"), AppVersion: r.Header.Get("Flagsmith-Application-Version"),
		Body: string(body),
	})
	if r.URL.Path == "/api/v1/analytics/flags/" {
		var counts map[string]int64
		if err := json.Unmarshal(body, &counts); err != nil {
			u.t.Errorf("fake upstream: v1 body %q: %v", body, err)
		}
		for k, n := range counts {
			u.v1[k] += n
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	var v2 struct {
		Evaluations []struct {
			FeatureName          string  `json:"feature_name"`
			IdentityIdentifier   *string `json:"identity_identifier"`
			EnabledWhenEvaluated bool    `json:"enabled_when_evaluated"`
			Count                int64   `json:"count"`
		} `json:"evaluations"`
	}
	if err := json.Unmarshal(body, &v2); err != nil {
		u.t.Errorf("fake upstream: v2 body %q: %v", body, err)
	}
	for _, e := range v2.Evaluations {
		k := anaV2Key{Feature: e.FeatureName, Enabled: e.EnabledWhenEvaluated}
		if e.IdentityIdentifier != nil {
			k.Identifier = *e.IdentityIdentifier
		}
		u.v2[k] += e.Count
	}
	w.WriteHeader(http.StatusNoContent)
}

// sums returns copies of what the fake accepted so far.
func (u *anaUpstream) sums() (map[string]int64, map[anaV2Key]int64, []anaPost) {
	u.mu.Lock()
	defer u.mu.Unlock()
	v1 := make(map[string]int64, len(u.v1))
	for k, n := range u.v1 {
		v1[k] = n
	}
	v2 := make(map[anaV2Key]int64, len(u.v2))
	for k, n := range u.v2 {
		v2[k] = n
	}
	return v1, v2, append([]anaPost(nil), u.posts...)
}

// newAnaServer builds a server for the two analytics test environments
// pointing at upstream (which may be nil), with the configuration changed
// by edit (which may be nil).
func newAnaServer(t testing.TB, upstream *anaUpstream, edit func(*Config)) *server {
	t.Helper()
	cfg := defaultConfig()
	cfg.EnvironmentKeyPairs = []KeyPair{
		{ServerSideKey: anaServerKey, ClientSideKey: anaClientKey},
		{ServerSideKey: anaServerKey2, ClientSideKey: anaClientKey2},
	}
	if upstream != nil {
		cfg.APIURL = upstream.apiURL()
	}
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("config.validate() = %v", err)
	}
	return newServer(cfg, slog.New(slog.DiscardHandler))
}

func anaEnv(t testing.TB, s *server, clientKey string) *envAnalytics {
	t.Helper()
	for _, env := range s.environments() {
		if env.pair.ClientSideKey == clientKey {
			return env.analytics
		}
	}
	t.Fatalf("no environment %q", clientKey)
	return nil
}

// anaPostTo sends one analytics post through the whole handler stack.
func anaPostTo(t testing.TB, h http.Handler, path, key, body string, headers map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("X-Environment-Key", key)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// anaMetric reads one sample of /metrics; -1 when it is absent.
func anaMetric(t testing.TB, s *server, name string) float64 {
	t.Helper()
	for line := range strings.Lines(string(s.exposition())) {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return v
		}
	}
	return -1
}

func anaEnvMetric(t testing.TB, s *server, metric, clientKey string) float64 {
	t.Helper()
	return anaMetric(t, s, fmt.Sprintf("%s{environment=%q}", metric, clientKey))
}

func anaDropped(t testing.TB, s *server, clientKey, reason string) float64 {
	t.Helper()
	return anaMetric(t, s, fmt.Sprintf("edge_proxy_analytics_dropped_total{environment=%q,reason=%q}", clientKey, reason))
}

func TestAnalyticsV2URL(t *testing.T) {
	tests := []struct{ apiURL, want string }{
		{"https://edge.api.flagsmith.com/api/v1", "https://edge.api.flagsmith.com/api/v2/analytics/flags/"},
		{"http://flagsmith.internal:8000/api/v1", "http://flagsmith.internal:8000/api/v2/analytics/flags/"},
		{"https://example.com/flagsmith/api/v1", "https://example.com/flagsmith/api/v2/analytics/flags/"},
		{"http://proxy:8000", "http://proxy:8000/v2/analytics/flags/"},
	}
	for _, tt := range tests {
		if got := analyticsV2URL(tt.apiURL); got != tt.want {
			t.Errorf("analyticsV2URL(%q) = %q; want %q", tt.apiURL, got, tt.want)
		}
	}
}

func TestAnalyticsEndpoints(t *testing.T) {
	s := newAnaServer(t, nil, nil)
	h := s.handler()
	const v1Body, v2Body = `{"banner": 2}`, `{"evaluations": [{"feature_name": "banner", "enabled_when_evaluated": true, "count": 2}]}`
	tests := []struct {
		name, path, key, body string
		wantCode              int
	}{
		{"v1 client key", "/api/v1/analytics/flags/", anaClientKey, v1Body, 200},
		{"v1 server key", "/api/v1/analytics/flags/", anaServerKey, v1Body, 200},
		{"v1 no slash", "/api/v1/analytics/flags", anaClientKey, v1Body, 200},
		{"v2 client key", "/api/v2/analytics/flags/", anaClientKey, v2Body, 204},
		{"v2 server key", "/api/v2/analytics/flags/", anaServerKey, v2Body, 204},
		{"v2 no slash", "/api/v2/analytics/flags", anaClientKey, v2Body, 204},
		{"v1 unknown key", "/api/v1/analytics/flags/", "NotAKnownKey", v1Body, 401},
		{"v1 missing key", "/api/v1/analytics/flags/", "", v1Body, 401},
		{"v2 unknown key", "/api/v2/analytics/flags/", "ser.unknown", v2Body, 401},
	}
	var wantReceived int64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := anaPostTo(t, h, tt.path, tt.key, tt.body, nil)
			if rec.Code != tt.wantCode {
				t.Fatalf("POST %s = %d %s; want %d", tt.path, rec.Code, rec.Body, tt.wantCode)
			}
			switch tt.wantCode {
			case 200, 204:
				wantReceived += 2
				if rec.Body.Len() != 0 {
					t.Errorf("POST %s body = %q; want empty", tt.path, rec.Body)
				}
			default:
				var e errorBody
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Status != "unauthorized" {
					t.Errorf("POST %s body = %q; want a JSON unauthorized error", tt.path, rec.Body)
				}
				if strings.Contains(rec.Body.String(), "NotAKnownKey") {
					t.Errorf("the 401 echoes the whole unknown key: %s", rec.Body)
				}
			}
		})
	}
	if got := anaEnvMetric(t, s, "edge_proxy_analytics_received_total", anaClientKey); got != float64(wantReceived) {
		t.Errorf("received = %v; want %d", got, wantReceived)
	}
	if got := anaMetric(t, s, `edge_proxy_http_requests_total{route="/api/v2/analytics/flags",code="204"}`); got != 3 {
		t.Errorf("v2 204 requests in /metrics = %v; want 3", got)
	}

	// A GET is not an analytics method.
	req := httptest.NewRequest(http.MethodGet, "/api/v1/analytics/flags/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") == "" {
		t.Errorf("GET analytics = %d (Allow %q); want 405 with Allow", rec.Code, rec.Header().Get("Allow"))
	}
}

func TestAnalyticsDisabled(t *testing.T) {
	s := newAnaServer(t, nil, func(c *Config) { c.Analytics.Enabled = false })
	for _, path := range []string{"/api/v1/analytics/flags/", "/api/v1/analytics/flags", "/api/v2/analytics/flags/"} {
		rec := anaPostTo(t, s.handler(), path, anaClientKey, `{"banner": 1}`, nil)
		if rec.Code != http.StatusNotFound {
			t.Errorf("POST %s with analytics off = %d; want 404", path, rec.Code)
		}
	}
	if strings.Contains(string(s.exposition()), "edge_proxy_analytics_") {
		t.Error("/metrics shows analytics while they are off")
	}
}

func TestAnalyticsBadInput(t *testing.T) {
	s := newAnaServer(t, nil, nil)
	h := s.handler()
	const v1, v2 = "/api/v1/analytics/flags/", "/api/v2/analytics/flags/"
	ev := func(fields string) string { return `{"evaluations": [{` + fields + `}]}` }
	long := strings.Repeat("x", maxAnalyticsNameChars+1)
	tests := []struct {
		name, path, body string
		wantCode         int
		wantMsg          string // a substring of the error message
	}{
		{"v1 empty body", v1, ``, 400, "body"},
		{"v1 malformed", v1, `{"banner": }`, 400, "body"},
		{"v1 truncated", v1, `{"banner": 1`, 400, "body"},
		{"v1 trailing garbage", v1, `{"banner": 1} x`, 400, "body"},
		{"v1 array", v1, `[{"banner": 1}]`, 400, "body"},
		{"v1 null", v1, `null`, 400, "body"},
		{"v1 string", v1, `"banner"`, 400, "body"},
		{"v1 number", v1, `3`, 400, "body"},
		{"v1 deep nesting", v1, `{"a":` + strings.Repeat("[", 100_000), 400, "body"},
		{"v1 negative count", v1, `{"banner": -1}`, 400, "banner: count must be a non-negative integer"},
		{"v1 fractional count", v1, `{"banner": 1.5}`, 400, "banner: count"},
		{"v1 float-looking count", v1, `{"banner": 1.0}`, 400, "banner: count"},
		{"v1 exponent count", v1, `{"banner": 1e3}`, 400, "banner: count"},
		{"v1 string count", v1, `{"banner": "3"}`, 400, "banner: count"},
		{"v1 null count", v1, `{"banner": null}`, 400, "banner: count"},
		{"v1 bool count", v1, `{"banner": true}`, 400, "banner: count"},
		{"v1 object count", v1, `{"banner": {"n": 1}}`, 400, "banner: count"},
		{"v1 huge count", v1, `{"banner": 2147483648}`, 400, "at most 2147483647"},
		{"v1 overflowing count", v1, `{"banner": 99999999999999999999}`, 400, "at most"},
		{"v1 empty name", v1, `{"": 1}`, 400, "feature name"},
		{"v1 name too long", v1, `{"` + long + `": 1}`, 400, "longer than 2000"},
		{"v1 one bad among good", v1, `{"a": 1, "b": -2, "c": 3}`, 400, "b: count"},
		{"v1 over the body limit", v1, `{"a": 1, "pad": "` + strings.Repeat("x", 2<<20) + `"}`, 413, "bytes"},

		{"v2 empty body", v2, ``, 400, "body"},
		{"v2 array", v2, `[]`, 400, "body"},
		{"v2 null", v2, `null`, 400, "body"},
		{"v2 evaluations missing", v2, `{}`, 400, "evaluations: required"},
		{"v2 evaluations not an array", v2, `{"evaluations": {}}`, 400, "evaluations: must be an array"},
		{"v2 evaluations null", v2, `{"evaluations": null}`, 400, "evaluations: must be an array"},
		{"v2 element not an object", v2, `{"evaluations": [1]}`, 400, "evaluations[0]: must be an object"},
		{"v2 element null", v2, `{"evaluations": [null]}`, 400, "evaluations[0]: must be an object"},
		{"v2 feature_name missing", v2, ev(`"enabled_when_evaluated": true, "count": 1`), 400, "evaluations[0].feature_name"},
		{"v2 feature_name number", v2, ev(`"feature_name": 3, "enabled_when_evaluated": true, "count": 1`), 400, "evaluations[0].feature_name"},
		{"v2 feature_name null", v2, ev(`"feature_name": null, "enabled_when_evaluated": true, "count": 1`), 400, "evaluations[0].feature_name"},
		{"v2 feature_name empty", v2, ev(`"feature_name": "", "enabled_when_evaluated": true, "count": 1`), 400, "evaluations[0].feature_name: must not be empty"},
		{"v2 identifier number", v2, ev(`"feature_name": "a", "identity_identifier": 7, "enabled_when_evaluated": true, "count": 1`), 400, "evaluations[0].identity_identifier"},
		{"v2 identifier too long", v2, ev(`"feature_name": "a", "identity_identifier": "` + long + `", "enabled_when_evaluated": true, "count": 1`), 400, "evaluations[0].identity_identifier"},
		{"v2 enabled missing", v2, ev(`"feature_name": "a", "count": 1`), 400, "evaluations[0].enabled_when_evaluated"},
		{"v2 enabled string", v2, ev(`"feature_name": "a", "enabled_when_evaluated": "true", "count": 1`), 400, "evaluations[0].enabled_when_evaluated"},
		{"v2 enabled null", v2, ev(`"feature_name": "a", "enabled_when_evaluated": null, "count": 1`), 400, "evaluations[0].enabled_when_evaluated"},
		{"v2 count missing", v2, ev(`"feature_name": "a", "enabled_when_evaluated": true`), 400, "evaluations[0].count: required"},
		{"v2 count negative", v2, ev(`"feature_name": "a", "enabled_when_evaluated": true, "count": -4`), 400, "evaluations[0].count"},
		{"v2 count string", v2, ev(`"feature_name": "a", "enabled_when_evaluated": true, "count": "4"`), 400, "evaluations[0].count"},
		{"v2 count fraction", v2, ev(`"feature_name": "a", "enabled_when_evaluated": true, "count": 0.5`), 400, "evaluations[0].count"},
		{"v2 second element bad", v2, `{"evaluations": [{"feature_name": "a", "enabled_when_evaluated": true, "count": 1}, {"feature_name": "b", "enabled_when_evaluated": 1, "count": 1}]}`, 400, "evaluations[1].enabled_when_evaluated"},
		{"v2 over the body limit", v2, `{"evaluations": [], "pad": "` + strings.Repeat("x", 2<<20) + `"}`, 413, "bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := anaPostTo(t, h, tt.path, anaClientKey, tt.body, nil)
			if rec.Code != tt.wantCode {
				t.Fatalf("POST %s %.80q = %d %s; want %d", tt.path, tt.body, rec.Code, rec.Body, tt.wantCode)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q; want application/json", ct)
			}
			var e errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
				t.Fatalf("error body %q is not JSON: %v", rec.Body, err)
			}
			if !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("message = %q; want it to contain %q", e.Message, tt.wantMsg)
			}
			if len(e.Message) > 300 {
				t.Errorf("message is %d bytes long; a bad body must not be echoed whole", len(e.Message))
			}
		})
	}
	if got := anaEnvMetric(t, s, "edge_proxy_analytics_received_total", anaClientKey); got != 0 {
		t.Errorf("received after only bad posts = %v; want 0 (a bad post counts nothing)", got)
	}
	if got := anaEnvMetric(t, s, "edge_proxy_analytics_pending_keys", anaClientKey); got != 0 {
		t.Errorf("pending keys after only bad posts = %v; want 0", got)
	}
}

// TestAnalyticsAcceptedShapes: what SDKs send in practice, and edge cases
// that are valid, reach the upstream as sent.
func TestAnalyticsAcceptedShapes(t *testing.T) {
	up := newAnaUpstream(t)
	s := newAnaServer(t, up, nil)
	h := s.handler()
	posts := []struct{ path, body string }{
		{"/api/v1/analytics/flags/", `{"banner": 3, "footer": 0, "émoji ✓": 2}`},
		{"/api/v1/analytics/flags/", `{}`},
		{"/api/v1/analytics/flags/", `{"banner": 1, "banner": 5}`}, // the last count wins, as in Flagsmith's API
		{"/api/v2/analytics/flags/", `{"evaluations": []}`},
		{"/api/v2/analytics/flags/", `{"evaluations": [
			{"feature_name": "banner", "identity_identifier": "alice", "enabled_when_evaluated": true, "count": 2},
			{"feature_name": "banner", "identity_identifier": null, "enabled_when_evaluated": false, "count": 1},
			{"feature_name": "banner", "enabled_when_evaluated": false, "count": 4},
			{"feature_name": "banner", "identity_identifier": "", "enabled_when_evaluated": false, "count": 1},
			{"feature_name": "banner", "identity_identifier": "alice", "enabled_when_evaluated": true, "count": 1, "extra": [1]}
		]}`},
	}
	for _, p := range posts {
		if rec := anaPostTo(t, h, p.path, anaClientKey, p.body, nil); rec.Code >= 300 {
			t.Fatalf("POST %s %s = %d %s", p.path, p.body, rec.Code, rec.Body)
		}
	}
	if err := anaEnv(t, s, anaClientKey).flush(context.Background(), s, http.DefaultClient); err != nil {
		t.Fatalf("flush = %v", err)
	}
	v1, v2, _ := up.sums()
	if diff := cmp.Diff(map[string]int64{"banner": 8, "émoji ✓": 2}, v1); diff != "" {
		t.Errorf("v1 sums upstream (-want +got):\n%s", diff)
	}
	wantV2 := map[anaV2Key]int64{{"banner", "alice", true}: 3, {"banner", "", false}: 6}
	if diff := cmp.Diff(wantV2, v2); diff != "" {
		t.Errorf("v2 sums upstream (-want +got):\n%s", diff)
	}
}

// TestAnalyticsLabels: each label set is its own request, with the SDK's
// headers forwarded as received and the environment's server key.
func TestAnalyticsLabels(t *testing.T) {
	up := newAnaUpstream(t)
	s := newAnaServer(t, up, nil)
	h := s.handler()
	node := map[string]string{"User-Agent": "flagsmith-nodejs-sdk/8.1.2"}
	js := map[string]string{"User-Agent": "Mozilla/5.0 (a browser)", "Flagsmith-SDK-User-Agent": "flagsmith-js-sdk/10.0.0",
		"Flagsmith-Application-Name": "shop", "Flagsmith-Application-Version": "1.2.3"}
	jsOtherBrowser := map[string]string{"User-Agent": "Mozilla/5.0 (another browser)", "Flagsmith-SDK-User-Agent": "flagsmith-js-sdk/10.0.0",
		"Flagsmith-Application-Name": "shop", "Flagsmith-Application-Version": "1.2.3"}
	anaPostTo(t, h, "/api/v1/analytics/flags/", anaServerKey, `{"banner": 1}`, node)
	anaPostTo(t, h, "/api/v1/analytics/flags/", anaServerKey, `{"banner": 2}`, node)
	anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey, `{"banner": 10}`, js)
	anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey, `{"banner": 20}`, jsOtherBrowser)
	anaPostTo(t, h, "/api/v2/analytics/flags/", anaClientKey, `{"evaluations": [{"feature_name": "banner", "enabled_when_evaluated": true, "count": 5}]}`, js)
	if err := anaEnv(t, s, anaClientKey).flush(context.Background(), s, http.DefaultClient); err != nil {
		t.Fatalf("flush = %v", err)
	}
	_, _, posts := up.sums()
	want := []anaPost{
		{Path: "/api/v1/analytics/flags/", Key: anaServerKey, UserAgent: "flagsmith-edge-proxy/" + version, SDKUserAgent: "flagsmith-js-sdk/10.0.0",
			AppName: "shop", AppVersion: "1.2.3", Body: `{"banner":30}`},
		{Path: "/api/v2/analytics/flags/", Key: anaServerKey, UserAgent: "flagsmith-edge-proxy/" + version, SDKUserAgent: "flagsmith-js-sdk/10.0.0",
			AppName: "shop", AppVersion: "1.2.3", Body: `{"evaluations":[{"feature_name":"banner","enabled_when_evaluated":true,"count":5}]}`},
		{Path: "/api/v1/analytics/flags/", Key: anaServerKey, UserAgent: "flagsmith-nodejs-sdk/8.1.2", Body: `{"banner":3}`},
	}
	sortPosts := cmp.Transformer("sort", func(in []anaPost) map[string]anaPost {
		out := map[string]anaPost{}
		for _, p := range in {
			out[p.Path+" "+p.UserAgent+" "+p.SDKUserAgent] = p
		}
		return out
	})
	if diff := cmp.Diff(want, posts, sortPosts); diff != "" {
		t.Errorf("upstream posts (-want +got):\n%s", diff)
	}
	if len(posts) != len(want) {
		t.Errorf("upstream got %d posts; want %d (one per label set and API version)", len(posts), len(want))
	}
}

// TestAnalyticsConcurrentPosters: many posters across two environments and
// both API versions while the flusher runs against an upstream that fails
// every third request: the upstream ends with exactly the posted sums.
func TestAnalyticsConcurrentPosters(t *testing.T) {
	up := newAnaUpstream(t)
	var n atomic.Int64
	up.setFail(func(*http.Request) int {
		if i := n.Add(1); i <= 2 || i%3 == 0 {
			return http.StatusInternalServerError
		}
		return 0
	})
	s := newAnaServer(t, up, func(c *Config) { c.Analytics.FlushIntervalSeconds = minTimeoutSeconds })
	ctx, cancel := context.WithCancel(context.Background())
	client := newPollClient()
	pollersDone := make(chan error, 1)
	go func() { pollersDone <- s.runLoops(ctx, client) }()

	h := s.handler()
	const posters, postsEach = 16, 150
	features := []string{"banner", "footer", "checkout", "search"}
	var wg sync.WaitGroup
	for p := range posters {
		wg.Go(func() {
			key := []string{anaClientKey, anaServerKey}[p%2]
			for i := range postsEach {
				f := features[(p+i)%len(features)]
				var rec *httptest.ResponseRecorder
				if i%2 == 0 {
					rec = anaPostTo(t, h, "/api/v1/analytics/flags/", key, fmt.Sprintf(`{%q: %d, "all": 1}`, f, i%5+1), nil)
				} else {
					rec = anaPostTo(t, h, "/api/v2/analytics/flags/", key, fmt.Sprintf(
						`{"evaluations": [{"feature_name": %q, "identity_identifier": "user-%d", "enabled_when_evaluated": %t, "count": %d}]}`,
						f, p%3, i%3 == 0, i%7+1), nil)
				}
				if rec.Code >= 300 {
					t.Errorf("post = %d %s", rec.Code, rec.Body)
					return
				}
			}
		})
	}
	wg.Wait()
	// The same environment through its other key must not mix with anaClientKey2.
	anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey2, `{"other-env": 7}`, nil)
	// Let the flushers empty both environments through the failures (on a
	// busy machine the posters may finish before the first tick).
	deadline := time.Now().Add(10 * time.Second)
	for anaEnv(t, s, anaClientKey).pendingKeys.Load()+anaEnv(t, s, anaClientKey2).pendingKeys.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the flushers did not empty the pending sums within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}

	cancel()
	<-pollersDone
	up.setFail(func(*http.Request) int { return 0 })
	s.finalFlush(context.Background(), client)

	wantV1 := map[string]int64{"other-env": 7}
	wantV2 := map[anaV2Key]int64{}
	var total int64 = 7
	for p := range posters {
		for i := range postsEach {
			f := features[(p+i)%len(features)]
			if i%2 == 0 {
				wantV1[f] += int64(i%5 + 1)
				wantV1["all"]++
				total += int64(i%5+1) + 1
			} else {
				wantV2[anaV2Key{f, fmt.Sprintf("user-%d", p%3), i%3 == 0}] += int64(i%7 + 1)
				total += int64(i%7 + 1)
			}
		}
	}
	v1, v2, _ := up.sums()
	if diff := cmp.Diff(wantV1, v1); diff != "" {
		t.Errorf("v1 sums upstream (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantV2, v2); diff != "" {
		t.Errorf("v2 sums upstream (-want +got):\n%s", diff)
	}
	var received, forwarded, retried float64
	for _, key := range []string{anaClientKey, anaClientKey2} {
		received += anaEnvMetric(t, s, "edge_proxy_analytics_received_total", key)
		forwarded += anaEnvMetric(t, s, "edge_proxy_analytics_forwarded_total", key)
		retried += anaEnvMetric(t, s, "edge_proxy_analytics_retried_total", key)
		if p := anaEnvMetric(t, s, "edge_proxy_analytics_pending_keys", key); p != 0 {
			t.Errorf("pending keys of %s after the final flush = %v; want 0", key, p)
		}
	}
	if received != float64(total) || forwarded != float64(total) {
		t.Errorf("received %v, forwarded %v; want both %d", received, forwarded, total)
	}
	if retried == 0 {
		t.Error("retried = 0; the upstream failed the first two requests and every third, so some counts must have been retried")
	}
}

// TestAnalyticsAddBack: counts of a failed flush (a 500, a timeout, an
// unreachable upstream) go back and reach the upstream on the next flush,
// together with what was posted in between, exactly once.
func TestAnalyticsAddBack(t *testing.T) {
	failures := []struct {
		name string
		fail func(*http.Request) int
	}{
		{"status 500", func(*http.Request) int { return http.StatusInternalServerError }},
		{"status 503", func(*http.Request) int { return http.StatusServiceUnavailable }},
		{"status 429", func(*http.Request) int { return http.StatusTooManyRequests }},
		{"status 401", func(*http.Request) int { return http.StatusUnauthorized }},
		{"timeout", func(*http.Request) int { return -1 }},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			up := newAnaUpstream(t)
			s := newAnaServer(t, up, func(c *Config) { c.PollTimeout = 0.2 })
			h := s.handler()
			ea := anaEnv(t, s, anaClientKey)
			anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey, `{"banner": 3, "footer": 1}`, nil)
			anaPostTo(t, h, "/api/v2/analytics/flags/", anaClientKey, `{"evaluations": [{"feature_name": "banner", "identity_identifier": "bob", "enabled_when_evaluated": true, "count": 2}]}`, nil)

			up.setFail(tt.fail)
			start := time.Now()
			if err := ea.flush(context.Background(), s, http.DefaultClient); err == nil {
				t.Fatal("flush against a failing upstream = nil; want an error")
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("the failed flush took %v; the request timeout is 0.2 s", d)
			}
			if got := anaEnvMetric(t, s, "edge_proxy_analytics_retried_total", anaClientKey); got != 6 {
				t.Errorf("retried = %v; want 6", got)
			}
			if got := anaEnvMetric(t, s, "edge_proxy_analytics_pending_keys", anaClientKey); got != 3 {
				t.Errorf("pending keys = %v; want 3", got)
			}
			anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey, `{"banner": 10}`, nil)

			up.setFail(func(*http.Request) int { return 0 })
			if err := ea.flush(context.Background(), s, http.DefaultClient); err != nil {
				t.Fatalf("second flush = %v", err)
			}
			v1, v2, _ := up.sums()
			if diff := cmp.Diff(map[string]int64{"banner": 13, "footer": 1}, v1); diff != "" {
				t.Errorf("v1 sums upstream (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[anaV2Key]int64{{"banner", "bob", true}: 2}, v2); diff != "" {
				t.Errorf("v2 sums upstream (-want +got):\n%s", diff)
			}
			if got := anaEnvMetric(t, s, "edge_proxy_analytics_forwarded_total", anaClientKey); got != 16 {
				t.Errorf("forwarded = %v; want 16", got)
			}
		})
	}

	t.Run("unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := "http://" + ln.Addr().String() + "/api/v1"
		ln.Close()
		s := newAnaServer(t, nil, func(c *Config) { c.APIURL = dead })
		ea := anaEnv(t, s, anaClientKey)
		anaPostTo(t, s.handler(), "/api/v1/analytics/flags/", anaClientKey, `{"banner": 4}`, nil)
		if err := ea.flush(context.Background(), s, http.DefaultClient); err == nil {
			t.Fatal("flush to a closed port = nil; want an error")
		}
		if got := ea.pendingKeys.Load(); got != 1 {
			t.Errorf("pending keys = %d; want 1", got)
		}
	})
}

// TestAnalyticsRefused: an upstream answer no retry can change (400, 404)
// drops the batch, counted, instead of retrying it forever.
func TestAnalyticsRefused(t *testing.T) {
	for _, code := range []int{http.StatusBadRequest, http.StatusNotFound} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			up := newAnaUpstream(t)
			up.setFail(func(r *http.Request) int {
				if strings.Contains(r.URL.Path, "/v2/") {
					return code
				}
				return 0
			})
			s := newAnaServer(t, up, nil)
			h := s.handler()
			ea := anaEnv(t, s, anaClientKey)
			anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey, `{"banner": 3}`, nil)
			anaPostTo(t, h, "/api/v2/analytics/flags/", anaClientKey, `{"evaluations": [{"feature_name": "banner", "enabled_when_evaluated": true, "count": 2}]}`, nil)
			if err := ea.flush(context.Background(), s, http.DefaultClient); err != nil {
				t.Fatalf("flush = %v; want nil (nothing left to retry)", err)
			}
			if got := anaDropped(t, s, anaClientKey, "rejected"); got != 2 {
				t.Errorf("dropped{rejected} = %v; want 2", got)
			}
			if got := ea.pendingKeys.Load(); got != 0 {
				t.Errorf("pending keys = %d; want 0", got)
			}
			v1, _, _ := up.sums()
			if v1["banner"] != 3 {
				t.Errorf("v1 banner upstream = %d; want 3", v1["banner"])
			}
		})
	}
}

// TestAnalyticsBound: past analytics.max_pending_keys new keys are dropped
// and counted; existing keys still add up; add-back respects the bound.
func TestAnalyticsBound(t *testing.T) {
	up := newAnaUpstream(t)
	s := newAnaServer(t, up, func(c *Config) { c.Analytics.MaxPendingKeys = 3 })
	h := s.handler()
	ea := anaEnv(t, s, anaClientKey)
	post := func(body string) {
		t.Helper()
		if rec := anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey, body, nil); rec.Code != http.StatusOK {
			t.Fatalf("post %s = %d %s; a full bound must not fail the SDK's request", body, rec.Code, rec.Body)
		}
	}
	post(`{"a": 1, "b": 1, "c": 1}`)
	post(`{"d": 5, "e": 7}`) // new keys: dropped
	post(`{"a": 10}`)        // an existing key still adds up
	if got := anaDropped(t, s, anaClientKey, "bound"); got != 12 {
		t.Errorf("dropped{bound} = %v; want 12", got)
	}
	if got := ea.pendingKeys.Load(); got != 3 {
		t.Errorf("pending keys = %d; want 3", got)
	}
	// The other environment has its own bound.
	if rec := anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey2, `{"x": 1, "y": 1, "z": 1}`, nil); rec.Code != http.StatusOK {
		t.Fatalf("post to the second environment = %d", rec.Code)
	}
	if got := anaDropped(t, s, anaClientKey2, "bound"); got != 0 {
		t.Errorf("second environment dropped{bound} = %v; want 0", got)
	}

	// A failed flush puts a, b, c back; meanwhile two new keys took two of
	// the three places, so one of the returning keys no longer fits.
	up.setFail(func(*http.Request) int { return http.StatusBadGateway })
	taken := ea.batches(ea.take())
	post(`{"f": 100, "g": 100}`)
	for b := range taken {
		ea.requests[requestFailed].Add(1)
		ea.addBack(b.entries)
	}
	if got := ea.pendingKeys.Load(); got != 3 {
		t.Errorf("pending keys after add-back = %d; want 3 (the bound)", got)
	}
	up.setFail(func(*http.Request) int { return 0 })
	if err := ea.flush(context.Background(), s, http.DefaultClient); err != nil {
		t.Fatalf("flush = %v", err)
	}
	received := anaEnvMetric(t, s, "edge_proxy_analytics_received_total", anaClientKey)
	forwarded := anaEnvMetric(t, s, "edge_proxy_analytics_forwarded_total", anaClientKey)
	dropped := anaDropped(t, s, anaClientKey, "bound")
	if received != 225 || forwarded+dropped != received {
		t.Errorf("received %v, forwarded %v, dropped %v; want received 225 = forwarded + dropped", received, forwarded, dropped)
	}
	v1, _, _ := up.sums()
	var sum int64
	for _, n := range v1 {
		sum += n
	}
	if float64(sum) != forwarded || v1["f"] != 100 || v1["g"] != 100 {
		t.Errorf("upstream got %v (sum %d); want f and g at 100 and the sum %v", v1, sum, forwarded)
	}
}

// TestAnalyticsOffline: an environment served from a file counts analytics
// in /metrics and sends nothing anywhere.
func TestAnalyticsOffline(t *testing.T) {
	up := newAnaUpstream(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "doc.json")
	if err := os.WriteFile(path, anaDocument(anaClientKey), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newAnaServer(t, up, func(c *Config) {
		c.EnvironmentKeyPairs[0].DocumentPath = path
		c.Analytics.FlushIntervalSeconds = minTimeoutSeconds
	})
	h := s.handler()
	anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey, `{"banner": 4}`, nil)
	anaPostTo(t, h, "/api/v2/analytics/flags/", anaServerKey, `{"evaluations": [{"feature_name": "banner", "enabled_when_evaluated": true, "count": 3}]}`, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.runLoops(ctx, newPollClient()) }()
	time.Sleep(350 * time.Millisecond) // three flush intervals
	cancel()
	<-done
	s.finalFlush(context.Background(), newPollClient())
	if got := anaEnvMetric(t, s, "edge_proxy_analytics_received_total", anaClientKey); got != 7 {
		t.Errorf("received = %v; want 7", got)
	}
	if got := anaEnvMetric(t, s, "edge_proxy_analytics_pending_keys", anaClientKey); got != 0 {
		t.Errorf("pending keys = %v; want 0 (nothing is kept for an offline environment)", got)
	}
	if got := anaDropped(t, s, anaClientKey, "shutdown"); got != 0 {
		t.Errorf("dropped{shutdown} = %v; want 0", got)
	}
	up.mu.Lock()
	attempts := up.attempts
	up.mu.Unlock()
	if attempts != 0 {
		t.Errorf("the upstream got %d analytics requests for an offline environment; want 0", attempts)
	}
}

// TestAnalyticsLargeFlush: a sum over Flagsmith's 32-bit count goes in two
// flushes, and many keys are split into bodies under maxFlushBodyBytes;
// nothing is lost either way.
func TestAnalyticsLargeFlush(t *testing.T) {
	up := newAnaUpstream(t)
	s := newAnaServer(t, up, nil)
	h := s.handler()
	ea := anaEnv(t, s, anaClientKey)
	anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey, `{"hot": 2147483647}`, nil)
	anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey, `{"hot": 5}`, nil)
	// 20,000 evaluations, posted in four bodies under the 1 MiB limit.
	const keys, perPost = 20_000, 5_000
	for start := 0; start < keys; start += perPost {
		var body strings.Builder
		body.WriteString(`{"evaluations": [`)
		for i := start; i < start+perPost; i++ {
			if i > start {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"feature_name": "feature-with-a-long-name-%05d", "identity_identifier": "identity-%05d", "enabled_when_evaluated": true, "count": 1}`, i, i)
		}
		body.WriteString(`]}`)
		if rec := anaPostTo(t, h, "/api/v2/analytics/flags/", anaClientKey, body.String(), nil); rec.Code != http.StatusNoContent {
			t.Fatalf("post of %d evaluations = %d %s", perPost, rec.Code, rec.Body)
		}
	}
	for range 2 {
		if err := ea.flush(context.Background(), s, http.DefaultClient); err != nil {
			t.Fatalf("flush = %v", err)
		}
	}
	v1, v2, posts := up.sums()
	if v1["hot"] != 2147483647+5 {
		t.Errorf("hot upstream = %d; want %d", v1["hot"], int64(2147483647+5))
	}
	if len(v2) != keys {
		t.Errorf("upstream got %d v2 keys; want %d", len(v2), keys)
	}
	var v2Posts int
	for _, p := range posts {
		if len(p.Body) > maxFlushBodyBytes+200 {
			t.Errorf("a flush body is %d bytes; want at most about %d", len(p.Body), maxFlushBodyBytes)
		}
		if strings.Contains(p.Path, "/v2/") {
			v2Posts++
			if strings.Contains(p.Body, `"count":2147483648`) {
				t.Error("a count over 2147483647 was sent")
			}
		}
	}
	if v2Posts < 2 {
		t.Errorf("%d v2 requests for %d evaluations; want the flush split", v2Posts, keys)
	}
}

// TestAnalyticsFinalFlushOnShutdown runs the whole program: counts posted
// just before the stop signal reach the upstream although the flush
// interval is an hour away.
func TestAnalyticsFinalFlushOnShutdown(t *testing.T) {
	up := newAnaUpstream(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := map[string]any{
		"environment_key_pairs": []map[string]string{{"server_side_key": anaServerKey, "client_side_key": anaClientKey}},
		"api_url":               up.apiURL(),
		"server":                map[string]any{"host": "127.0.0.1", "port": port},
		"analytics":             map[string]any{"flush_interval_seconds": 3600},
		"logging":               map[string]any{"log_format": "json"},
	}
	raw, _ := json.Marshal(cfg)
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var stderr anaLogBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-config", path}, func(string) string { return "" }, io.Discard, &stderr)
	}()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(base + "/proxy/health/readiness")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy was not ready within 10 s; log:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	post := func(path, body string, want int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		req.Header.Set("X-Environment-Key", anaClientKey)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("POST %s = %d; want %d", path, resp.StatusCode, want)
		}
	}
	post("/api/v1/analytics/flags/", `{"banner": 41}`, http.StatusOK)
	post("/api/v2/analytics/flags", `{"evaluations": [{"feature_name": "banner", "identity_identifier": "ann", "enabled_when_evaluated": false, "count": 9}]}`, http.StatusNoContent)
	if v1, _, _ := up.sums(); len(v1) != 0 {
		t.Fatalf("the upstream got %v before the shutdown; the flush interval is an hour", v1)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v; log:\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("run did not return within 15 s of the stop; log:\n%s", stderr.String())
	}
	v1, v2, _ := up.sums()
	if diff := cmp.Diff(map[string]int64{"banner": 41}, v1); diff != "" {
		t.Errorf("v1 sums upstream after shutdown (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[anaV2Key]int64{{"banner", "ann", false}: 9}, v2); diff != "" {
		t.Errorf("v2 sums upstream after shutdown (-want +got):\n%s", diff)
	}
}

// TestAnalyticsFinalFlushFails: what the final flush cannot send is counted
// as dropped at shutdown, and the flush ends with its deadline.
func TestAnalyticsFinalFlushFails(t *testing.T) {
	up := newAnaUpstream(t)
	up.setFail(func(*http.Request) int { return -1 })
	s := newAnaServer(t, up, nil)
	anaPostTo(t, s.handler(), "/api/v1/analytics/flags/", anaClientKey, `{"banner": 6}`, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	s.finalFlush(ctx, http.DefaultClient)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the final flush took %v past a 200 ms deadline", d)
	}
	if got := anaDropped(t, s, anaClientKey, "shutdown"); got != 6 {
		t.Errorf("dropped{shutdown} = %v; want 6", got)
	}
}

func TestAnalyticsConfig(t *testing.T) {
	cfg := defaultConfig()
	if !cfg.Analytics.Enabled || cfg.Analytics.FlushIntervalSeconds != 10 || cfg.Analytics.MaxPendingKeys != 100_000 {
		t.Errorf("default analytics = %+v; want enabled, 10 s, 100000 keys", cfg.Analytics)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pairs := `"environment_key_pairs": [{"server_side_key": "ser.abc", "client_side_key": "abc"}]`
	write(`{` + pairs + `, "analytics": {"flush_interval_seconds": 2.5}}`)
	got, _, err := loadConfig(path, true, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	want := defaultConfig().Analytics
	want.FlushIntervalSeconds = 2.5
	if got.Analytics != want {
		t.Errorf("analytics = %+v; want %+v (unset keys keep their defaults)", got.Analytics, want)
	}
	got, _, err = loadConfig(path, true, func(k string) string {
		if k == "ANALYTICS" {
			return `{"enabled": false}`
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Analytics.Enabled {
		t.Error("ANALYTICS={\"enabled\": false} left analytics on")
	}
	write(`{` + pairs + `, "analytics": {"flush_interval_seconds": 0, "max_pending_keys": -1}}`)
	_, _, err = loadConfig(path, true, func(string) string { return "" })
	for _, want := range []string{"analytics.flush_interval_seconds", "analytics.max_pending_keys"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("loadConfig with a bad %s = %v; want an error naming it", want, err)
		}
	}
	write(`{` + pairs + `, "analytics": {"max_pending_bytes": 1000, "max_pending_events": 0, "events_api_url": "ftp://events.example.com/"}}`)
	_, _, err = loadConfig(path, true, func(string) string { return "" })
	for _, want := range []string{"analytics.max_pending_bytes", "analytics.max_pending_events", "analytics.events_api_url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("loadConfig with a bad %s = %v; want an error naming it", want, err)
		}
	}
	write(`{` + pairs + `, "analytics": {"max_pending_bytes": 2147483648, "events_api_url": "https://events.example.com/?x=1"}}`)
	_, _, err = loadConfig(path, true, func(string) string { return "" })
	for _, want := range []string{"analytics.max_pending_bytes", "analytics.events_api_url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("loadConfig with %s out of range = %v; want an error naming it", want, err)
		}
	}
	write(`{` + pairs + `, "analytics": {"events_api_url": "http://relay.internal:8000"}}`)
	if got, _, err = loadConfig(path, true, func(string) string { return "" }); err != nil || got.Analytics.EventsAPIURL != "http://relay.internal:8000/" {
		t.Errorf("events_api_url without a trailing slash = %q, %v; want it with one, as SDKs append v1/events", got.Analytics.EventsAPIURL, err)
	}
	write(`{` + pairs + `, "analytics": {"enabled": "yes"}}`)
	if _, _, err = loadConfig(path, true, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "analytics.enabled") {
		t.Errorf("loadConfig with enabled \"yes\" = %v; want an error naming analytics.enabled", err)
	}
}

// anaLogBuffer is a bytes.Buffer safe for the concurrent writes of a logger
// and reads of a test.
type anaLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *anaLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *anaLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// BenchmarkAnalyticsPost measures a v1 post of five features through the
// whole handler stack from many goroutines at once (-cpu 1,2,4 shows
// whether posts wait for each other). A flusher empties the sums as in
// production.
func BenchmarkAnalyticsPost(b *testing.B) {
	up := newAnaUpstream(b)
	s := newAnaServer(b, up, func(c *Config) { c.Analytics.FlushIntervalSeconds = minTimeoutSeconds })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.runLoops(ctx, newPollClient()) }()
	h := s.handler()
	const body = `{"banner": 3, "footer": 1, "checkout": 2, "search": 7, "new_onboarding": 1}`
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/analytics/flags/", nil)
		req.Header.Set("X-Environment-Key", anaClientKey)
		req.Header.Set("User-Agent", "flagsmith-nodejs-sdk/8.1.2")
		rd := strings.NewReader(body)
		w := &anaDiscardWriter{h: http.Header{}}
		for pb.Next() {
			rd.Reset(body)
			req.Body = io.NopCloser(rd)
			clear(w.h)
			h.ServeHTTP(w, req)
			if w.code != http.StatusOK {
				b.Fatalf("status %d", w.code)
			}
		}
	})
}

// anaDiscardWriter is a ResponseWriter that keeps only the status, so the
// benchmark measures the handler and not a recorder.
type anaDiscardWriter struct {
	h    http.Header
	code int
}

func (w *anaDiscardWriter) Header() http.Header         { return w.h }
func (w *anaDiscardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *anaDiscardWriter) WriteHeader(code int)        { w.code = code }

// BenchmarkAnalyticsRecord compares the request path's aggregation (striped
// locks) with one mutex around one map, from many goroutines at once, each
// recording the same five-feature post. Run with -cpu 1,2,4: the striped
// version must not slow down as goroutines are added.
func BenchmarkAnalyticsRecord(b *testing.B) {
	labels := analyticsLabels{userAgent: "flagsmith-nodejs-sdk/8.1.2"}
	var entries []analyticsEntry
	for _, f := range []string{"banner", "footer", "checkout", "search", "new_onboarding"} {
		entries = append(entries, analyticsEntry{analyticsKey{labels: labels, feature: f}, 1})
	}
	b.Run("striped", func(b *testing.B) {
		s := newAnaServer(b, nil, nil)
		ea := anaEnv(b, s, anaClientKey)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				ea.record(entries, nil)
			}
		})
		if got := ea.receivedTotal(); got != uint64(5*b.N) {
			b.Fatalf("received %d; want %d", got, 5*b.N)
		}
	})
	b.Run("one-mutex", func(b *testing.B) {
		var mu sync.Mutex
		counts := map[analyticsKey]int64{}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				for _, e := range entries {
					mu.Lock()
					counts[e.key] += e.count
					mu.Unlock()
				}
			}
		})
	})
}

// TestAnalyticsFanOutBound: a client inventing label values cannot make one
// flush send more than maxFlushGroups requests; the largest sums go first and
// the rest follow in later flushes, none lost.
func TestAnalyticsFanOutBound(t *testing.T) {
	up := newAnaUpstream(t)
	s := newAnaServer(t, up, nil)
	h := s.handler()
	ea := anaEnv(t, s, anaClientKey)
	const sets = maxFlushGroups + 50
	for i := range sets {
		anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey, `{"banner": 1}`,
			map[string]string{"Flagsmith-Application-Name": fmt.Sprintf("app-%d", i)})
	}
	anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey, `{"banner": 500}`, map[string]string{"User-Agent": "real-sdk/1.0"})
	if err := ea.flush(context.Background(), s, http.DefaultClient); err != nil {
		t.Fatalf("flush = %v", err)
	}
	_, _, posts := up.sums()
	if len(posts) != maxFlushGroups {
		t.Errorf("the first flush sent %d requests; want %d", len(posts), maxFlushGroups)
	}
	if !slices.ContainsFunc(posts, func(p anaPost) bool { return p.UserAgent == "real-sdk/1.0" }) {
		t.Error("the largest sum was not in the first flush")
	}
	if err := ea.flush(context.Background(), s, http.DefaultClient); err != nil {
		t.Fatalf("second flush = %v", err)
	}
	v1, _, posts := up.sums()
	if len(posts) != sets+1 || v1["banner"] != sets+500 {
		t.Errorf("after two flushes: %d requests, banner %d; want %d and %d", len(posts), v1["banner"], sets+1, sets+500)
	}
}

// TestAnalyticsBoundAcrossStripes: at the bound, a count for a key pending
// in another stripe than the one a post lands on still adds up.
func TestAnalyticsBoundAcrossStripes(t *testing.T) {
	s := newAnaServer(t, nil, func(c *Config) { c.Analytics.MaxPendingKeys = 1 })
	ea := anaEnv(t, s, anaClientKey)
	key := analyticsKey{feature: "a"}
	if dropped := ea.addAll(&ea.stripes[0], []analyticsEntry{{key, 1}}, false); dropped != 0 {
		t.Fatalf("first add dropped %d", dropped)
	}
	if dropped := ea.addAll(&ea.stripes[5], []analyticsEntry{{key, 2}, {analyticsKey{feature: "b"}, 4}}, false); dropped != 4 {
		t.Errorf("add at the bound dropped %d; want 4 (b is new, a is pending in stripe 0)", dropped)
	}
	got := ea.take()
	if want := []analyticsEntry{{key, 3}}; !slices.Equal(got, want) {
		t.Errorf("take() = %+v; want %+v", got, want)
	}
}

// TestAnalyticsUnknownFeature: once the environment holds a document, a
// feature it does not have is counted as unknown and neither kept nor
// forwarded; the known ones of the same post are.
func TestAnalyticsUnknownFeature(t *testing.T) {
	up := newAnaUpstream(t)
	s := newAnaServer(t, up, nil)
	ts := &testServer{server: s}
	ts.publishDoc(t, anaClientKey, anaDocument(anaClientKey))
	h := s.handler()
	ea := anaEnv(t, s, anaClientKey)
	anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey, `{"banner": 2, "no_such_feature": 3}`, nil)
	anaPostTo(t, h, "/api/v2/analytics/flags/", anaClientKey, `{"evaluations": [
		{"feature_name": "invented", "identity_identifier": "bob", "enabled_when_evaluated": true, "count": 4},
		{"feature_name": "footer", "identity_identifier": "bob", "enabled_when_evaluated": true, "count": 1}]}`, nil)
	if got := anaDropped(t, s, anaClientKey, "unknown_feature"); got != 7 {
		t.Errorf("dropped{unknown_feature} = %v; want 7", got)
	}
	if got := ea.pendingKeys.Load(); got != 2 {
		t.Errorf("pending keys = %d; want 2 (banner, footer)", got)
	}
	if err := ea.flush(t.Context(), s, http.DefaultClient); err != nil {
		t.Fatalf("flush = %v", err)
	}
	v1, v2, _ := up.sums()
	if diff := cmp.Diff(map[string]int64{"banner": 2}, v1); diff != "" {
		t.Errorf("v1 sums upstream (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[anaV2Key]int64{{"footer", "bob", true}: 1}, v2); diff != "" {
		t.Errorf("v2 sums upstream (-want +got):\n%s", diff)
	}
	// The second environment has no document yet: its names are kept.
	anaPostTo(t, h, "/api/v1/analytics/flags/", anaClientKey2, `{"not_yet_known": 1}`, nil)
	if got := anaEnv(t, s, anaClientKey2).pendingKeys.Load(); got != 1 {
		t.Errorf("pending keys before the first document = %d; want 1", got)
	}
}

// TestAnalyticsByteBound: the sums of the longest identifiers, in 4-byte
// UTF-8, fill analytics.max_pending_bytes and no more: past it new keys are
// dropped and counted, existing ones still add up; a failed flush puts its
// sums back without passing the bound; after a forwarded flush every byte
// is given back, and nothing is lost without being counted.
func TestAnalyticsByteBound(t *testing.T) {
	up := newAnaUpstream(t)
	s := newAnaServer(t, up, func(c *Config) { c.Analytics.MaxPendingBytes = minPendingBytes })
	h := s.handler()
	ea := anaEnv(t, s, anaClientKey)
	post := func(from, to int) {
		t.Helper()
		var evals []string
		for i := from; i < to; i++ {
			evals = append(evals, fmt.Sprintf(`{"feature_name": "banner", "identity_identifier": %q, "enabled_when_evaluated": true, "count": 1}`,
				longText(fmt.Sprint(i), maxAnalyticsNameChars)))
		}
		if rec := anaPostTo(t, h, "/api/v2/analytics/flags/", anaClientKey, `{"evaluations": [`+strings.Join(evals, ",")+`]}`, nil); rec.Code != http.StatusNoContent {
			t.Fatalf("post = %d %s; a full bound must not fail the SDK's request", rec.Code, rec.Body)
		}
	}
	post(0, 20) // 20 × 8 KB identifiers: past 64 KiB
	dropped := anaDropped(t, s, anaClientKey, "bytes")
	if dropped <= 0 || dropped >= 20 {
		t.Fatalf("dropped{bytes} = %v; want some of the 20 evaluations", dropped)
	}
	held := s.pending.used.Load()
	if held > minPendingBytes || held < minPendingBytes-10_000 {
		t.Errorf("pending bytes = %d; want just under %d", held, minPendingBytes)
	}
	post(0, 1) // a pending key still adds up at the bound
	if got := anaDropped(t, s, anaClientKey, "bytes"); got != dropped {
		t.Errorf("dropped{bytes} = %v after a pending key was posted again; want %v", got, dropped)
	}

	up.setFail(func(*http.Request) int { return http.StatusServiceUnavailable })
	if err := ea.flush(t.Context(), s, http.DefaultClient); err == nil {
		t.Fatal("flush to a failing upstream = nil; want its error")
	}
	if got := s.pending.used.Load(); got != held {
		t.Errorf("pending bytes after a failed flush = %d; want %d (put back as they were)", got, held)
	}
	up.setFail(func(*http.Request) int { return 0 })
	if err := ea.flush(t.Context(), s, http.DefaultClient); err != nil {
		t.Fatalf("flush = %v", err)
	}
	if got := s.pending.used.Load(); got != 0 {
		t.Errorf("pending bytes after the flush = %d; want 0", got)
	}
	received := anaEnvMetric(t, s, "edge_proxy_analytics_received_total", anaClientKey)
	forwarded := anaEnvMetric(t, s, "edge_proxy_analytics_forwarded_total", anaClientKey)
	if received != 21 || forwarded+dropped != received {
		t.Errorf("received %v, forwarded %v, dropped %v; want received 21 = forwarded + dropped", received, forwarded, dropped)
	}
	if got := anaMetric(t, s, "edge_proxy_pending_bytes"); got != 0 {
		t.Errorf("edge_proxy_pending_bytes = %v; want 0", got)
	}
}

// TestAnalyticsLabelsCapped: a label header longer than
// maxAnalyticsLabelBytes is kept, and forwarded, cut on a character
// boundary.
func TestAnalyticsLabelsCapped(t *testing.T) {
	up := newAnaUpstream(t)
	s := newAnaServer(t, up, nil)
	name := strings.Repeat("é", 4000) // 8,000 bytes
	anaPostTo(t, s.handler(), "/api/v1/analytics/flags/", anaClientKey, `{"banner": 1}`, map[string]string{"Flagsmith-Application-Name": name})
	if err := anaEnv(t, s, anaClientKey).flush(t.Context(), s, http.DefaultClient); err != nil {
		t.Fatalf("flush = %v", err)
	}
	_, _, posts := up.sums()
	if len(posts) != 1 {
		t.Fatalf("%d posts upstream; want 1", len(posts))
	}
	if got := posts[0].AppName; got != name[:maxAnalyticsLabelBytes] {
		t.Errorf("application name forwarded: %d bytes; want the first %d", len(got), maxAnalyticsLabelBytes)
	}
}

// TestAnalyticsPendingBytesReload: a reload applies a new
// analytics.max_pending_bytes at once, to every environment's analytics and
// events; the bytes already held stay counted.
func TestAnalyticsPendingBytesReload(t *testing.T) {
	s := newAnaServer(t, nil, nil)
	anaPostTo(t, s.handler(), "/api/v1/analytics/flags/", anaClientKey, `{"banner": 1}`, nil)
	held := s.pending.used.Load()
	if held <= 0 {
		t.Fatalf("pending bytes after a post = %d; want some", held)
	}
	next := *s.config()
	next.Analytics.MaxPendingBytes = minPendingBytes
	s.applyConfig(t.Context(), next)
	if got := s.pending.max.Load(); got != minPendingBytes {
		t.Errorf("bound after the reload = %d; want %d", got, minPendingBytes)
	}
	if got := s.pending.used.Load(); got != held {
		t.Errorf("pending bytes after the reload = %d; want %d (the environment and its sums are kept)", got, held)
	}
}
