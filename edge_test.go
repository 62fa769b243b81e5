package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
			want: map[string]string{"https://flagsmith.test" + docPath: serverKeyA, "https://flagsmith.test/moved/": serverKeyA},
		},
		{
			name: "https to http on the same host", apiURL: "https://flagsmith.test/api/v1",
			hops: []string{"http://flagsmith.test/moved/"},
			want: map[string]string{"https://flagsmith.test" + docPath: serverKeyA, "http://flagsmith.test/moved/": ""},
		},
		{
			name: "https to http and back to https", apiURL: "https://flagsmith.test/api/v1",
			hops: []string{"http://flagsmith.test/plain/", "https://flagsmith.test/secure/"},
			want: map[string]string{"http://flagsmith.test/plain/": "", "https://flagsmith.test/secure/": serverKeyA},
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
			want: map[string]string{"https://elsewhere.test/a/": "", "https://flagsmith.test/b/": serverKeyA},
		},
		{
			// The operator chose plain HTTP (a local self-hosted API): no
			// downgrade, and an upgrade keeps the key.
			name: "http configured, upgraded to https", apiURL: "http://flagsmith.test/api/v1",
			hops: []string{"https://flagsmith.test/moved/"},
			want: map[string]string{"http://flagsmith.test" + docPath: serverKeyA, "https://flagsmith.test/moved/": serverKeyA},
		},
		{
			name: "http configured, stays http", apiURL: "http://flagsmith.test/api/v1",
			hops: []string{"http://flagsmith.test/moved/"},
			want: map[string]string{"http://flagsmith.test/moved/": serverKeyA},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &edgeRoundTripper{redirects: map[string]string{}, keys: map[string]string{},
				doc: testDocument(clientKeyA, pollerUpdatedAt, "blue")}
			from := tt.apiURL + "/environment-document/"
			for _, hop := range tt.hops {
				rt.redirects[from] = hop
				from = hop
			}
			s := newTestServer(t, withPairs(pairA), func(c *Config) { c.APIURL = tt.apiURL })
			logs := s.logs
			client := newPollClient()
			client.Transport = rt
			if err := s.pollNow(t.Context(), s.environments()[0], client); err != nil {
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
	masked := secret(serverKey).String() // as the secret masks itself
	tests := []struct {
		name, method, path string
		wantPath           string
	}{
		{"server key as the stream key", "GET", "/sse/environments/" + serverKey + "/stream", "/sse/environments/" + masked + "/stream"},
		{"server key as the stream key, slash", "GET", "/sse/environments/" + serverKey + "/stream/", "/sse/environments/" + masked + "/stream/"},
		{"unknown stream key", "GET", "/sse/environments/" + unknownKey + "/stream", "/sse/environments/Someon…/stream"},
		{"client stream key", "HEAD", "/sse/environments/" + clientKey + "/stream", "/sse/environments/" + clientKey + "/stream"},
		{"server key in an unrouted path", "GET", "/api/v1/flags/" + serverKey, "/api/v1/flags/" + masked},
		{"server key below the stream", "GET", "/sse/environments/" + clientKey + "/" + serverKey, "/sse/environments/" + clientKey + "/" + masked},
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
			rec := callHandler(t, h, tt.method, "/api/v1/flags/", headers, "")
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
	ts.Config.MaxHeaderBytes = s.config().Server.hardHeaderBytes()
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

// edgeProxied is one request a forward proxy received.
type edgeProxied struct {
	method, target string // target: CONNECT's host:port, else the absolute URL
	key            string // X-Environment-Key as the proxy saw it
}

// edgeForwardProxy is a forward proxy that knows one made-up host name and
// sends its traffic to the real upstream on loopback: it tunnels CONNECT
// and forwards absolute-form requests, records what it was asked, and dials
// nothing else. The made-up name matters: Go never proxies requests to
// localhost or a loopback address.
type edgeForwardProxy struct {
	url     string
	targets map[string]string // "upstream.test:PORT" → "127.0.0.1:PORT"

	mu       sync.Mutex
	received []edgeProxied
}

func newEdgeForwardProxy(t testing.TB, targets map[string]string) *edgeForwardProxy {
	t.Helper()
	p := &edgeForwardProxy{targets: targets}
	forward := &http.Transport{} // to loopback only: no proxy of its own
	t.Cleanup(forward.CloseIdleConnections)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := r.URL.String()
		if r.Method == http.MethodConnect {
			target = r.Host
		}
		p.mu.Lock()
		p.received = append(p.received, edgeProxied{r.Method, target, r.Header.Get("X-Environment-Key")})
		p.mu.Unlock()
		if r.Method == http.MethodConnect {
			p.tunnel(w, r)
			return
		}
		dest, ok := p.targets[r.URL.Host]
		if !r.URL.IsAbs() || !ok {
			http.Error(w, "this proxy only reaches upstream.test", http.StatusBadGateway)
			return
		}
		out, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+dest+r.URL.RequestURI(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		out.Header = r.Header.Clone()
		resp, err := forward.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

func (p *edgeForwardProxy) tunnel(w http.ResponseWriter, r *http.Request) {
	dest, ok := p.targets[r.Host]
	if !ok {
		http.Error(w, "this proxy only reaches upstream.test", http.StatusBadGateway)
		return
	}
	upstream, err := net.DialTimeout("tcp", dest, 5*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer upstream.Close()
	client, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer client.Close()
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(upstream, buf); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, upstream); done <- struct{}{} }()
	<-done
}

func (p *edgeForwardProxy) requests() []edgeProxied {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]edgeProxied(nil), p.received...)
}

// TestEgressProxy runs the binary with HTTPS_PROXY or HTTP_PROXY set and an
// upstream only the proxy can reach: the document arrives through the proxy,
// by a CONNECT tunnel for HTTPS (the proxy never sees the key) and by an
// absolute-form request for HTTP.
func TestEgressProxy(t *testing.T) {
	bin := buildEdgeProxy(t)
	ca := newTLSCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(demoDocumentPath)
	if err != nil {
		t.Fatal(err)
	}
	serveDoc := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Environment-Key") != demoServerKey || r.URL.Path != "/api/v1/environment-document/" {
			http.Error(w, `{"detail":"not found"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	})

	tests := []struct {
		name       string
		tls        bool
		proxyVar   string
		wantMethod string
		wantKey    string // the key the proxy may see
	}{
		{"HTTPS_PROXY, CONNECT", true, "HTTPS_PROXY", http.MethodConnect, ""},
		{"HTTP_PROXY, absolute-form", false, "HTTP_PROXY", http.MethodGet, demoServerKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upstream := httptest.NewUnstartedServer(serveDoc)
			scheme := "http"
			if tt.tls {
				scheme = "https"
				issued := ca.issue(t, "upstream", "upstream.test")
				pair, err := tls.X509KeyPair(issued.cert, issued.key)
				if err != nil {
					t.Fatal(err)
				}
				upstream.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
				upstream.StartTLS()
			} else {
				upstream.Start()
			}
			t.Cleanup(upstream.Close)
			_, port, err := net.SplitHostPort(upstream.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			name := "upstream.test:" + port
			proxy := newEdgeForwardProxy(t, map[string]string{name: upstream.Listener.Addr().String()})

			edgePort := freePort(t)
			cfgPath := e2eWriteFile(t, t.TempDir(), "config.json", map[string]any{
				"environment_key_pairs": []map[string]string{{"server_side_key": demoServerKey, "client_side_key": demoClientKey}},
				"api_url":               scheme + "://" + name + "/api/v1",
				"server":                map[string]any{"host": "127.0.0.1", "port": edgePort},
				"logging":               map[string]any{"log_format": "json"},
			})
			env := []string{"CONFIG_PATH=" + cfgPath, tt.proxyVar + "=" + proxy.url, "SSL_CERT_FILE=" + caFile}
			startProcess(t, bin, nil, env, nil)
			client := &http.Client{Timeout: 5 * time.Second}
			t.Cleanup(client.CloseIdleConnections)
			base := "http://127.0.0.1:" + strconv.Itoa(edgePort)
			waitStatus(t, client, base+"/proxy/health/readiness", http.StatusOK, 15*time.Second)
			if resp, body := httpDo(t, client, "GET", base+"/api/v1/flags/", demoClientKey, ""); resp.StatusCode != http.StatusOK {
				t.Errorf("GET /api/v1/flags/ = %d %.200s; want 200, the document having come through the proxy", resp.StatusCode, body)
			}

			reqs := proxy.requests()
			if len(reqs) == 0 {
				t.Fatal("the proxy received nothing; want the polls")
			}
			wantTarget := name
			if !tt.tls {
				wantTarget = "http://" + name + "/api/v1/environment-document/"
			}
			for _, r := range reqs {
				if r.method != tt.wantMethod || r.target != wantTarget {
					t.Errorf("the proxy received %s %s; want %s %s", r.method, r.target, tt.wantMethod, wantTarget)
				}
				if r.key != tt.wantKey {
					t.Errorf("the proxy saw X-Environment-Key %q; want %q", r.key, tt.wantKey)
				}
			}
		})
	}
}

// TestEgressProxyFromEnvironment checks the poll client's choice of proxy
// for each kind of upstream URL, NO_PROXY included, without sending
// anything. Go reads the proxy variables once per process, so the checks run
// in a child process started with them.
func TestEgressProxyFromEnvironment(t *testing.T) {
	const childVar = "EDGE_PROXY_FROM_ENVIRONMENT_CHILD"
	if os.Getenv(childVar) == "1" {
		transport, ok := newPollClient().Transport.(*http.Transport)
		if !ok {
			t.Fatalf("newPollClient().Transport = %T; want an *http.Transport", newPollClient().Transport)
		}
		for _, tt := range []struct{ url, want string }{
			{"https://edge.api.flagsmith.com/api/v1/environment-document/", "http://proxy.test:3128"},
			{"http://flagsmith.example.com/api/v1/environment-document/", "http://plain-proxy.test:3128"},
			{"https://flagsmith.internal.test/api/v1/environment-document/", ""}, // NO_PROXY suffix
			{"https://self-hosted.test/api/v1/environment-document/", ""},        // NO_PROXY host
			{"https://127.0.0.1:8000/api/v1/environment-document/", ""},          // loopback, always direct
			{"https://localhost/api/v1/environment-document/", ""},
		} {
			req, err := http.NewRequest("GET", tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			proxy, err := transport.Proxy(req)
			got := ""
			if proxy != nil {
				got = proxy.String()
			}
			if err != nil || got != tt.want {
				t.Errorf("proxy for %s = %q, %v; want %q", tt.url, got, err, tt.want)
			}
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEgressProxyFromEnvironment$", "-test.count=1", "-test.v")
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(name) {
		case "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "REQUEST_METHOD":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, childVar+"=1",
		"HTTPS_PROXY=http://proxy.test:3128", "HTTP_PROXY=http://plain-proxy.test:3128",
		"NO_PROXY=.internal.test,self-hosted.test")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestEgressProxyFromEnvironment") {
		t.Errorf("the child process with the proxy variables set: %v\n%s", err, out)
	}
}
