package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestHandlersCORS(t *testing.T) {
	wildcard := newAPITestServer(t).handler()
	listed := newAPITestServer(t, func(c *Config) {
		c.AllowOrigins = []string{"https://app.example.com", "https://admin.example.com"}
	}).handler()
	tests := []struct {
		name       string
		h          http.Handler
		method     string
		path       string
		headers    map[string]string
		wantCode   int
		wantOrigin string // Access-Control-Allow-Origin; empty for none
		preflight  bool
	}{
		{"wildcard GET", wildcard, "GET", "/api/v1/flags/",
			map[string]string{"Origin": "https://any.example.org", "X-Environment-Key": apiClientKey}, 200, "*", false},
		{"wildcard POST identities", wildcard, "POST", "/api/v1/identities",
			map[string]string{"Origin": "https://any.example.org", "X-Environment-Key": apiClientKey}, 200, "*", false},
		{"wildcard on an error", wildcard, "GET", "/api/v1/flags/",
			map[string]string{"Origin": "https://any.example.org"}, 401, "*", false},
		{"listed origin echoed", listed, "GET", "/api/v1/flags/",
			map[string]string{"Origin": "https://admin.example.com", "X-Environment-Key": apiClientKey}, 200, "https://admin.example.com", false},
		{"origin not listed", listed, "GET", "/api/v1/flags/",
			map[string]string{"Origin": "https://evil.example.com", "X-Environment-Key": apiClientKey}, 200, "", false},
		{"origin differing only in scheme", listed, "GET", "/api/v1/flags/",
			map[string]string{"Origin": "http://app.example.com", "X-Environment-Key": apiClientKey}, 200, "", false},
		{"wildcard preflight", wildcard, "OPTIONS", "/api/v1/identities/",
			map[string]string{"Origin": "https://any.example.org", "Access-Control-Request-Method": "POST",
				"Access-Control-Request-Headers": "x-environment-key, content-type, x-custom"}, 200, "*", true},
		{"wildcard preflight no slash", wildcard, "OPTIONS", "/api/v1/flags",
			map[string]string{"Origin": "https://any.example.org", "Access-Control-Request-Method": "GET",
				"Access-Control-Request-Headers": "X-Environment-Key"}, 200, "*", true},
		{"listed preflight", listed, "OPTIONS", "/api/v1/flags/",
			map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET",
				"Access-Control-Request-Headers": "X-Environment-Key"}, 200, "https://app.example.com", true},
		{"preflight from an origin not listed", listed, "OPTIONS", "/api/v1/flags/",
			map[string]string{"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET",
				"Access-Control-Request-Headers": "X-Environment-Key"}, 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := ""
			if tt.method == "POST" {
				body = `{"identifier":"cors"}`
			}
			rec := callHandler(t, tt.h, tt.method, tt.path, tt.headers, body)
			if tt.wantCode != 0 && rec.Code != tt.wantCode {
				t.Errorf("%s %s = %d %s; want %d", tt.method, tt.path, rec.Code, rec.Body, tt.wantCode)
			}
			if rec.Code >= 500 {
				t.Errorf("%s %s = %d; want no 5xx", tt.method, tt.path, rec.Code)
			}
			got, present := rec.Header()["Access-Control-Allow-Origin"]
			switch {
			case tt.wantOrigin == "" && present:
				t.Errorf("Access-Control-Allow-Origin = %q; want none", got)
			case tt.wantOrigin != "" && rec.Header().Get("Access-Control-Allow-Origin") != tt.wantOrigin:
				t.Errorf("Access-Control-Allow-Origin = %q; want %q", got, tt.wantOrigin)
			}
			if tt.wantOrigin != "" {
				expose := strings.ToLower(rec.Header().Get("Access-Control-Expose-Headers"))
				if !strings.Contains(expose, strings.ToLower(updatedAtHeader)) {
					t.Errorf("Access-Control-Expose-Headers = %q; want it to name %s", expose, updatedAtHeader)
				}
			}
			if !tt.preflight {
				return
			}
			methods := rec.Header().Get("Access-Control-Allow-Methods")
			if !strings.Contains(methods, tt.headers["Access-Control-Request-Method"]) {
				t.Errorf("Access-Control-Allow-Methods = %q; want it to include %s", methods, tt.headers["Access-Control-Request-Method"])
			}
			allowHeaders := strings.ToLower(rec.Header().Get("Access-Control-Allow-Headers"))
			for _, want := range strings.Split(tt.headers["Access-Control-Request-Headers"], ",") {
				want = strings.ToLower(strings.TrimSpace(want))
				if allowHeaders != "*" && !strings.Contains(allowHeaders, want) {
					t.Errorf("Access-Control-Allow-Headers = %q; want it to allow %s", allowHeaders, want)
				}
			}
		})
	}
}

// TestHandlersHeaderLimit serves through a real http.Server with the
// configured MaxHeaderBytes (as serve sets it): a 1 MiB header is refused by
// net/http before any handler runs, so its body is net/http's, not JSON.
func TestHandlersHeaderLimit(t *testing.T) {
	s := newAPITestServer(t)
	ts := httptest.NewUnstartedServer(s.handler())
	ts.Config.MaxHeaderBytes = s.config().Server.hardHeaderBytes()
	ts.Start()
	t.Cleanup(ts.Close)
	client := ts.Client()
	client.Timeout = 10 * time.Second
	t.Cleanup(client.CloseIdleConnections)

	for _, tt := range []struct {
		name     string
		key      string
		wantCode int
	}{
		{"1 MiB key", strings.Repeat("K", 1<<20), http.StatusRequestHeaderFieldsTooLarge},
		{"8 KiB key", strings.Repeat("K", 8<<10), http.StatusUnauthorized},
		{"known key", apiClientKey, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest("GET", ts.URL+"/api/v1/flags/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Environment-Key", tt.key)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("GET /api/v1/flags/: %v", err)
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Errorf("GET /api/v1/flags/ with a %d-byte key = %d; want %d", len(tt.key), resp.StatusCode, tt.wantCode)
			}
			if len(body) > 1000 {
				t.Errorf("response body is %d bytes; want a short answer that does not echo the key", len(body))
			}
		})
	}
}

// TestAccessLogProxyHeaders: the access log is one structured line per
// request, and X-Forwarded-For/-Proto are trusted only when configured.
func TestAccessLogProxyHeaders(t *testing.T) {
	for _, trust := range []bool{true, false} {
		t.Run(fmt.Sprintf("proxy_headers=%t", trust), func(t *testing.T) {
			s := newTestServer(t, func(c *Config) {
				c.Logging.EnableAccessLog = true
				c.Server.ProxyHeaders = trust
			})
			req := httptest.NewRequest(http.MethodGet, "/proxy/health/liveness", nil)
			req.RemoteAddr = "192.0.2.1:5555"
			req.Header.Set("X-Forwarded-For", "203.0.113.7, 10.0.0.1")
			req.Header.Set("X-Forwarded-Proto", "https")
			s.handler().ServeHTTP(httptest.NewRecorder(), req)

			recs := s.logs.records(t)
			if len(recs) != 1 {
				t.Fatalf("access log %q is not one JSON line", s.logs)
			}
			rec := recs[0]
			wantClient, wantScheme := "192.0.2.1:5555", "http"
			if trust {
				wantClient, wantScheme = "203.0.113.7", "https"
			}
			if rec["msg"] != "access" || rec["client"] != wantClient || rec["scheme"] != wantScheme ||
				rec["path"] != "/proxy/health/liveness" || rec["status"] != float64(200) {
				t.Errorf("access log = %v; want msg access, client %s, scheme %s, path and status 200", rec, wantClient, wantScheme)
			}
		})
	}
}

// TestDocumentedEndpointsAreRouted ties the endpoint lists of main.go's
// package comment and the README's Endpoints table to routes(): every
// documented method and path reaches a handler of its own.
func TestDocumentedEndpointsAreRouted(t *testing.T) {
	s := newTestServer(t)
	endpoint := regexp.MustCompile("^(?://\t|\\| `)(GET|POST) +(/[^ `?\\[]*)")
	checked := 0
	for _, file := range []string{"main.go", "README.md"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			m := endpoint.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			method, path := m[1], strings.NewReplacer("{key}", "k", "{client_key}", "k").Replace(m[2])
			probe := httptest.NewRequest(method, path, nil)
			if _, pattern := s.mux.Handler(probe); pattern == "" || pattern == "/" {
				t.Errorf("%s documents %s %s, which no route serves", file, method, m[2])
			}
			checked++
		}
	}
	if checked < 20 {
		t.Errorf("found %d documented endpoints; the pattern no longer reads the lists", checked)
	}
}

// TestOptionsWithoutPreflight: OPTIONS is listed in Allow, so a plain
// OPTIONS (no CORS preflight headers) is answered 204 with Allow, not
// refused with 405; a path no method takes stays 404.
func TestOptionsWithoutPreflight(t *testing.T) {
	h := newTestServer(t).handler()
	tests := []struct {
		path      string
		code      int
		wantAllow string
	}{
		{"/api/v1/flags/", http.StatusNoContent, "GET, HEAD, OPTIONS"},
		{"/api/v1/identities", http.StatusNoContent, "GET, POST, HEAD, OPTIONS"},
		{"/ofrep/v1/evaluate/flags", http.StatusNoContent, "POST, OPTIONS"},
		{"/ofrep/v1/evaluate/flags/banner", http.StatusNoContent, "POST, OPTIONS"},
		{"/no/such/path", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		rec := callHandler(t, h, http.MethodOptions, tt.path, nil, "")
		if rec.Code != tt.code || rec.Header().Get("Allow") != tt.wantAllow {
			t.Errorf("OPTIONS %s = %d, Allow %q; want %d, Allow %q", tt.path, rec.Code, rec.Header().Get("Allow"), tt.code, tt.wantAllow)
		}
	}
}
