package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestHandlersErrors(t *testing.T) {
	s := newAPITestServer(t)
	h := s.handler()
	sdkPaths := []string{
		"/api/v1/flags/", "/api/v1/flags",
		"/api/v1/identities/", "/api/v1/identities",
		"/api/v1/environment-document/", "/api/v1/environment-document",
	}

	t.Run("missing key", func(t *testing.T) {
		for _, path := range sdkPaths {
			method := "GET"
			if strings.Contains(path, "identities") {
				method = "POST"
			}
			rec := callHandler(t, h, method, path, nil, `{"identifier":"a"}`)
			apiError(t, rec, http.StatusUnauthorized, "unauthorized")
		}
	})

	t.Run("unknown key", func(t *testing.T) {
		key := "UnknownKeyThatMustNotBeEchoed0123456789"
		for _, path := range sdkPaths {
			method := "GET"
			if strings.Contains(path, "identities") {
				method = "POST"
			}
			rec := callHandler(t, h, method, path, withKey(key), `{"identifier":"a"}`)
			msg := apiError(t, rec, http.StatusUnauthorized, "unauthorized")
			if strings.Contains(rec.Body.String(), key) || strings.Contains(rec.Body.String(), key[:12]) {
				t.Errorf("%s %s: 401 body %q echoes the key; want at most a short prefix", method, path, rec.Body)
			}
			if !strings.HasPrefix(msg, "unknown key") {
				t.Errorf("%s %s: message = %q; want it to start with \"unknown key\"", method, path, msg)
			}
		}
	})

	t.Run("server key of another format", func(t *testing.T) {
		// "ser." plus an unknown secret is still unknown, never a 500.
		rec := callHandler(t, h, "GET", "/api/v1/flags/", withKey("ser.not-configured-secret"), "")
		apiError(t, rec, http.StatusUnauthorized, "unauthorized")
		if strings.Contains(rec.Body.String(), "not-configured") {
			t.Errorf("401 body %q echoes the server key", rec.Body)
		}
	})

	t.Run("no document yet", func(t *testing.T) {
		for _, key := range []string{pendingClientKey, pendingServerKey} {
			for _, req := range []struct{ method, path, body string }{
				{"GET", "/api/v1/flags/", ""},
				{"GET", "/api/v1/flags?feature=banner", ""},
				{"POST", "/api/v1/identities/", `{"identifier":"a"}`},
				{"GET", "/api/v1/identities/?identifier=a", ""},
				{"GET", "/api/v1/environment-document/", ""},
			} {
				rec := callHandler(t, h, req.method, req.path, withKey(key), req.body)
				if msg := apiError(t, rec, http.StatusServiceUnavailable, ""); msg == "" {
					t.Errorf("%s %s: 503 without a reason", req.method, req.path)
				}
			}
		}
	})

	t.Run("wrong method", func(t *testing.T) {
		for _, path := range append(sdkPaths, "/proxy/health/", "/proxy/health/liveness", "/metrics") {
			for _, method := range []string{"DELETE", "PUT", "PATCH"} {
				rec := callHandler(t, h, method, path, withKey(apiClientKey), `{"identifier":"a"}`)
				apiError(t, rec, http.StatusMethodNotAllowed, "method_not_allowed")
				allow := rec.Header().Get("Allow")
				want := "GET"
				if strings.Contains(path, "identities") {
					want = "POST"
				}
				if !strings.Contains(allow, want) || strings.Contains(allow, method) {
					t.Errorf("%s %s: Allow = %q; want it to include %s and not %s", method, path, allow, want, method)
				}
			}
		}
		for _, path := range []string{"/api/v1/flags/", "/api/v1/environment-document"} {
			rec := callHandler(t, h, "POST", path, withKey(apiClientKey), `{}`)
			apiError(t, rec, http.StatusMethodNotAllowed, "method_not_allowed")
			if allow := rec.Header().Get("Allow"); !strings.Contains(allow, "GET") || strings.Contains(allow, "POST") {
				t.Errorf("POST %s: Allow = %q; want GET and not POST", path, allow)
			}
		}
	})

	t.Run("unknown path", func(t *testing.T) {
		for _, path := range []string{"/", "/api/v1/", "/api/v1/nope", "/api/v1/flags/extra", "/api/v2/flags/",
			"/api/v1/identities/x/y", "/API/V1/FLAGS/", "/proxy/health/other"} {
			rec := callHandler(t, h, "GET", path, withKey(apiClientKey), "")
			apiError(t, rec, http.StatusNotFound, "not_found")
		}
	})

	t.Run("unclean path", func(t *testing.T) {
		// net/http's mux redirects a path with "//" or "/./" to its clean
		// form (307 keeps a POST's method and body), which serves a base URL
		// configured with a trailing slash.
		for _, path := range []string{"/api/v1//flags/", "/api/v1/./flags/"} {
			rec := callHandler(t, h, "GET", path, withKey(apiClientKey), "")
			if rec.Code != http.StatusTemporaryRedirect && rec.Code != http.StatusMovedPermanently {
				t.Errorf("GET %s = %d; want a redirect", path, rec.Code)
			}
			if got := rec.Header().Get("Location"); got != "/api/v1/flags/" {
				t.Errorf("GET %s: Location = %q; want /api/v1/flags/", path, got)
			}
		}
	})

	t.Run("body over the default limit", func(t *testing.T) {
		if s.config().Limits.MaxBodyBytes != 1<<20 {
			t.Fatalf("default limits.max_body_bytes = %d; want 1 MiB", s.config().Limits.MaxBodyBytes)
		}
		exact := apiPadBody(`{"identifier":"limit"}`, 1<<20)
		rec := callHandler(t, h, "POST", "/api/v1/identities/", withKey(apiClientKey), exact)
		if rec.Code != http.StatusOK {
			t.Errorf("POST a body of exactly 1 MiB = %d %.200s; want 200", rec.Code, rec.Body)
		}
		over := apiPadBody(`{"identifier":"limit"}`, 1<<20+1)
		rec = callHandler(t, h, "POST", "/api/v1/identities/", withKey(apiClientKey), over)
		apiError(t, rec, http.StatusRequestEntityTooLarge, "")
	})

	t.Run("body over a configured limit", func(t *testing.T) {
		small := newAPITestServer(t, func(c *Config) { c.Limits.MaxBodyBytes = 1024 }).handler()
		rec := callHandler(t, small, "POST", "/api/v1/identities/", withKey(apiClientKey), apiPadBody(`{"identifier":"a"}`, 1024))
		if rec.Code != http.StatusOK {
			t.Errorf("POST a body of exactly the limit = %d %s; want 200", rec.Code, rec.Body)
		}
		rec = callHandler(t, small, "POST", "/api/v1/identities/", withKey(apiClientKey), apiPadBody(`{"identifier":"a"}`, 1025))
		apiError(t, rec, http.StatusRequestEntityTooLarge, "")
	})
}

// apiPadBody pads a JSON body with trailing whitespace to exactly n bytes.
func apiPadBody(body string, n int) string {
	return body + strings.Repeat(" ", n-len(body))
}

// apiTraits is an identities body with n distinct traits.
func apiTraits(n int) string {
	var b strings.Builder
	b.WriteString(`{"identifier":"many","traits":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"trait_key":"k%d","trait_value":%d}`, i, i)
	}
	b.WriteString("]}")
	return b.String()
}

func apiTraitValue(v string) string {
	return `{"identifier":"a","traits":[{"trait_key":"k","trait_value":` + v + `}]}`
}

func apiTraitKey(k string) string {
	return `{"identifier":"a","traits":[{"trait_key":` + k + `,"trait_value":1}]}`
}

// TestHandlersBadInput sends malformed, mistyped and oversized input to every
// endpoint. Each must get a JSON error naming what is wrong, and never a 500.
func TestHandlersBadInput(t *testing.T) {
	h := newAPITestServer(t).handler()
	const ids = "/api/v1/identities/"
	long := func(r string, n int) string { return strings.Repeat(r, n) }
	tests := []struct {
		name     string
		method   string
		path     string
		headers  map[string]string // X-Environment-Key defaults to the client key
		body     string
		wantCode int
		wantMsg  string // a substring of the message; empty for a 200
	}{
		// The body as a whole.
		{"malformed JSON", "POST", ids, nil, `{"identifier": }`, 400, "body"},
		{"single quotes", "POST", ids, nil, `{'identifier': 'a'}`, 400, "body"},
		{"truncated JSON", "POST", ids, nil, `{"identifier": "a"`, 400, "body"},
		{"truncated in a string", "POST", ids, nil, `{"identifier": "a`, 400, "body"},
		{"truncated in traits", "POST", ids, nil, `{"identifier":"a","traits":[{"trait_key":"k"`, 400, "body"},
		{"trailing garbage", "POST", ids, nil, `{"identifier":"a"} x`, 400, "body"},
		{"trailing second object", "POST", ids, nil, `{"identifier":"a"}{"identifier":"b"}`, 400, "body"},
		{"trailing comma", "POST", ids, nil, `{"identifier":"a",}`, 400, "body"},
		{"empty body", "POST", ids, nil, ``, 400, "body"},
		{"whitespace body", "POST", ids, nil, " \n\t", 400, "body"},
		{"body is an array", "POST", ids, nil, `[{"identifier":"a"}]`, 400, "body"},
		{"body is a string", "POST", ids, nil, `"a"`, 400, "body"},
		{"body is a number", "POST", ids, nil, `42`, 400, "body"},
		{"body is true", "POST", ids, nil, `true`, 400, "body"},
		{"body is null", "POST", ids, nil, `null`, 400, "body"},
		{"deeply nested arrays", "POST", ids, nil, long("[", 100_000), 400, "body"},
		{"deeply nested traits", "POST", ids, nil, `{"identifier":"a","traits":` + long("[", 100_000), 400, "body"},
		{"deeply nested objects", "POST", ids, nil, `{"identifier":"a","x":` + long(`{"a":`, 100_000), 400, "body"},
		{"invalid UTF-8 in identifier", "POST", ids, nil, "{\"identifier\":\"a\xff\xfe\"}", 400, "UTF-8"},
		{"invalid UTF-8 in trait value", "POST", ids, nil, apiTraitValue("\"\xc3\x28\""), 400, "UTF-8"},
		{"huge body", "POST", ids, nil, apiPadBody(`{"identifier":"a"}`, 2<<20), 413, "bytes"},
		{"huge trait value", "POST", ids, nil, apiTraitValue(`"` + long("x", 2<<20) + `"`), 413, "bytes"},

		// identifier.
		{"identifier missing", "POST", ids, nil, `{"traits":[]}`, 400, "identifier"},
		{"empty object", "POST", ids, nil, `{}`, 400, "identifier"},
		{"identifier null", "POST", ids, nil, `{"identifier":null}`, 400, "identifier"},
		{"identifier empty", "POST", ids, nil, `{"identifier":""}`, 400, "identifier"},
		{"identifier number", "POST", ids, nil, `{"identifier":42}`, 400, "identifier"},
		{"identifier object", "POST", ids, nil, `{"identifier":{"id":"a"}}`, 400, "identifier"},
		{"identifier array", "POST", ids, nil, `{"identifier":["a"]}`, 400, "identifier"},
		{"identifier boolean", "POST", ids, nil, `{"identifier":true}`, 400, "identifier"},

		// traits.
		{"traits an object", "POST", ids, nil, `{"identifier":"a","traits":{"k":1}}`, 400, "traits"},
		{"traits a string", "POST", ids, nil, `{"identifier":"a","traits":"k=1"}`, 400, "traits"},
		{"traits a number", "POST", ids, nil, `{"identifier":"a","traits":1}`, 400, "traits"},
		{"traits true", "POST", ids, nil, `{"identifier":"a","traits":true}`, 400, "traits"},
		{"trait a string", "POST", ids, nil, `{"identifier":"a","traits":["k"]}`, 400, "traits[0]"},
		{"trait a number", "POST", ids, nil, `{"identifier":"a","traits":[1]}`, 400, "traits[0]"},
		{"trait null", "POST", ids, nil, `{"identifier":"a","traits":[null]}`, 400, "traits[0]"},
		{"trait an array", "POST", ids, nil, `{"identifier":"a","traits":[["k",1]]}`, 400, "traits[0]"},
		{"second trait bad", "POST", ids, nil, `{"identifier":"a","traits":[{"trait_key":"k","trait_value":1},"x"]}`, 400, "traits[1]"},
		{"trait_key missing", "POST", ids, nil, `{"identifier":"a","traits":[{"trait_value":1}]}`, 400, "traits[0].trait_key"},
		{"trait_key number", "POST", ids, nil, apiTraitKey(`7`), 400, "traits[0].trait_key"},
		{"trait_key null", "POST", ids, nil, apiTraitKey(`null`), 400, "traits[0].trait_key"},
		{"trait_key object", "POST", ids, nil, apiTraitKey(`{"k":1}`), 400, "traits[0].trait_key"},
		{"trait_key array", "POST", ids, nil, apiTraitKey(`["k"]`), 400, "traits[0].trait_key"},
		{"trait_key boolean", "POST", ids, nil, apiTraitKey(`false`), 400, "traits[0].trait_key"},
		{"trait_key 201 characters", "POST", ids, nil, apiTraitKey(`"` + long("k", 201) + `"`), 400, "traits[0].trait_key"},
		{"trait_key 201 multi-byte runes", "POST", ids, nil, apiTraitKey(`"` + long("ключ", 50) + "й" + `"`), 400, "traits[0].trait_key"},
		{"trait_key 200 characters", "POST", ids, nil, apiTraitKey(`"` + long("k", 200) + `"`), 200, ""},
		{"trait_key 200 multi-byte runes", "POST", ids, nil, apiTraitKey(`"` + long("ключ", 50) + `"`), 200, ""},
		{"trait_value object", "POST", ids, nil, apiTraitValue(`{"a":1}`), 400, "traits[0].trait_value"},
		{"trait_value array", "POST", ids, nil, apiTraitValue(`[1,2]`), 400, "traits[0].trait_value"},
		{"trait_value empty array", "POST", ids, nil, apiTraitValue(`[]`), 400, "traits[0].trait_value"},
		{"trait_value 2001 characters", "POST", ids, nil, apiTraitValue(`"` + long("v", 2001) + `"`), 400, "traits[0].trait_value"},
		{"trait_value 2001 two-byte runes", "POST", ids, nil, apiTraitValue(`"` + long("é", 2001) + `"`), 400, "traits[0].trait_value"},
		{"trait_value 2001 four-byte runes", "POST", ids, nil, apiTraitValue(`"` + long("😀", 2001) + `"`), 400, "traits[0].trait_value"},
		{"trait_value 2001 escaped runes", "POST", ids, nil, apiTraitValue(`"` + long(`\u00e9`, 2001) + `"`), 400, "traits[0].trait_value"},
		{"trait_value 2000 characters", "POST", ids, nil, apiTraitValue(`"` + long("v", 2000) + `"`), 200, ""},
		{"trait_value 2000 two-byte runes", "POST", ids, nil, apiTraitValue(`"` + long("é", 2000) + `"`), 200, ""},
		{"trait_value 2000 four-byte runes", "POST", ids, nil, apiTraitValue(`"` + long("😀", 2000) + `"`), 200, ""},
		{"trait_value 2000 escaped runes", "POST", ids, nil, apiTraitValue(`"` + long(`\u00e9`, 2000) + `"`), 200, ""},
		{"trait_value long number", "POST", ids, nil, apiTraitValue(long("9", 3000)), 200, ""},
		{"trait_value huge exponent", "POST", ids, nil, apiTraitValue(`1e400`), 200, ""},
		{"trait_value missing", "POST", ids, nil, `{"identifier":"a","traits":[{"trait_key":"k"}]}`, 200, ""},
		{"10000 traits", "POST", ids, nil, apiTraits(10_000), 400, "traits"},
		{"1000 traits", "POST", ids, nil, apiTraits(1000), 200, ""},
		{"1001 traits", "POST", ids, nil, apiTraits(1001), 400, "traits"},

		// transient.
		{"transient a string", "POST", ids, nil, `{"identifier":"a","transient":"yes"}`, 400, "transient"},
		{"transient a number", "POST", ids, nil, `{"identifier":"a","transient":1}`, 400, "transient"},
		{"transient an object", "POST", ids, nil, `{"identifier":"a","transient":{}}`, 400, "transient"},
		{"transient true", "POST", ids, nil, `{"identifier":"a","transient":true}`, 200, ""},
		{"transient null", "POST", ids, nil, `{"identifier":"a","transient":null}`, 200, ""},

		// GET /api/v1/identities/.
		{"get without identifier", "GET", ids, nil, "", 400, "identifier"},
		{"get without identifier, no slash", "GET", "/api/v1/identities", nil, "", 400, "identifier"},
		{"get with empty identifier", "GET", ids + "?identifier=", nil, "", 400, "identifier"},
		{"get with bare identifier", "GET", ids + "?identifier", nil, "", 400, "identifier"},
		{"get with another parameter", "GET", ids + "?id=a", nil, "", 400, "identifier"},
		{"get with bad escape", "GET", ids + "?identifier=%zz", nil, "", 400, "identifier"},

		// Keys and headers.
		{"very long key", "GET", "/api/v1/flags/", map[string]string{"X-Environment-Key": long("K", 8000)}, "", 401, "unknown key"},
		{"key of another case", "GET", "/api/v1/flags/", map[string]string{"X-Environment-Key": strings.ToLower(apiClientKey)}, "", 401, "unknown key"},
		{"headers over max_header_bytes", "GET", "/api/v1/flags/", map[string]string{"X-Padding": long("p", 20<<10)}, "", 431, "headers"},
		{"flags feature empty", "GET", "/api/v1/flags/?feature=", nil, "", 404, "feature '' not found"},

		// Methods and paths.
		{"DELETE flags", "DELETE", "/api/v1/flags/", nil, "", 405, "DELETE"},
		{"PUT identities", "PUT", "/api/v1/identities", nil, `{"identifier":"a"}`, 405, "PUT"},
		{"PATCH document", "PATCH", "/api/v1/environment-document/", nil, "", 405, "PATCH"},
		{"POST flags", "POST", "/api/v1/flags", nil, `{}`, 405, "POST"},
		{"unknown method", "BREW", "/api/v1/flags/", nil, "", 405, "BREW"},
		{"TRACE identities", "TRACE", "/api/v1/identities/", nil, "", 405, "TRACE"},
		{"unknown path", "GET", "/api/v1/flagz/", nil, "", 404, "no such endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			headers := map[string]string{"X-Environment-Key": apiClientKey}
			for k, v := range tt.headers {
				headers[k] = v
			}
			rec := callHandler(t, h, tt.method, tt.path, headers, tt.body)
			if rec.Code >= 500 {
				t.Fatalf("%s %s (%.80q) = %d %s; want no 5xx", tt.method, tt.path, tt.body, rec.Code, rec.Body)
			}
			if tt.wantMsg == "" {
				if rec.Code != tt.wantCode {
					t.Errorf("%s %s (%.80q) = %d %.300s; want %d", tt.method, tt.path, tt.body, rec.Code, rec.Body, tt.wantCode)
				}
				if !json.Valid(rec.Body.Bytes()) {
					t.Errorf("%s %s: body %.300q is not JSON", tt.method, tt.path, rec.Body)
				}
				return
			}
			msg := apiError(t, rec, tt.wantCode, "")
			if !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("%s %s (%.80q): message = %q; want it to contain %q", tt.method, tt.path, tt.body, msg, tt.wantMsg)
			}
			if len(msg) > 300 {
				t.Errorf("%s %s: message is %d bytes; want a short message", tt.method, tt.path, len(msg))
			}
		})
	}
}
