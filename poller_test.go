package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The keys of the environments these tests poll. The server keys must never
// appear in a log in clear.
const (
	pollerClientA = "PollerEnvAlphaClient"
	pollerServerA = "ser.PollerAlphaServerSecret"
	pollerClientB = "PollerEnvBetaClient"
	pollerServerB = "ser.PollerBetaServerSecret"
)

// pollerUpdatedAt is the updated_at of pollerDoc's documents unless a test
// says otherwise, and pollerIMS the If-Modified-Since it must produce.
const (
	pollerUpdatedAt = "2026-11-20T10:00:00.123456Z"
	pollerIMS       = "Fri, 20 Nov 2026 10:00:00 GMT"
)

func pollerPair(client, server string) KeyPair {
	return KeyPair{ClientSideKey: client, ServerSideKey: secret(server)}
}

// pollerDoc is a minimal environment document with one flag, "banner",
// whose value is value.
func pollerDoc(apiKey, updatedAt, value string) []byte {
	doc := map[string]any{
		"api_key":    apiKey,
		"name":       "poller test",
		"updated_at": updatedAt,
		"project": map[string]any{
			"hide_disabled_flags":         false,
			"server_key_only_feature_ids": []int{},
			"segments":                    []any{},
		},
		"feature_states": []any{map[string]any{
			"feature":                           map[string]any{"id": 1, "name": "banner", "type": "STANDARD"},
			"enabled":                           true,
			"django_id":                         11,
			"featurestate_uuid":                 "5b1a3c1e-0000-4000-8000-000000000001",
			"feature_state_value":               value,
			"multivariate_feature_state_values": []any{},
		}},
		"identity_overrides": []any{},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return b
}

// pollerFlags is the body GET /api/v1/flags/ answers for a pollerDoc.
func pollerFlags(value string) string {
	return `[{"feature":{"id":1,"name":"banner","type":"STANDARD"},"enabled":true,"feature_state_value":"` + value + `"}]`
}

// pollerLog captures the server's log as JSON lines and wakes waiters on
// every record. It is safe for concurrent use.
type pollerLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func (l *pollerLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	n, err := l.buf.Write(p)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
	return n, err
}

func (l *pollerLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// records decodes every line logged so far.
func (l *pollerLog) records(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(l.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// pollerRecord is a log record a test expects: its level, a part of its
// message, the env attribute, and a part of its error attribute (when set).
type pollerRecord struct {
	level, msg, env, err string
}

func (w pollerRecord) matches(rec map[string]any) bool {
	s := func(k string) string { v, _ := rec[k].(string); return v }
	return s("level") == w.level && strings.Contains(s("msg"), w.msg) && s("env") == w.env &&
		(w.err == "" || strings.Contains(s("error"), w.err))
}

func (l *pollerLog) has(t testing.TB, want pollerRecord) bool {
	t.Helper()
	for _, rec := range l.records(t) {
		if want.matches(rec) {
			return true
		}
	}
	return false
}

// mustHave fails unless a record matching want was logged.
func (l *pollerLog) mustHave(t testing.TB, want pollerRecord) {
	t.Helper()
	if !l.has(t, want) {
		t.Errorf("no log record %+v; log:\n%s", want, l)
	}
}

// waitFor waits until a record matching want is logged. The bound only
// guards against a pollerHang.
func (l *pollerLog) waitFor(t testing.TB, want pollerRecord) {
	t.Helper()
	const bound = 60 * time.Second
	timeout := time.NewTimer(bound)
	defer timeout.Stop()
	for !l.has(t, want) {
		select {
		case <-l.changed:
		case <-timeout.C:
			t.Fatalf("no log record %+v after %v; log:\n%s", want, bound, l)
		}
	}
}

// noServerKeys fails when a server key appears in the log in clear.
func (l *pollerLog) noServerKeys(t testing.TB) {
	t.Helper()
	out := l.String()
	for _, k := range []string{pollerServerA, pollerServerB} {
		if strings.Contains(out, k) {
			t.Errorf("log holds the server key %q in clear:\n%s", k, out)
		}
	}
}

// newPollerServer builds a server for pairs against apiURL, logging JSON at
// DEBUG into the returned log. mod adjusts the configuration.
func newPollerServer(t testing.TB, apiURL string, mod func(*Config), pairs ...KeyPair) (*server, *pollerLog) {
	t.Helper()
	cfg := defaultConfig()
	cfg.APIURL = apiURL
	cfg.EnvironmentKeyPairs = pairs
	cfg.PollTimeout = 30 // a bound only; tests of timeouts set their own
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &pollerLog{changed: make(chan struct{}, 1)}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return newServer(cfg, log), logs
}

// pollerGet serves one GET request through the whole handler stack.
func pollerGet(t testing.TB, s *server, path, key string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if key != "" {
		req.Header.Set("X-Environment-Key", key)
	}
	rec := httptest.NewRecorder()
	s.handler().ServeHTTP(rec, req)
	return rec
}

// pollerFlagsBody is the status and body of GET /api/v1/flags/ for key.
func pollerFlagsBody(t testing.TB, s *server, key string) (int, string) {
	t.Helper()
	rec := pollerGet(t, s, "/api/v1/flags/", key)
	return rec.Code, rec.Body.String()
}

// pollerWantFlags fails unless key is served flags with body want.
func pollerWantFlags(t testing.TB, s *server, key, want string) {
	t.Helper()
	if code, body := pollerFlagsBody(t, s, key); code != http.StatusOK || body != want {
		t.Errorf("GET /api/v1/flags/ (%s) = %d %s; want 200 %s", key, code, body, want)
	}
}

// pollerWantNoFlags fails unless key is answered 503: no document yet.
func pollerWantNoFlags(t testing.TB, s *server, key string) {
	t.Helper()
	if code, body := pollerFlagsBody(t, s, key); code != http.StatusServiceUnavailable {
		t.Errorf("GET /api/v1/flags/ (%s) = %d %s; want 503", key, code, body)
	}
}

// pollerUpstream is a fake Flagsmith API: it records the headers of every
// request and answers with the current responder.
type pollerUpstream struct {
	srv  *httptest.Server
	url  string        // the api_url to configure
	stop chan struct{} // closed at cleanup: releases handlers that pollerHang

	mu      sync.Mutex
	respond http.HandlerFunc
	headers []http.Header
}

func newPollerUpstream(t testing.TB, respond http.HandlerFunc) *pollerUpstream {
	t.Helper()
	u := &pollerUpstream{stop: make(chan struct{}), respond: respond}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	u.url = u.srv.URL + "/api/v1"
	t.Cleanup(u.srv.Close)
	// Registered after Close, so it runs before it: Close waits for
	// handlers, and the hanging ones return only once stop is closed.
	t.Cleanup(func() { close(u.stop) })
	return u
}

// serve records the request and hands it to the responder, with a request
// context that also ends with the test, so a responder that hangs on it
// never blocks the server's Close.
func (u *pollerUpstream) serve(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-u.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	r = r.WithContext(ctx)
	u.mu.Lock()
	u.headers = append(u.headers, r.Header.Clone())
	respond := u.respond
	u.mu.Unlock()
	respond(w, r)
}

func (u *pollerUpstream) set(respond http.HandlerFunc) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.respond = respond
}

// requests is the headers of every request received so far.
func (u *pollerUpstream) requests() []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]http.Header(nil), u.headers...)
}

func (u *pollerUpstream) last(t testing.TB) http.Header {
	t.Helper()
	reqs := u.requests()
	if len(reqs) == 0 {
		t.Fatal("the upstream received no request")
	}
	return reqs[len(reqs)-1]
}

const pollerDocPath = "/api/v1/environment-document/"

// pollerServeDoc answers the document endpoint with doc, 404 elsewhere.
func pollerServeDoc(doc []byte) http.HandlerFunc {
	return pollerServeAt(pollerDocPath, doc)
}

func pollerServeAt(path string, doc []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}
}

// pollerServeByKey answers each X-Environment-Key with its document, 401 for
// any other key.
func pollerServeByKey(docs map[string][]byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		doc, ok := docs[r.Header.Get("X-Environment-Key")]
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		pollerServeDoc(doc)(w, r)
	}
}

func pollerServeStatus(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) }
}

// pollerClient is a client of its own, so that idle connections are closed
// when the test ends.
func pollerClient(t testing.TB) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := newPollClient()
	client.Transport = tr
	return client
}

// pollerStart runs s.runPollers until the returned stop (or the test's
// cleanup) cancels it and it has returned.
func pollerStart(t testing.TB, s *server, client *http.Client) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.runPollers(ctx, client) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("runPollers = %v; want nil", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func pollerMustPoll(t testing.TB, s *server, env *environment, client *http.Client) {
	t.Helper()
	if err := s.pollOnce(context.Background(), env, client); err != nil {
		t.Fatalf("pollOnce(%s) = %v; want nil", env.pair.ClientSideKey, err)
	}
}

// TestPollConditionalGet follows one environment through a first fetch, a
// 304 and a changed document (SPEC §3).
func TestPollConditionalGet(t *testing.T) {
	doc1 := pollerDoc(pollerClientA, pollerUpdatedAt, "blue")
	up := newPollerUpstream(t, pollerServeDoc(doc1))
	s, logs := newPollerServer(t, up.url, nil, pollerPair(pollerClientA, pollerServerA))
	client, env := pollerClient(t), s.envs[0]

	pollerWantNoFlags(t, s, pollerClientA)
	pollerMustPoll(t, s, env, client)
	pollerWantFlags(t, s, pollerClientA, pollerFlags("blue"))
	first := up.last(t)
	if got := first.Get("X-Environment-Key"); got != pollerServerA {
		t.Errorf("first poll: X-Environment-Key = %q; want the server key %q", got, pollerServerA)
	}
	if got := first.Values("If-Modified-Since"); got != nil {
		t.Errorf("first poll: If-Modified-Since = %q; want none (no document held)", got)
	}
	logs.mustHave(t, pollerRecord{level: "INFO", msg: "environment updated", env: pollerClientA})

	// 304: the held document stays, as the very same snapshot.
	held := env.snap.Load()
	up.set(pollerServeStatus(http.StatusNotModified))
	pollerMustPoll(t, s, env, client)
	second := up.last(t)
	if got := second.Get("If-Modified-Since"); got != pollerIMS {
		t.Errorf("second poll: If-Modified-Since = %q; want %q (updated_at %s)", got, pollerIMS, pollerUpdatedAt)
	}
	if got := second.Get("X-Environment-Key"); got != pollerServerA {
		t.Errorf("second poll: X-Environment-Key = %q; want %q", got, pollerServerA)
	}
	if env.snap.Load() != held {
		t.Error("a 304 replaced the held snapshot; want it kept")
	}
	pollerWantFlags(t, s, pollerClientA, pollerFlags("blue"))

	// A changed document is published, and the next poll asks from its date.
	up.set(pollerServeDoc(pollerDoc(pollerClientA, "2026-11-21T08:30:15Z", "green")))
	pollerMustPoll(t, s, env, client)
	pollerWantFlags(t, s, pollerClientA, pollerFlags("green"))
	up.set(pollerServeStatus(http.StatusNotModified))
	pollerMustPoll(t, s, env, client)
	if got, want := up.last(t).Get("If-Modified-Since"), "Sat, 21 Nov 2026 08:30:15 GMT"; got != want {
		t.Errorf("after a new document: If-Modified-Since = %q; want %q", got, want)
	}
	pollerWantFlags(t, s, pollerClientA, pollerFlags("green"))
	logs.noServerKeys(t)
}

// TestPollIfModifiedSince checks the HTTP date built from the forms of
// updated_at that Flagsmith's Python API can produce.
func TestPollIfModifiedSince(t *testing.T) {
	tests := []struct {
		name, updatedAt, want string
	}{
		{"utc with microseconds", "2026-11-20T10:00:00.123456Z", "Fri, 20 Nov 2026 10:00:00 GMT"},
		{"positive offset", "2026-11-20T12:00:00+02:00", "Fri, 20 Nov 2026 10:00:00 GMT"},
		{"negative offset crossing midnight", "2026-11-19T23:30:00-05:00", "Fri, 20 Nov 2026 04:30:00 GMT"},
		{"no zone is utc", "2026-11-20T10:00:00.5", "Fri, 20 Nov 2026 10:00:00 GMT"},
		{"python isoformat with a space", "2026-11-20 10:00:00.123456+00:00", "Fri, 20 Nov 2026 10:00:00 GMT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newPollerUpstream(t, pollerServeDoc(pollerDoc(pollerClientA, tt.updatedAt, "blue")))
			s, _ := newPollerServer(t, up.url, nil, pollerPair(pollerClientA, pollerServerA))
			client := pollerClient(t)
			pollerMustPoll(t, s, s.envs[0], client)
			up.set(pollerServeStatus(http.StatusNotModified))
			pollerMustPoll(t, s, s.envs[0], client)
			if got := up.last(t).Get("If-Modified-Since"); got != tt.want {
				t.Errorf("updated_at %q: If-Modified-Since = %q; want %q", tt.updatedAt, got, tt.want)
			}
		})
	}
}

// pollerHugeBody is the size of the runaway body: above maxDocumentBytes,
// streamed so the test never holds it.
const pollerHugeBody = 50 << 20

// pollerStreamHuge writes a JSON string of pollerHugeBody bytes, chunk by
// chunk, and reports how much the client let it write.
func pollerStreamHuge(sent chan<- int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var n int64
		defer func() {
			select {
			case sent <- n:
			default:
			}
		}()
		w.Header().Set("Content-Type", "application/json")
		chunk := bytes.Repeat([]byte("a"), 64<<10)
		m, err := io.WriteString(w, `{"api_key":"`)
		n += int64(m)
		for err == nil && n < pollerHugeBody {
			m, err = w.Write(chunk)
			n += int64(m)
		}
	}
}

// TestPollFaults checks that each kind of upstream fault makes the poll fail,
// is logged with the environment's client key, and leaves the last good
// document served unchanged (SPEC §3).
func TestPollFaults(t *testing.T) {
	good := pollerDoc(pollerClientA, pollerUpdatedAt, "blue")
	hugeSent := make(chan int64, 4)
	tests := []struct {
		name    string
		respond http.HandlerFunc // nil: the upstream is down (closed)
		timeout float64          // api_poll_timeout_seconds for the faulty polls, when not the default
		wantErr string           // part of the poll's error and of the logged error
		wantIs  error            // when set, errors.Is(err, wantIs) must hold
		// rejected: the key was refused, which is logged at ERROR.
		rejected bool
		// check, when set, runs after the failed poll.
		check func(t testing.TB)
	}{
		{name: "connection refused", wantErr: "connection refused"},
		{
			name: "timeout, slow headers", timeout: 0.2, wantErr: "deadline exceeded", wantIs: context.DeadlineExceeded,
			respond: func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done() // the client gives up, or the test ends
			},
		},
		{
			name: "timeout, slow body", timeout: 0.2, wantErr: "deadline exceeded", wantIs: context.DeadlineExceeded,
			respond: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"api_key": "`+pollerClientA)
				http.NewResponseController(w).Flush()
				<-r.Context().Done()
			},
		},
		{name: "status 500", respond: pollerServeStatus(http.StatusInternalServerError), wantErr: "500"},
		{name: "status 502", respond: pollerServeStatus(http.StatusBadGateway), wantErr: "502"},
		{name: "status 404", respond: pollerServeStatus(http.StatusNotFound), wantErr: "404"},
		{name: "status 401", respond: pollerServeStatus(http.StatusUnauthorized), wantErr: "401", rejected: true},
		{name: "status 403", respond: pollerServeStatus(http.StatusForbidden), wantErr: "403", rejected: true},
		{name: "invalid JSON", respond: pollerServeDoc([]byte("<html>captive portal</html>")), wantErr: "parse environment document"},
		{name: "truncated JSON", respond: pollerServeDoc(good[:len(good)/2]), wantErr: "unexpected EOF"},
		{name: "empty 200 body", respond: pollerServeDoc(nil), wantErr: "parse environment document"},
		{name: "JSON array", respond: pollerServeDoc([]byte("[]")), wantErr: "parse environment document"},
		{name: "empty object", respond: pollerServeDoc([]byte("{}")), wantErr: "api_key"},
		{name: "api_key a number", respond: pollerServeDoc([]byte(`{"api_key": 5}`)), wantErr: "parse environment document"},
		{name: "no project", respond: pollerServeDoc([]byte(`{"api_key": "` + pollerClientA + `"}`)), wantErr: "project"},
		{
			name: "feature without id", wantErr: "feature_states[0]",
			respond: pollerServeDoc([]byte(`{"api_key": "` + pollerClientA + `", "project": {}, "feature_states": [{"feature": {"name": "x"}, "django_id": 1}]}`)),
		},
		{
			name: "redirect loop", wantErr: "redirect",
			respond: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, r.URL.Path, http.StatusFound)
			},
		},
		{
			// The timeout only bounds the test: reading 32 MiB under the race
			// detector on a busy machine takes seconds.
			name: "50 MB body", respond: pollerStreamHuge(hugeSent), timeout: 120,
			wantErr: "larger than", wantIs: errDocumentSize,
			check: func(t testing.TB) {
				select {
				case n := <-hugeSent:
					if n >= pollerHugeBody {
						t.Errorf("the upstream wrote all %d bytes; want the read stopped near %d", n, maxDocumentBytes)
					}
				case <-time.After(60 * time.Second):
					t.Fatal("the 50 MB handler did not return after the poll gave up")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newPollerUpstream(t, pollerServeDoc(good))
			s, logs := newPollerServer(t, up.url, nil, pollerPair(pollerClientA, pollerServerA))
			client, env := pollerClient(t), s.envs[0]
			pollerMustPoll(t, s, env, client)
			if tt.timeout != 0 {
				// Set after the good poll, so that a loaded machine cannot
				// make that one time out.
				s.cfg.PollTimeout = tt.timeout
			}
			held := env.snap.Load()
			_, before := pollerFlagsBody(t, s, pollerClientA)

			if tt.respond == nil {
				up.srv.Close()
			} else {
				up.set(tt.respond)
			}
			err := s.pollOnce(context.Background(), env, client)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("pollOnce after the fault = %v; want an error containing %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("pollOnce after the fault = %v; want errors.Is %v", err, tt.wantIs)
			}
			if tt.check != nil {
				tt.check(t)
			}
			if env.snap.Load() != held {
				t.Error("the fault replaced the held snapshot; want the last good one kept")
			}
			pollerWantFlags(t, s, pollerClientA, before)

			// The poll loop logs the failure with the client key.
			stop := pollerStart(t, s, client)
			logs.waitFor(t, pollerRecord{level: "WARN", msg: "poll failed", env: pollerClientA, err: tt.wantErr})
			stop()
			if tt.rejected {
				logs.mustHave(t, pollerRecord{level: "ERROR", msg: "rejected", env: pollerClientA})
			}
			pollerWantFlags(t, s, pollerClientA, before)
			logs.noServerKeys(t)
		})
	}
}

// TestPollRejectedKeyMasked checks that the ERROR for a rejected key names
// the server key only masked.
func TestPollRejectedKeyMasked(t *testing.T) {
	up := newPollerUpstream(t, pollerServeStatus(http.StatusUnauthorized))
	s, logs := newPollerServer(t, up.url, nil, pollerPair(pollerClientA, pollerServerA))
	if err := s.pollOnce(context.Background(), s.envs[0], pollerClient(t)); err == nil {
		t.Fatal("pollOnce against a 401 = nil; want an error")
	}
	for _, rec := range logs.records(t) {
		if rec["level"] != "ERROR" {
			continue
		}
		if got, want := rec["server_key"], secret(pollerServerA).String(); got != nil && got != want {
			t.Errorf("logged server_key = %v; want the masked %q", got, want)
		}
	}
	logs.mustHave(t, pollerRecord{level: "ERROR", msg: "rejected", env: pollerClientA})
	logs.noServerKeys(t)
}

// TestPollNotModifiedWithoutDocument: a 304 is only meaningful for a held
// document; without one it is a failure and publishes nothing.
func TestPollNotModifiedWithoutDocument(t *testing.T) {
	up := newPollerUpstream(t, pollerServeStatus(http.StatusNotModified))
	s, logs := newPollerServer(t, up.url, nil, pollerPair(pollerClientA, pollerServerA))
	client := pollerClient(t)
	err := s.pollOnce(context.Background(), s.envs[0], client)
	if err == nil {
		t.Error("pollOnce answered 304 with no document held = nil; want an error")
	}
	if s.envs[0].snap.Load() != nil {
		t.Error("a 304 with no document held published a snapshot")
	}
	pollerWantNoFlags(t, s, pollerClientA)
	if code, r := s.readiness(); code != http.StatusServiceUnavailable || r.Reason == nil || *r.Reason != reasonNotUpdated {
		t.Errorf("readiness() = %d %+v; want 503 %q", code, r, reasonNotUpdated)
	}
	pollerStart(t, s, client)
	logs.waitFor(t, pollerRecord{level: "WARN", msg: "poll failed", env: pollerClientA, err: "304"})
}

// TestPollFollowsRedirect: a redirect to a good document is followed and the
// document published.
func TestPollFollowsRedirect(t *testing.T) {
	up := newPollerUpstream(t, pollerServeDoc(pollerDoc(pollerClientA, pollerUpdatedAt, "blue")))
	s, _ := newPollerServer(t, up.url, nil, pollerPair(pollerClientA, pollerServerA))
	client, env := pollerClient(t), s.envs[0]
	pollerMustPoll(t, s, env, client)

	const moved = "/moved/api/v1/environment-document/"
	green := pollerServeAt(moved, pollerDoc(pollerClientA, "2026-11-21T00:00:00Z", "green"))
	up.set(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == pollerDocPath {
			http.Redirect(w, r, moved, http.StatusMovedPermanently)
			return
		}
		green(w, r)
	})
	pollerMustPoll(t, s, env, client)
	pollerWantFlags(t, s, pollerClientA, pollerFlags("green"))
	if got := up.last(t).Get("X-Environment-Key"); got != pollerServerA {
		t.Errorf("redirected request: X-Environment-Key = %q; want %q", got, pollerServerA)
	}
}

// TestPollRedirectToAnotherHost: a redirect to another host is followed,
// but the server key, a secret, is not sent there.
func TestPollRedirectToAnotherHost(t *testing.T) {
	other := newPollerUpstream(t, pollerServeByKey(map[string][]byte{
		pollerServerA: pollerDoc(pollerClientA, pollerUpdatedAt, "stolen"),
	}))
	up := newPollerUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.url+"/environment-document/", http.StatusFound)
	})
	s, _ := newPollerServer(t, up.url, nil, pollerPair(pollerClientA, pollerServerA))
	if err := s.pollOnce(t.Context(), s.envs[0], pollerClient(t)); err == nil {
		t.Fatal("pollOnce through a cross-host redirect = nil error; want the other host's 401")
	}
	if got := other.last(t).Get("X-Environment-Key"); got != "" {
		t.Errorf("X-Environment-Key sent to another host = %q; want none", got)
	}
	pollerWantNoFlags(t, s, pollerClientA)
}

// TestPollUnparsableUpdatedAt: a document whose updated_at does not parse is
// still served, but no If-Modified-Since can be built from it.
func TestPollUnparsableUpdatedAt(t *testing.T) {
	up := newPollerUpstream(t, pollerServeDoc(pollerDoc(pollerClientA, "last tuesday", "blue")))
	s, logs := newPollerServer(t, up.url, nil, pollerPair(pollerClientA, pollerServerA))
	client, env := pollerClient(t), s.envs[0]
	pollerMustPoll(t, s, env, client)
	pollerWantFlags(t, s, pollerClientA, pollerFlags("blue"))
	logs.mustHave(t, pollerRecord{level: "WARN", msg: "updated_at", env: pollerClientA})

	pollerMustPoll(t, s, env, client)
	if got := up.last(t).Values("If-Modified-Since"); got != nil {
		t.Errorf("after a document with an unparsable updated_at: If-Modified-Since = %q; want none", got)
	}
	pollerWantFlags(t, s, pollerClientA, pollerFlags("blue"))
}

// pollerTransport is an in-memory upstream for synctest bubbles, where real
// network I/O has no place. It records when each key polled, in the bubble's
// fake time.
type pollerTransport struct {
	// answer gives the response to the n-th request (from 0) of key.
	answer func(req *http.Request, key string, n int) (*http.Response, error)

	mu    sync.Mutex
	calls map[string][]time.Time
}

func (p *pollerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	key := req.Header.Get("X-Environment-Key")
	p.mu.Lock()
	if p.calls == nil {
		p.calls = map[string][]time.Time{}
	}
	n := len(p.calls[key])
	p.calls[key] = append(p.calls[key], time.Now())
	p.mu.Unlock()
	return p.answer(req, key, n)
}

// offsets is when key polled, relative to start.
func (p *pollerTransport) offsets(key string, start time.Time) []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []time.Duration
	for _, at := range p.calls[key] {
		out = append(out, at.Sub(start))
	}
	return out
}

func pollerResponse(req *http.Request, code int, body []byte) *http.Response {
	return &http.Response{
		Status: fmt.Sprintf("%d %s", code, http.StatusText(code)), StatusCode: code,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// pollerHang answers only when the request is cancelled: an upstream that never
// answers.
func pollerHang(req *http.Request) (*http.Response, error) {
	<-req.Context().Done()
	return nil, req.Context().Err()
}

// newPollerBubble is newPollerServer for synctest bubbles: the transport is
// in memory, and the pollers stop when the bubble's test ends.
func newPollerBubble(t *testing.T, tr *pollerTransport, mod func(*Config), pairs ...KeyPair) *server {
	t.Helper()
	s, _ := newPollerServer(t, "http://upstream.invalid/api/v1", mod, pairs...)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.runPollers(ctx, &http.Client{Transport: tr})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s
}

func pollerSeconds(d ...float64) []time.Duration {
	out := make([]time.Duration, len(d))
	for i, s := range d {
		out[i] = seconds(s)
	}
	return out
}

// TestPollIndependence: an environment whose upstream never answers does not
// delay another, which is fetched and refreshed on schedule (SPEC §3).
func TestPollIndependence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &pollerTransport{answer: func(req *http.Request, key string, n int) (*http.Response, error) {
			if key == pollerServerA {
				return pollerHang(req)
			}
			value := fmt.Sprintf("v%d", n)
			updated := time.Date(2026, 11, 20, 10, 0, n, 0, time.UTC).Format(time.RFC3339)
			return pollerResponse(req, http.StatusOK, pollerDoc(pollerClientB, updated, value)), nil
		}}
		start := time.Now()
		s := newPollerBubble(t, tr, func(c *Config) {
			c.PollFrequency = 10
			c.PollTimeout = 3600 // A's request outlives the test
		}, pollerPair(pollerClientA, pollerServerA), pollerPair(pollerClientB, pollerServerB))

		synctest.Wait()
		pollerWantFlags(t, s, pollerClientB, pollerFlags("v0"))
		pollerWantNoFlags(t, s, pollerClientA)

		time.Sleep(35 * time.Second)
		synctest.Wait()
		if diff := cmp.Diff(pollerSeconds(0, 10, 20, 30), tr.offsets(pollerServerB, start)); diff != "" {
			t.Errorf("B's polls while A hangs (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(pollerSeconds(0), tr.offsets(pollerServerA, start)); diff != "" {
			t.Errorf("A's polls (-want +got):\n%s", diff)
		}
		pollerWantFlags(t, s, pollerClientB, pollerFlags("v3"))
		pollerWantNoFlags(t, s, pollerClientA)
		if code, r := s.readiness(); code != http.StatusServiceUnavailable || r.Reason == nil || *r.Reason != reasonNotUpdated {
			t.Errorf("readiness() with A never updated = %d %+v; want 503 %q", code, r, reasonNotUpdated)
		}
	})
}

// TestPollBackoff checks the waits after failures: doubling from about a
// second (a fixed per-environment jitter of at most 20% below), never above
// the poll frequency, back to the poll frequency after a success, and from
// the start again after the next failure.
func TestPollBackoff(t *testing.T) {
	// failing lists which polls fail (by index); the others succeed.
	failing := map[int]bool{0: true, 1: true, 2: true, 3: true, 4: true, 5: true, 6: true, 8: true}
	tests := []struct {
		name string
		freq float64
	}{
		{"default frequency", 10},
		{"frequency 3s", 3},
		{"frequency 7s", 7},
		{"frequency under a second", 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				doc := pollerDoc(pollerClientA, pollerUpdatedAt, "blue")
				tr := &pollerTransport{answer: func(req *http.Request, key string, n int) (*http.Response, error) {
					if failing[n] {
						return pollerResponse(req, http.StatusServiceUnavailable, nil), nil
					}
					return pollerResponse(req, http.StatusOK, doc), nil
				}}
				start := time.Now()
				freq := seconds(tt.freq)
				newPollerBubble(t, tr, func(c *Config) { c.PollFrequency = tt.freq }, pollerPair(pollerClientA, pollerServerA))
				time.Sleep(11*freq + 16*time.Second)
				synctest.Wait()

				at := tr.offsets(pollerServerA, start)
				if len(at) < 11 {
					t.Fatalf("polls at %v; want at least 11", at)
				}
				gaps := make([]time.Duration, 10)
				for i := range gaps {
					gaps[i] = at[i+1] - at[i]
				}
				// The first retry waits about a second, or the frequency when
				// that is shorter.
				if lo, hi := min(800*time.Millisecond, freq), min(time.Second, freq); gaps[0] < lo || gaps[0] > hi {
					t.Errorf("first retry after %v; want within [%v, %v] (gaps %v)", gaps[0], lo, hi, gaps)
				}
				const slack = time.Microsecond // float rounding of the jitter
				for i := 1; i < 7; i++ {
					prev, got := gaps[i-1], gaps[i]
					switch {
					case got > freq:
						t.Errorf("retry %d after %v; want at most the poll frequency %v (gaps %v)", i+1, got, freq, gaps)
					case 2*prev <= freq && (got < 2*prev-slack || got > 2*prev+slack):
						t.Errorf("retry %d after %v; want double the previous %v (gaps %v)", i+1, got, prev, gaps)
					case got < prev:
						t.Errorf("retry %d after %v; want no shorter than the previous %v (gaps %v)", i+1, got, prev, gaps)
					}
				}
				if gaps[7] != freq {
					t.Errorf("after a success the next poll came after %v; want the poll frequency %v (gaps %v)", gaps[7], freq, gaps)
				}
				if d := gaps[8] - gaps[0]; d < -slack || d > slack {
					t.Errorf("after a success then a failure the retry came after %v; want the first backoff %v again (gaps %v)", gaps[8], gaps[0], gaps)
				}
				if gaps[9] != freq {
					t.Errorf("after the last success the next poll came after %v; want %v (gaps %v)", gaps[9], freq, gaps)
				}
			})
		})
	}
}

// TestPollRefreshTrigger: a refresh request polls at once, and the schedule
// restarts from that poll.
func TestPollRefreshTrigger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		doc := pollerDoc(pollerClientA, pollerUpdatedAt, "blue")
		tr := &pollerTransport{answer: func(req *http.Request, key string, n int) (*http.Response, error) {
			return pollerResponse(req, http.StatusOK, doc), nil
		}}
		start := time.Now()
		s := newPollerBubble(t, tr, func(c *Config) { c.PollFrequency = 10 }, pollerPair(pollerClientA, pollerServerA))
		time.Sleep(3 * time.Second)
		s.envs[0].triggerRefresh()
		synctest.Wait()
		if diff := cmp.Diff(pollerSeconds(0, 3), tr.offsets(pollerServerA, start)); diff != "" {
			t.Errorf("polls after a trigger at 3s (-want +got):\n%s", diff)
		}
		time.Sleep(11 * time.Second)
		synctest.Wait()
		if diff := cmp.Diff(pollerSeconds(0, 3, 13), tr.offsets(pollerServerA, start)); diff != "" {
			t.Errorf("polls by 14s (-want +got):\n%s", diff)
		}
	})
}

// TestPollRefreshCoalesces: triggers that arrive while a poll is in flight
// make one more poll, not one each.
func TestPollRefreshCoalesces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		doc := pollerDoc(pollerClientA, pollerUpdatedAt, "blue")
		tr := &pollerTransport{answer: func(req *http.Request, key string, n int) (*http.Response, error) {
			if n == 1 {
				time.Sleep(2 * time.Second) // a slow answer: the poll at 10s ends at 12s
			}
			return pollerResponse(req, http.StatusOK, doc), nil
		}}
		start := time.Now()
		s := newPollerBubble(t, tr, func(c *Config) { c.PollFrequency = 10 }, pollerPair(pollerClientA, pollerServerA))
		time.Sleep(11 * time.Second)
		for range 3 {
			s.envs[0].triggerRefresh()
		}
		time.Sleep(4 * time.Second)
		synctest.Wait()
		if diff := cmp.Diff(pollerSeconds(0, 10, 12), tr.offsets(pollerServerA, start)); diff != "" {
			t.Errorf("polls by 15s, with three triggers at 11s (-want +got):\n%s", diff)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if diff := cmp.Diff(pollerSeconds(0, 10, 12, 22), tr.offsets(pollerServerA, start)); diff != "" {
			t.Errorf("polls by 25s (-want +got):\n%s", diff)
		}
	})
}

// TestPollReadiness follows readiness through not updated, ok, stale and ok
// again with a fake clock (SPEC §4).
func TestPollReadiness(t *testing.T) {
	const freq, grace = 10, 30
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	up := newPollerUpstream(t, pollerServeByKey(map[string][]byte{
		pollerServerA: pollerDoc(pollerClientA, pollerUpdatedAt, "blue"),
		pollerServerB: pollerDoc(pollerClientB, pollerUpdatedAt, "blue"),
	}))
	s, _ := newPollerServer(t, up.url, func(c *Config) {
		c.PollFrequency = freq
		g := float64(grace)
		c.HealthCheck.GracePeriod = &g
	}, pollerPair(pollerClientA, pollerServerA), pollerPair(pollerClientB, pollerServerB))
	clock := t0
	s.now = func() time.Time { return clock }
	client := pollerClient(t)
	envA, envB := s.envs[0], s.envs[1]
	// limit is poll_frequency + grace × number_of_environments.
	limit := seconds(freq + grace*2)

	str := func(s string) *string { return &s }
	check := func(step string, wantCode int, want readiness) {
		t.Helper()
		code, got := s.readiness()
		if code != wantCode {
			t.Errorf("%s: readiness() code = %d; want %d", step, code, wantCode)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: readiness() (-want +got):\n%s", step, diff)
		}
		rec := pollerGet(t, s, "/proxy/health/readiness", "")
		wantBody, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(wantBody), rec.Body.String()); rec.Code != wantCode || diff != "" {
			t.Errorf("%s: GET /proxy/health/readiness = %d; want %d; body (-want +got):\n%s", step, rec.Code, wantCode, diff)
		}
	}
	notUpdated := readiness{Status: "error", Reason: str(reasonNotUpdated)}
	ok := func(last time.Time) readiness {
		return readiness{Status: "ok", LastSuccessfulUpdate: str(last.Format(time.RFC3339Nano))}
	}
	stale := func(last time.Time) readiness {
		return readiness{Status: "error", Reason: str(reasonStale), LastSuccessfulUpdate: str(last.Format(time.RFC3339Nano))}
	}

	check("nothing fetched", http.StatusServiceUnavailable, notUpdated)
	pollerMustPoll(t, s, envA, client)
	check("only A fetched", http.StatusServiceUnavailable, notUpdated)
	clock = t0.Add(time.Second)
	pollerMustPoll(t, s, envB, client)
	check("both fetched", http.StatusOK, ok(t0)) // the oldest success counts

	clock = t0.Add(limit)
	check("at the limit", http.StatusOK, ok(t0))
	clock = t0.Add(limit + time.Nanosecond)
	check("past the limit", http.StatusServiceUnavailable, stale(t0))

	// A failed poll confirms nothing.
	up.set(pollerServeStatus(http.StatusInternalServerError))
	if err := s.pollOnce(context.Background(), envA, client); err == nil {
		t.Fatal("pollOnce against a 500 = nil; want an error")
	}
	check("after a failed poll", http.StatusServiceUnavailable, stale(t0))

	// A 304 is a success: the oldest success is now B's.
	up.set(pollerServeStatus(http.StatusNotModified))
	pollerMustPoll(t, s, envA, client)
	check("A confirmed by a 304", http.StatusOK, ok(t0.Add(time.Second)))

	clock = t0.Add(time.Second + limit + time.Nanosecond)
	check("B stale", http.StatusServiceUnavailable, stale(t0.Add(time.Second)))
	pollerMustPoll(t, s, envB, client)
	check("B confirmed", http.StatusOK, ok(t0.Add(limit+time.Nanosecond)))

	t.Run("grace null disables staleness", func(t *testing.T) {
		s.cfg.HealthCheck.GracePeriod = nil
		clock = t0.Add(365 * 24 * time.Hour)
		code, got := s.readiness()
		if code != http.StatusOK || got.Status != "ok" || got.LastSuccessfulUpdate == nil {
			t.Errorf("readiness() a year later with grace null = %d %+v; want 200 ok with last_successful_update", code, got)
		}
	})
}

// TestPollCacheWarmStart: a restarted proxy with the upstream down serves the
// cached document at once (SPEC §2 cache_dir).
func TestPollCacheWarmStart(t *testing.T) {
	dir := t.TempDir()
	doc := pollerDoc(pollerClientA, pollerUpdatedAt, "blue")
	up := newPollerUpstream(t, pollerServeDoc(doc))
	cacheDir := func(c *Config) { c.CacheDir = dir }
	first, _ := newPollerServer(t, up.url, cacheDir, pollerPair(pollerClientA, pollerServerA))
	pollerMustPoll(t, first, first.envs[0], pollerClient(t))

	path := cachePath(dir, pollerClientA)
	cached, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("cache file after a poll: %v", err)
	}
	if !bytes.Equal(cached, doc) {
		t.Errorf("cache file = %s; want the document as received %s", cached, doc)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{filepath.Base(path)}, names); diff != "" {
		t.Errorf("cache dir holds (-want +got):\n%s", diff)
	}

	up.srv.Close() // the upstream is down for the restart
	s, logs := newPollerServer(t, up.url, cacheDir, pollerPair(pollerClientA, pollerServerA))
	s.loadCache()
	pollerWantFlags(t, s, pollerClientA, pollerFlags("blue"))
	if code, r := s.readiness(); code != http.StatusOK {
		t.Errorf("readiness() after loadCache = %d %+v; want 200", code, r)
	}
	client := pollerClient(t)
	if err := s.pollOnce(context.Background(), s.envs[0], client); err == nil {
		t.Error("pollOnce with the upstream down = nil; want an error")
	}
	pollerWantFlags(t, s, pollerClientA, pollerFlags("blue"))
	logs.mustHave(t, pollerRecord{level: "INFO", msg: "environment updated", env: pollerClientA})
	logs.noServerKeys(t)
}

// TestPollCacheConditionalAfterWarmStart: the first poll after a warm start asks
// from the cached document's date, so an unchanged upstream answers 304.
func TestPollCacheConditionalAfterWarmStart(t *testing.T) {
	dir := t.TempDir()
	if err := writeCache(dir, pollerClientA, pollerDoc(pollerClientA, pollerUpdatedAt, "blue")); err != nil {
		t.Fatal(err)
	}
	up := newPollerUpstream(t, pollerServeStatus(http.StatusNotModified))
	s, _ := newPollerServer(t, up.url, func(c *Config) { c.CacheDir = dir }, pollerPair(pollerClientA, pollerServerA))
	s.loadCache()
	pollerMustPoll(t, s, s.envs[0], pollerClient(t))
	if got := up.last(t).Get("If-Modified-Since"); got != pollerIMS {
		t.Errorf("first poll after a warm start: If-Modified-Since = %q; want %q", got, pollerIMS)
	}
	pollerWantFlags(t, s, pollerClientA, pollerFlags("blue"))
}

// TestPollCacheBadFiles: a cache file that cannot be used is logged and ignored;
// the server answers 503 until a document arrives, and the next good
// document replaces the file.
func TestPollCacheBadFiles(t *testing.T) {
	tests := []struct {
		name    string
		content []byte
	}{
		{"corrupt", []byte(`{"api_key": "` + pollerClientA + `", "proj`)},
		{"another environment", pollerDoc("SomeOtherEnvironment", pollerUpdatedAt, "red")},
		{"empty", nil},
		{"not a document", []byte(`[]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := cachePath(dir, pollerClientA)
			if err := os.WriteFile(path, tt.content, 0o644); err != nil {
				t.Fatal(err)
			}
			up := newPollerUpstream(t, pollerServeStatus(http.StatusBadGateway))
			s, logs := newPollerServer(t, up.url, func(c *Config) { c.CacheDir = dir }, pollerPair(pollerClientA, pollerServerA))
			s.loadCache()
			logs.mustHave(t, pollerRecord{level: "WARN", msg: "cache", env: pollerClientA})
			pollerWantNoFlags(t, s, pollerClientA)
			if code, r := s.readiness(); code != http.StatusServiceUnavailable {
				t.Errorf("readiness() after an ignored cache file = %d %+v; want 503", code, r)
			}

			client := pollerClient(t)
			if err := s.pollOnce(context.Background(), s.envs[0], client); err == nil {
				t.Error("pollOnce against a 502 = nil; want an error")
			}
			pollerWantNoFlags(t, s, pollerClientA)

			doc := pollerDoc(pollerClientA, pollerUpdatedAt, "blue")
			up.set(pollerServeDoc(doc))
			pollerMustPoll(t, s, s.envs[0], client)
			pollerWantFlags(t, s, pollerClientA, pollerFlags("blue"))
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, doc) {
				t.Errorf("cache file after a good poll = %q, %v; want the new document", got, err)
			}
		})
	}
}

// TestPollCacheUnwritableDir: a cache dir that cannot be created is logged, and
// serving continues.
func TestPollCacheUnwritableDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plain-file")
	if err := os.WriteFile(file, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	up := newPollerUpstream(t, pollerServeDoc(pollerDoc(pollerClientA, pollerUpdatedAt, "blue")))
	s, logs := newPollerServer(t, up.url, func(c *Config) { c.CacheDir = filepath.Join(file, "cache") }, pollerPair(pollerClientA, pollerServerA))
	s.loadCache() // must not stop the start
	pollerWantNoFlags(t, s, pollerClientA)
	pollerMustPoll(t, s, s.envs[0], pollerClient(t))
	pollerWantFlags(t, s, pollerClientA, pollerFlags("blue"))
	logs.mustHave(t, pollerRecord{level: "WARN", msg: "cache write failed", env: pollerClientA})
	if code, r := s.readiness(); code != http.StatusOK {
		t.Errorf("readiness() with an unwritable cache dir = %d %+v; want 200", code, r)
	}
}

// TestPollWatchFile serves an environment from a local document: published at
// start, reloaded when it changes, the last good one kept when the file turns
// invalid or disappears (SPEC §2 environment_document_path).
func TestPollWatchFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "environment.json")
		mtime := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
		write := func(content []byte) {
			t.Helper()
			if err := os.WriteFile(path, content, 0o644); err != nil {
				t.Fatal(err)
			}
			// A distinct modification time for every version, so the change
			// is seen whatever the file system's timestamp resolution.
			mtime = mtime.Add(time.Minute)
			if err := os.Chtimes(path, mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
		write(pollerDoc(pollerClientA, pollerUpdatedAt, "blue"))
		pair := pollerPair(pollerClientA, pollerServerA)
		pair.DocumentPath = path
		s, logs := newPollerServer(t, "http://upstream.invalid/api/v1", nil, pair)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = s.runPollers(ctx, &http.Client{Transport: &pollerTransport{answer: func(req *http.Request, _ string, _ int) (*http.Response, error) {
				t.Errorf("an offline environment made a request to %s", req.URL)
				return nil, errors.New("offline")
			}}})
		}()
		t.Cleanup(func() {
			cancel()
			<-done
		})

		synctest.Wait()
		pollerWantFlags(t, s, pollerClientA, pollerFlags("blue"))
		if code, r := s.readiness(); code != http.StatusOK {
			t.Errorf("readiness() with a document file = %d %+v; want 200", code, r)
		}

		next := func() {
			time.Sleep(fileCheckInterval)
			synctest.Wait()
		}
		write(pollerDoc(pollerClientA, "2026-11-21T00:00:00Z", "green"))
		next()
		pollerWantFlags(t, s, pollerClientA, pollerFlags("green"))

		write([]byte(`{"api_key": "` + pollerClientA + `", "project": {`))
		next()
		pollerWantFlags(t, s, pollerClientA, pollerFlags("green"))
		logs.mustHave(t, pollerRecord{level: "ERROR", msg: "document file invalid", env: pollerClientA})

		write(pollerDoc(pollerClientA, "2026-11-22T00:00:00Z", "purple"))
		next()
		pollerWantFlags(t, s, pollerClientA, pollerFlags("purple"))

		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		next()
		pollerWantFlags(t, s, pollerClientA, pollerFlags("purple"))
		logs.mustHave(t, pollerRecord{level: "ERROR", msg: "document file unreadable", env: pollerClientA})

		write(pollerDoc(pollerClientA, "2026-11-23T00:00:00Z", "orange"))
		next()
		pollerWantFlags(t, s, pollerClientA, pollerFlags("orange"))
		logs.noServerKeys(t)
	})
}

// TestPollForeignDocumentRefused: a document whose api_key is not the
// configured client key is refused, keeping the last good one, so a
// misconfigured pair is loud and never reaches the cache.
func TestPollForeignDocumentRefused(t *testing.T) {
	up := newPollerUpstream(t, pollerServeDoc(pollerDoc(pollerClientA, pollerUpdatedAt, "blue")))
	s, _ := newPollerServer(t, up.url, func(c *Config) { c.CacheDir = t.TempDir() }, pollerPair(pollerClientA, pollerServerA))
	client, env := pollerClient(t), s.envs[0]
	pollerMustPoll(t, s, env, client)
	up.set(pollerServeDoc(pollerDoc("SomeOtherEnvironmentKey", "2026-11-22T00:00:00Z", "red")))
	if err := s.pollOnce(t.Context(), env, client); err == nil || !strings.Contains(err.Error(), "belongs to environment") {
		t.Fatalf("pollOnce of a foreign document = %v; want a refusal", err)
	}
	pollerWantFlags(t, s, pollerClientA, pollerFlags("blue"))
	cached, err := os.ReadFile(cachePath(s.cfg.CacheDir, pollerClientA))
	if err != nil || !strings.Contains(string(cached), `"blue"`) {
		t.Errorf("cache after a foreign document = %q, %v; want the last good document", cached, err)
	}
}
