package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// edgeRoundTripper plays the upstream in memory: it answers each URL with a
// redirect to the next one listed, or with the document, and records the
// X-Environment-Key each URL received.
type edgeRoundTripper struct {
	redirects map[string]string // URL → Location
	doc       []byte

	mu   sync.Mutex
	keys map[string]string // URL → X-Environment-Key received
}

func (rt *edgeRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	url := req.URL.String()
	rt.mu.Lock()
	rt.keys[url] = req.Header.Get("X-Environment-Key")
	rt.mu.Unlock()
	resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Request: req, Body: io.NopCloser(bytes.NewReader(rt.doc))}
	if loc, ok := rt.redirects[url]; ok {
		resp.StatusCode = http.StatusFound
		resp.Header.Set("Location", loc)
		resp.Body = http.NoBody
	}
	return resp, nil
}

// TestPollRedirectKey: the poll client follows redirects, but sends the
// server key only to the configured host, and never over plain HTTP when
// the configured URL is HTTPS.
func TestPollRedirectKey(t *testing.T) {
	const docPath = "/api/v1/environment-document/"
	tests := []struct {
		name   string
		apiURL string
		hops   []string          // where each redirect leads, in order
		want   map[string]string // URL → the key it must receive ("" none)
	}{
		{
			name: "same host, same scheme", apiURL: "https://flagsmith.test/api/v1",
			hops: []string{"https://flagsmith.test/moved/"},
			want: map[string]string{"https://flagsmith.test" + docPath: pollerServerA, "https://flagsmith.test/moved/": pollerServerA},
		},
		{
			name: "https to http on the same host", apiURL: "https://flagsmith.test/api/v1",
			hops: []string{"http://flagsmith.test/moved/"},
			want: map[string]string{"https://flagsmith.test" + docPath: pollerServerA, "http://flagsmith.test/moved/": ""},
		},
		{
			name: "https to http and back to https", apiURL: "https://flagsmith.test/api/v1",
			hops: []string{"http://flagsmith.test/plain/", "https://flagsmith.test/secure/"},
			want: map[string]string{"http://flagsmith.test/plain/": "", "https://flagsmith.test/secure/": pollerServerA},
		},
		{
			name: "another host", apiURL: "https://flagsmith.test/api/v1",
			hops: []string{"https://elsewhere.test/moved/"},
			want: map[string]string{"https://elsewhere.test/moved/": ""},
		},
		{
			name: "another port", apiURL: "https://flagsmith.test/api/v1",
			hops: []string{"https://flagsmith.test:8443/moved/"},
			want: map[string]string{"https://flagsmith.test:8443/moved/": ""},
		},
		{
			name: "another host, then back", apiURL: "https://flagsmith.test/api/v1",
			hops: []string{"https://elsewhere.test/a/", "https://flagsmith.test/b/"},
			want: map[string]string{"https://elsewhere.test/a/": "", "https://flagsmith.test/b/": pollerServerA},
		},
		{
			// The operator chose plain HTTP (a local self-hosted API): no
			// downgrade, and an upgrade keeps the key.
			name: "http configured, upgraded to https", apiURL: "http://flagsmith.test/api/v1",
			hops: []string{"https://flagsmith.test/moved/"},
			want: map[string]string{"http://flagsmith.test" + docPath: pollerServerA, "https://flagsmith.test/moved/": pollerServerA},
		},
		{
			name: "http configured, stays http", apiURL: "http://flagsmith.test/api/v1",
			hops: []string{"http://flagsmith.test/moved/"},
			want: map[string]string{"http://flagsmith.test/moved/": pollerServerA},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &edgeRoundTripper{redirects: map[string]string{}, keys: map[string]string{},
				doc: pollerDoc(pollerClientA, pollerUpdatedAt, "blue")}
			from := tt.apiURL + "/environment-document/"
			for _, hop := range tt.hops {
				rt.redirects[from] = hop
				from = hop
			}
			s, logs := newPollerServer(t, tt.apiURL, nil, pollerPair(pollerClientA, pollerServerA))
			client := newPollClient()
			client.Transport = rt
			if err := s.pollOnce(t.Context(), s.envs[0], client); err != nil {
				t.Fatalf("pollOnce = %v; want the document, through the redirects", err)
			}
			for url, want := range tt.want {
				got, asked := rt.keys[url]
				if !asked {
					t.Errorf("%s was not requested; requests: %v", url, rt.keys)
				} else if got != want {
					t.Errorf("%s received X-Environment-Key %q; want %q", url, got, want)
				}
			}
			logs.noServerKeys(t)
		})
	}
}

// TestAccessLogMasksKeys: no access log line holds a whole server key or an
// unknown key, wherever in the path it was put; a configured client key,
// which browsers hold anyway, names its environment in clear.
func TestAccessLogMasksKeys(t *testing.T) {
	const (
		serverKey  = "ser.AccessLogServerSecret0001"
		clientKey  = "AccessLogClientKey0001"
		unknownKey = "SomeoneElsesSecretKey0001"
	)
	tests := []struct {
		name, method, path string
		wantPath           string
	}{
		{"server key as the stream key", "GET", "/sse/environments/" + serverKey + "/stream", "/sse/environments/ser.Ac…/stream"},
		{"server key as the stream key, slash", "GET", "/sse/environments/" + serverKey + "/stream/", "/sse/environments/ser.Ac…/stream/"},
		{"unknown stream key", "GET", "/sse/environments/" + unknownKey + "/stream", "/sse/environments/Someon…/stream"},
		{"client stream key", "HEAD", "/sse/environments/" + clientKey + "/stream", "/sse/environments/" + clientKey + "/stream"},
		{"server key in an unrouted path", "GET", "/api/v1/flags/" + serverKey, "/api/v1/flags/ser.Ac…"},
		{"server key below the stream", "GET", "/sse/environments/" + clientKey + "/" + serverKey, "/sse/environments/" + clientKey + "/ser.Ac…"},
		{"ordinary path", "GET", "/api/v1/flags/", "/api/v1/flags/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			cfg := defaultConfig()
			cfg.EnvironmentKeyPairs = []KeyPair{{ServerSideKey: serverKey, ClientSideKey: clientKey}}
			cfg.Logging.EnableAccessLog = true
			s := newServer(cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
			s.handler().ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tt.method, tt.path, nil))
			for _, secret := range []string{serverKey, unknownKey, strings.TrimPrefix(serverKey, serverKeyPrefix)} {
				if strings.Contains(logs.String(), secret) {
					t.Errorf("the log holds the key %q:\n%s", secret, logs.String())
				}
			}
			var rec map[string]any
			if err := json.Unmarshal(logs.Bytes(), &rec); err != nil {
				t.Fatalf("access log %q is not one JSON line: %v", logs.String(), err)
			}
			if rec["path"] != tt.wantPath {
				t.Errorf("logged path = %q; want %q", rec["path"], tt.wantPath)
			}
		})
	}
}

// TestHandlersCORSCredentials: Access-Control-Allow-Credentials is sent only
// when allow_credentials is set, and only to listed origins.
func TestHandlersCORSCredentials(t *testing.T) {
	listed := []string{"https://app.example.com"}
	tests := []struct {
		name        string
		origins     []string
		credentials bool
		method      string
		origin      string
		want        string // the header's value; "" for none
	}{
		{"listed origin, default", listed, false, "GET", "https://app.example.com", ""},
		{"listed origin, default, preflight", listed, false, "OPTIONS", "https://app.example.com", ""},
		{"listed origin, allow_credentials", listed, true, "GET", "https://app.example.com", "true"},
		{"listed origin, allow_credentials, preflight", listed, true, "OPTIONS", "https://app.example.com", "true"},
		{"origin not listed, allow_credentials", listed, true, "GET", "https://evil.example.com", ""},
		{"wildcard", []string{"*"}, false, "GET", "https://any.example.org", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newAPITestServer(t, func(c *Config) {
				c.AllowOrigins, c.AllowCredentials = tt.origins, tt.credentials
			}).handler()
			headers := map[string]string{"Origin": tt.origin, "X-Environment-Key": apiClientKey}
			if tt.method == "OPTIONS" {
				headers["Access-Control-Request-Method"] = "GET"
			}
			rec := apiDo(t, h, tt.method, "/api/v1/flags/", headers, "")
			if got := rec.Header().Get("Access-Control-Allow-Credentials"); got != tt.want {
				t.Errorf("%s from %s: Access-Control-Allow-Credentials = %q; want %q", tt.method, tt.origin, got, tt.want)
			}
		})
	}

	t.Run("with the wildcard origin", func(t *testing.T) {
		cfg := defaultConfig()
		cfg.EnvironmentKeyPairs = apiKeyPairs()
		cfg.AllowCredentials = true
		if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "allow_credentials") {
			t.Errorf("validate(allow_credentials with allow_origins [\"*\"]) = %v; want an error naming allow_credentials", err)
		}
	})
}

// edgeWireReply is the first response read from a raw connection.
type edgeWireReply struct {
	status      int
	contentType string
	body        string
}

// edgeWire writes raw bytes to a fresh connection and reads the first
// response. after, when set, is written once that response has been read
// (the body a 100 Continue asked for) and the second response is returned
// too.
func edgeWire(t testing.TB, addr, request, after string) (first, second edgeWireReply) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatalf("write request: %v", err)
	}
	br := bufio.NewReader(conn)
	read := func() edgeWireReply {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		return edgeWireReply{resp.StatusCode, resp.Header.Get("Content-Type"), string(body)}
	}
	first = read()
	if after != "" {
		if _, err := io.WriteString(conn, after); err != nil {
			t.Fatalf("write body: %v", err)
		}
		second = read()
	}
	return first, second
}

// TestHandlersLimitsOnTheWire sends requests over a real connection to a
// server set up as serve sets it up: the limits are answered in JSON where
// our handler can see the request, and before any "100 Continue"; what
// net/http answers itself (a malformed request, headers beyond its own
// limit) is plain text, as the README documents.
func TestHandlersLimitsOnTheWire(t *testing.T) {
	s := newAPITestServer(t, nil)
	ts := httptest.NewUnstartedServer(s.handler())
	ts.Config.MaxHeaderBytes = s.cfg.Server.hardHeaderBytes()
	ts.Start()
	t.Cleanup(ts.Close)
	addr := ts.Listener.Addr().String()
	body := `{"identifier":"wire"}`
	post := func(headers string, contentLength int) string {
		return fmt.Sprintf("POST /api/v1/identities/ HTTP/1.1\r\nHost: edge\r\nX-Environment-Key: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n",
			apiClientKey, contentLength, headers)
	}
	get := func(headers string) string {
		return "GET /api/v1/flags/ HTTP/1.1\r\nHost: edge\r\nX-Environment-Key: " + apiClientKey + "\r\n" + headers + "\r\n"
	}
	padding := func(n int) string { return "X-Padding: " + strings.Repeat("p", n) + "\r\n" }
	tests := []struct {
		name       string
		request    string
		after      string // sent once the first answer is in
		wantFirst  int
		wantJSON   bool // the first answer is a JSON error
		wantSecond int  // 0: no second answer expected
	}{
		{"headers under max_header_bytes", get(padding(12 << 10)), "", http.StatusOK, false, 0},
		{"headers over max_header_bytes", get(padding(20 << 10)), "", http.StatusRequestHeaderFieldsTooLarge, true, 0},
		{"headers just under net/http's limit", get(padding(60 << 10)), "", http.StatusRequestHeaderFieldsTooLarge, true, 0},
		// Documented: beyond the hard limit net/http answers before any handler.
		{"headers over net/http's limit", get(padding(100 << 10)), "", http.StatusRequestHeaderFieldsTooLarge, false, 0},
		{"Expect 100-continue, declared body over the limit", post("Expect: 100-continue\r\n", 2<<20), "", http.StatusRequestEntityTooLarge, true, 0},
		{"declared body over the limit", post("", 2<<20), "", http.StatusRequestEntityTooLarge, true, 0},
		{"Expect 100-continue within the limit", post("Expect: 100-continue\r\n", len(body)), body, http.StatusContinue, false, http.StatusOK},
		// Documented: a request net/http cannot parse never reaches a handler.
		{"malformed request line", "GET /api/v1/flags/ HTTP/1.1 extra\r\nHost: edge\r\n\r\n", "", http.StatusBadRequest, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, second := edgeWire(t, addr, tt.request, tt.after)
			if first.status != tt.wantFirst {
				t.Errorf("first answer = %d %.200q; want %d", first.status, first.body, tt.wantFirst)
			}
			if tt.wantJSON {
				var e errorBody
				if first.contentType != "application/json" || json.Unmarshal([]byte(first.body), &e) != nil || e.Status == "" || e.Message == "" {
					t.Errorf("first answer: Content-Type %q, body %.200q; want a JSON error", first.contentType, first.body)
				}
			}
			if tt.wantSecond != 0 && second.status != tt.wantSecond {
				t.Errorf("answer after the body = %d %.200q; want %d", second.status, second.body, tt.wantSecond)
			}
		})
	}
}
