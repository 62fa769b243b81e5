package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// apiGunzip checks that a response is gzipped and returns it decompressed.
func apiGunzip(t testing.TB, rec *httptest.ResponseRecorder) []byte {
	t.Helper()
	if ce := rec.Header().Get("Content-Encoding"); ce != "gzip" {
		t.Fatalf("Content-Encoding = %q; want gzip", ce)
	}
	zr, err := gzip.NewReader(bytes.NewReader(rec.Body.Bytes()))
	if err != nil {
		t.Fatalf("gzip.NewReader: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return out
}

func TestHandlersGzip(t *testing.T) {
	h := newAPITestServer(t).handler()
	tests := []struct {
		name, method, path, key, body string
		acceptEncoding                string
		wantGzip                      bool
	}{
		{"big flags", "GET", "/api/v1/flags/", bigClientKey, "", "gzip", true},
		{"big flags, gzip among others", "GET", "/api/v1/flags/", bigClientKey, "", "deflate, gzip, br", true},
		{"big flags, gzip upper case", "GET", "/api/v1/flags/", bigClientKey, "", "GZIP", true},
		{"big flags, gzip q=1", "GET", "/api/v1/flags/", bigClientKey, "", "gzip;q=1.0", true},
		// q=0.8 is a preference, not a refusal (RFC 9110 §12.4.2).
		{"big flags, gzip q=0.8", "GET", "/api/v1/flags/", bigClientKey, "", "br;q=1.0, gzip;q=0.8, *;q=0.1", true},
		{"big feature, gzip q=0.5", "GET", "/api/v1/flags/?feature=long_text", bigClientKey, "", "gzip; q=0.5", true},
		{"big flags, gzip refused", "GET", "/api/v1/flags/", bigClientKey, "", "gzip;q=0", false},
		{"big flags, gzip refused q=0.000", "GET", "/api/v1/flags/", bigClientKey, "", "gzip;q=0.000", false},
		{"big flags, another coding", "GET", "/api/v1/flags/", bigClientKey, "", "br", false},
		{"big flags, no Accept-Encoding", "GET", "/api/v1/flags/", bigClientKey, "", "", false},
		{"big feature", "GET", "/api/v1/flags/?feature=long_text", bigClientKey, "", "gzip", true},
		{"big identity post", "POST", "/api/v1/identities/", bigClientKey, `{"identifier":"z"}`, "gzip", true},
		{"big identity get", "GET", "/api/v1/identities/?identifier=z", bigClientKey, "", "gzip", true},
		{"big identity, no Accept-Encoding", "POST", "/api/v1/identities/", bigClientKey, `{"identifier":"z"}`, "", false},
		{"small flags", "GET", "/api/v1/flags/", apiClientKey, "", "gzip", false},
		{"small feature", "GET", "/api/v1/flags/?feature=banner", apiClientKey, "", "gzip", false},
		{"small identity", "POST", "/api/v1/identities/", apiClientKey, `{"identifier":"z"}`, "gzip", false},
		{"small error", "GET", "/api/v1/flags/?feature=nope", apiClientKey, "", "gzip", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plain := callHandler(t, h, tt.method, tt.path, withKey(tt.key), tt.body)
			rec := callHandler(t, h, tt.method, tt.path, map[string]string{
				"X-Environment-Key": tt.key, "Accept-Encoding": tt.acceptEncoding}, tt.body)
			if plain.Header().Get("Content-Encoding") != "" {
				t.Fatalf("without Accept-Encoding: Content-Encoding = %q; want none", plain.Header().Get("Content-Encoding"))
			}
			if !tt.wantGzip {
				if ce := rec.Header().Get("Content-Encoding"); ce != "" {
					t.Errorf("Content-Encoding = %q; want none", ce)
				}
				if !bytes.Equal(rec.Body.Bytes(), plain.Body.Bytes()) {
					t.Errorf("body differs from the plain response")
				}
				return
			}
			if plain.Body.Len() <= gzipMinBytes {
				t.Fatalf("plain body is %d bytes; the case needs over %d", plain.Body.Len(), gzipMinBytes)
			}
			if rec.Code != http.StatusOK {
				t.Fatalf("%s %s = %d; want 200", tt.method, tt.path, rec.Code)
			}
			if got := apiGunzip(t, rec); !bytes.Equal(got, plain.Body.Bytes()) {
				t.Errorf("gunzipped body differs from the plain body:\n got %.200q\nwant %.200q", got, plain.Body.Bytes())
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q; want application/json", ct)
			}
			if v := rec.Header().Values("Vary"); !strings.Contains(strings.Join(v, ","), "Accept-Encoding") {
				t.Errorf("Vary = %q; want Accept-Encoding", v)
			}
		})
	}
}

func TestHandlersETag(t *testing.T) {
	h := newAPITestServer(t).handler()
	for _, path := range []string{"/api/v1/flags/", "/api/v1/flags"} {
		t.Run(path, func(t *testing.T) {
			first := callHandler(t, h, "GET", path, withKey(apiClientKey), "")
			etag := first.Header().Get("ETag")
			if first.Code != http.StatusOK || etag == "" {
				t.Fatalf("GET %s = %d, ETag %q; want 200 with an ETag", path, first.Code, etag)
			}
			for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
				rec := callHandler(t, h, "GET", path, map[string]string{"X-Environment-Key": apiClientKey, "If-None-Match": inm}, "")
				if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
					t.Errorf("GET %s If-None-Match %s = %d %q; want 304 with no body", path, inm, rec.Code, rec.Body)
				}
				if got := rec.Header().Get("ETag"); got != etag {
					t.Errorf("GET %s If-None-Match %s: ETag = %q; want %q", path, inm, got, etag)
				}
			}
			rec := callHandler(t, h, "GET", path, map[string]string{"X-Environment-Key": apiClientKey, "If-None-Match": `"stale"`}, "")
			if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), first.Body.Bytes()) {
				t.Errorf("GET %s with a stale ETag = %d; want 200 and the full body", path, rec.Code)
			}
			// A server key sees other flags, so its ETag must differ and the
			// client's ETag must not give it a 304.
			server := callHandler(t, h, "GET", path, map[string]string{"X-Environment-Key": apiServerKey, "If-None-Match": etag}, "")
			if server.Code != http.StatusOK || server.Header().Get("ETag") == etag {
				t.Errorf("GET %s with a server key and the client's ETag = %d, ETag %q; want 200 and another ETag",
					path, server.Code, server.Header().Get("ETag"))
			}
		})
	}
}
