package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Keys of the OFREP test environments.
const (
	ofrepClientKey       = "OfrepEnvClientKey01"
	ofrepServerKey       = "ser.OfrepEnvServerKey01"
	ofrepHiddenClientKey = "OfrepHiddenClientKey02"
	ofrepHiddenServerKey = "ser.OfrepHiddenServerKey02"
	ofrepPendingKey      = "OfrepPendingClientKey03"
)

// ofrepDocument has one flag per row of the README's OFREP mapping: a default
// (banner), a segment override (banner for plan=premium, max_items for
// age >= 18), an identity override (banner for "vip"), a split that picks a
// keyed option (checkout, 100% variant_a), a split that lands on control
// (experiment, 0%), a disabled flag (dark_mode), a flag with a null value
// (kill_switch), a server-only feature (secret_algo), an object value
// (theme) and a disabled flag with a null value (maintenance).
const ofrepDocument = `{
  "api_key": "OfrepEnvClientKey01",
  "name": "OFREP",
  "updated_at": "2026-11-01T12:00:00.250000Z",
  "project": {
    "hide_disabled_flags": false,
    "server_key_only_feature_ids": [7],
    "segments": [
      {"id": 501, "name": "premium_users",
       "rules": [{"type": "ALL", "rules": [], "conditions": [
         {"operator": "EQUAL", "property_": "plan", "value": "premium"}]}],
       "feature_states": [
         {"feature": {"id": 1, "name": "banner"}, "enabled": true, "django_id": 9501,
          "feature_segment": {"priority": 1}, "feature_state_value": "gold"}]},
      {"id": 502, "name": "adults",
       "rules": [{"type": "ALL", "rules": [], "conditions": [
         {"operator": "GREATER_THAN_INCLUSIVE", "property_": "age", "value": "18"}]}],
       "feature_states": [
         {"feature": {"id": 2, "name": "max_items"}, "enabled": true, "django_id": 9502,
          "feature_segment": {"priority": 2}, "feature_state_value": 100}]}
    ]
  },
  "feature_states": [
    {"feature": {"id": 1, "name": "banner"}, "enabled": true, "django_id": 9101, "feature_state_value": "blue"},
    {"feature": {"id": 2, "name": "max_items"}, "enabled": true, "django_id": 9102, "feature_state_value": 42},
    {"feature": {"id": 3, "name": "ratio"}, "enabled": true, "django_id": 9103, "feature_state_value": 1.5},
    {"feature": {"id": 4, "name": "dark_mode"}, "enabled": false, "django_id": 9104, "feature_state_value": true},
    {"feature": {"id": 5, "name": "kill_switch"}, "enabled": true, "django_id": 9105, "feature_state_value": null},
    {"feature": {"id": 6, "name": "checkout", "type": "MULTIVARIATE"}, "enabled": true, "django_id": 9106,
     "feature_state_value": "control", "multivariate_feature_state_values": [
       {"id": 7001, "percentage_allocation": 100,
        "multivariate_feature_option": {"id": 71, "key": "variant_a", "value": "variant_a_value"}}]},
    {"feature": {"id": 7, "name": "secret_algo"}, "enabled": true, "django_id": 9107, "feature_state_value": "v2"},
    {"feature": {"id": 8, "name": "theme"}, "enabled": true, "django_id": 9108,
     "feature_state_value": {"colour": "red", "size": 3}},
    {"feature": {"id": 9, "name": "experiment", "type": "MULTIVARIATE"}, "enabled": true, "django_id": 9109,
     "feature_state_value": "baseline", "multivariate_feature_state_values": [
       {"id": 7002, "percentage_allocation": 0,
        "multivariate_feature_option": {"id": 72, "key": "never", "value": "never_value"}}]},
    {"feature": {"id": 10, "name": "maintenance"}, "enabled": false, "django_id": 9110, "feature_state_value": null}
  ],
  "identity_overrides": [
    {"identifier": "vip", "identity_features": [
      {"feature": {"id": 1, "name": "banner"}, "enabled": true,
       "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000009999", "feature_state_value": "platinum"}]}
  ]
}`

// ofrepUpdatedAt is ofrepDocument's updated_at as Unix seconds.
const ofrepUpdatedAt = "1793534400.25"

// ofrepHiddenDocument hides disabled flags from client keys.
const ofrepHiddenDocument = `{
  "api_key": "OfrepHiddenClientKey02",
  "name": "OFREP hidden",
  "updated_at": "2026-10-15T08:30:00Z",
  "project": {"hide_disabled_flags": true, "segments": []},
  "feature_states": [
    {"feature": {"id": 21, "name": "on"}, "enabled": true, "django_id": 9201, "feature_state_value": "yes"},
    {"feature": {"id": 22, "name": "off"}, "enabled": false, "django_id": 9202, "feature_state_value": "no"}
  ]
}`

// newOFREPTestServer serves the two OFREP documents, and a third
// environment whose document never arrives.
func newOFREPTestServer(t testing.TB, edits ...func(*Config)) *testServer {
	t.Helper()
	s := newTestServer(t, append([]func(*Config){withPairs(
		KeyPair{ServerSideKey: ofrepServerKey, ClientSideKey: ofrepClientKey},
		KeyPair{ServerSideKey: ofrepHiddenServerKey, ClientSideKey: ofrepHiddenClientKey},
		KeyPair{ServerSideKey: "ser.OfrepPendingServerKey03", ClientSideKey: ofrepPendingKey},
	)}, edits...)...)
	s.publishDoc(t, ofrepClientKey, []byte(ofrepDocument))
	s.publishDoc(t, ofrepHiddenClientKey, []byte(ofrepHiddenDocument))
	return s
}

// ofrepPost sends one POST through the whole handler stack.
func ofrepPost(t testing.TB, h http.Handler, path string, headers map[string]string, body string) *httptest.ResponseRecorder {
	t.Helper()
	return callHandler(t, h, http.MethodPost, path, headers, body)
}

// ofrepJSON decodes a body keeping number literals, so 1.5 and 100 are
// compared as sent.
func ofrepJSON(t testing.TB, body []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("response is not JSON: %v\n%s", err, body)
	}
	return v
}

// TestOFREPFlagMapping checks every row of the README's OFREP mapping on the
// single-flag endpoint.
func TestOFREPFlagMapping(t *testing.T) {
	h := newOFREPTestServer(t).handler()
	meta := func(enabled bool, id int, segment string) string {
		seg := ""
		if segment != "" {
			seg = fmt.Sprintf(`,"segment":%q`, segment)
		}
		return fmt.Sprintf(`{"enabled":%t,"featureId":%d%s,"updatedAt":%s}`, enabled, id, seg, ofrepUpdatedAt)
	}
	tests := []struct {
		name    string
		key     string
		flag    string
		context string
		want    string
	}{
		{"default string, no targeting key", ofrepClientKey, "banner", `{}`,
			`{"key":"banner","value":"blue","reason":"STATIC","metadata":` + meta(true, 1, "") + `}`},
		{"default for an identity no segment matches", ofrepClientKey, "banner", `{"targetingKey":"u1","plan":"free"}`,
			`{"key":"banner","value":"blue","reason":"STATIC","metadata":` + meta(true, 1, "") + `}`},
		{"segment override", ofrepClientKey, "banner", `{"targetingKey":"u1","plan":"premium"}`,
			`{"key":"banner","value":"gold","reason":"TARGETING_MATCH","metadata":` + meta(true, 1, "premium_users") + `}`},
		{"segment override on a numeric string trait, coerced as identity traits are", ofrepClientKey, "max_items", `{"targetingKey":"u1","age":"21"}`,
			`{"key":"max_items","value":100,"reason":"TARGETING_MATCH","metadata":` + meta(true, 2, "adults") + `}`},
		{"segment override on a number trait", ofrepClientKey, "max_items", `{"targetingKey":"u1","age":18}`,
			`{"key":"max_items","value":100,"reason":"TARGETING_MATCH","metadata":` + meta(true, 2, "adults") + `}`},
		{"no segment without a targeting key, whatever the traits", ofrepClientKey, "max_items", `{"age":30}`,
			`{"key":"max_items","value":42,"reason":"STATIC","metadata":` + meta(true, 2, "") + `}`},
		{"identity override beats the segment", ofrepClientKey, "banner", `{"targetingKey":"vip","plan":"premium"}`,
			`{"key":"banner","value":"platinum","reason":"TARGETING_MATCH","metadata":` + meta(true, 1, "identity_overrides") + `}`},
		{"split with variant", ofrepClientKey, "checkout", `{"targetingKey":"u1"}`,
			`{"key":"checkout","value":"variant_a_value","reason":"SPLIT","variant":"variant_a","metadata":` + meta(true, 6, "") + `}`},
		{"no split without a targeting key", ofrepClientKey, "checkout", `{}`,
			`{"key":"checkout","value":"control","reason":"STATIC","metadata":` + meta(true, 6, "") + `}`},
		{"split landing on the control value", ofrepClientKey, "experiment", `{"targetingKey":"u1"}`,
			`{"key":"experiment","value":"baseline","reason":"STATIC","variant":"control","metadata":` + meta(true, 9, "") + `}`},
		{"disabled: no value, the caller's default applies", ofrepClientKey, "dark_mode", `{"targetingKey":"u1"}`,
			`{"key":"dark_mode","reason":"DISABLED","metadata":` + meta(false, 4, "") + `}`},
		{"disabled on/off flag (null value): false", ofrepClientKey, "maintenance", `{"targetingKey":"u1"}`,
			`{"key":"maintenance","value":false,"reason":"DISABLED","metadata":` + meta(false, 10, "") + `}`},
		{"null value is the boolean enabled", ofrepClientKey, "kill_switch", `{}`,
			`{"key":"kill_switch","value":true,"reason":"STATIC","metadata":` + meta(true, 5, "") + `}`},
		{"float", ofrepClientKey, "ratio", `{}`,
			`{"key":"ratio","value":1.5,"reason":"STATIC","metadata":` + meta(true, 3, "") + `}`},
		{"object value", ofrepClientKey, "theme", `{"targetingKey":"u1"}`,
			`{"key":"theme","value":{"colour":"red","size":3},"reason":"STATIC","metadata":` + meta(true, 8, "") + `}`},
		{"server-only feature with a server key", ofrepServerKey, "secret_algo", `{}`,
			`{"key":"secret_algo","value":"v2","reason":"STATIC","metadata":` + meta(true, 7, "") + `}`},
		{"server-only feature with a client key", ofrepClientKey, "secret_algo", `{}`,
			`{"key":"secret_algo","errorCode":"FLAG_NOT_FOUND","errorDetails":"flag 'secret_algo' not found"}`},
		{"hidden disabled flag with a client key", ofrepHiddenClientKey, "off", `{}`,
			`{"key":"off","errorCode":"FLAG_NOT_FOUND","errorDetails":"flag 'off' not found"}`},
		{"hidden disabled flag with a server key", ofrepHiddenServerKey, "off", `{}`,
			`{"key":"off","reason":"DISABLED","metadata":{"enabled":false,"featureId":22,"updatedAt":1792053000.0}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := ofrepPost(t, h, "/ofrep/v1/evaluate/flags/"+tt.flag, withKey(tt.key), `{"context":`+tt.context+`}`)
			wantCode := http.StatusOK
			if strings.Contains(tt.want, "errorCode") {
				wantCode = http.StatusNotFound
			}
			if rec.Code != wantCode {
				t.Fatalf("status = %d; want %d\n%s", rec.Code, wantCode, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q; want application/json", ct)
			}
			if diff := cmp.Diff(ofrepJSON(t, []byte(tt.want)), ofrepJSON(t, rec.Body.Bytes())); diff != "" {
				t.Errorf("POST /ofrep/v1/evaluate/flags/%s %s (-want +got):\n%s", tt.flag, tt.context, diff)
			}
		})
	}
}

// ofrepBulkFlags is the flags of a bulk answer by key.
func ofrepBulkFlags(t testing.TB, body []byte) map[string]any {
	t.Helper()
	doc, ok := ofrepJSON(t, body).(map[string]any)
	if !ok {
		t.Fatalf("bulk answer is not an object: %s", body)
	}
	list, ok := doc["flags"].([]any)
	if !ok {
		t.Fatalf("bulk answer has no flags list: %s", body)
	}
	flags := map[string]any{}
	for _, f := range list {
		flags[f.(map[string]any)["key"].(string)] = f
	}
	return flags
}

// TestOFREPBulk checks that the bulk answer holds exactly the single-flag
// answers of every flag the key may see, in document order, with the
// eventStreams entry and the flag set's metadata.
func TestOFREPBulk(t *testing.T) {
	s := newOFREPTestServer(t)
	h := s.handler()
	for _, tt := range []struct {
		name, key, context string
		want               []string
	}{
		{"client key, environment", ofrepClientKey, `{}`,
			[]string{"banner", "max_items", "ratio", "dark_mode", "kill_switch", "checkout", "theme", "experiment", "maintenance"}},
		{"server key, identity", ofrepServerKey, `{"targetingKey":"vip","plan":"premium","age":40}`,
			[]string{"banner", "max_items", "ratio", "dark_mode", "kill_switch", "checkout", "secret_algo", "theme", "experiment", "maintenance"}},
		{"client key, hidden disabled", ofrepHiddenClientKey, `{"targetingKey":"u1"}`, []string{"on"}},
		{"server key, hidden disabled", ofrepHiddenServerKey, `{"targetingKey":"u1"}`, []string{"on", "off"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"context":` + tt.context + `}`
			rec := ofrepPost(t, h, "/ofrep/v1/evaluate/flags", withKey(tt.key), body)
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d; want 200\n%s", rec.Code, rec.Body)
			}
			var got struct {
				Flags []struct {
					Key string `json:"key"`
				} `json:"flags"`
				EventStreams []json.RawMessage `json:"eventStreams"`
				Metadata     json.RawMessage   `json:"metadata"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, f := range got.Flags {
				keys = append(keys, f.Key)
			}
			if diff := cmp.Diff(tt.want, keys); diff != "" {
				t.Errorf("flag keys (-want +got):\n%s", diff)
			}
			bulk := ofrepBulkFlags(t, rec.Body.Bytes())
			for _, key := range keys {
				single := ofrepPost(t, h, "/ofrep/v1/evaluate/flags/"+key, withKey(tt.key), body)
				if diff := cmp.Diff(ofrepJSON(t, single.Body.Bytes()), bulk[key]); diff != "" {
					t.Errorf("flag %s: bulk differs from the single-flag answer (-single +bulk):\n%s", key, diff)
				}
			}
			env := s.environments()[0]
			if tt.key == ofrepHiddenClientKey || tt.key == ofrepHiddenServerKey {
				env = s.environments()[1]
			}
			wantStream := fmt.Sprintf(`{"type":"sse","endpoint":{"requestUri":"/sse/environments/%s/stream?format=ofrep&since=%s"}}`,
				env.pair.ClientSideKey, env.snap.Load().updatedAtUnix)
			if len(got.EventStreams) != 1 || string(got.EventStreams[0]) != wantStream {
				t.Errorf("eventStreams = %s; want [%s]", got.EventStreams, wantStream)
			}
			if want := `{"updatedAt":` + env.snap.Load().updatedAtUnix + `}`; string(got.Metadata) != want {
				t.Errorf("metadata = %s; want %s", got.Metadata, want)
			}
		})
	}
}

// TestOFREPBulkNoStreams: with realtime streams off, no eventStreams send a
// provider to a stream that would answer 404; it keeps polling.
func TestOFREPBulkNoStreams(t *testing.T) {
	h := newOFREPTestServer(t, func(c *Config) { c.SSE.Enabled = false }).handler()
	rec := ofrepPost(t, h, "/ofrep/v1/evaluate/flags", withKey(ofrepClientKey), `{"context":{}}`)
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), "eventStreams") {
		t.Errorf("status %d, body %s; want 200 without eventStreams", rec.Code, rec.Body)
	}
}

// TestOFREPBulkETag checks the ETag is a hash of the body: it changes with
// the answer, not with the request, and If-None-Match gets 304.
func TestOFREPBulkETag(t *testing.T) {
	s := newOFREPTestServer(t)
	h := s.handler()
	post := func(context string, headers map[string]string) *httptest.ResponseRecorder {
		t.Helper()
		hdr := withKey(ofrepClientKey)
		for k, v := range headers {
			hdr[k] = v
		}
		return ofrepPost(t, h, "/ofrep/v1/evaluate/flags", hdr, `{"context":`+context+`}`)
	}
	first := post(`{"targetingKey":"u1","plan":"free"}`, nil)
	etag := first.Header().Get("ETag")
	if want := ofrepETag(first.Body.Bytes()); etag != want {
		t.Fatalf("ETag = %q; want the hash of the body %q", etag, want)
	}
	// Another identity with the same flags has the same body, so the same
	// ETag; a different answer has another.
	if got := post(`{"targetingKey":"u2","plan":"free","unread":"trait"}`, nil).Header().Get("ETag"); got != etag {
		t.Errorf("same flags: ETag = %q; want %q", got, etag)
	}
	if got := post(`{"targetingKey":"u1","plan":"premium"}`, nil).Header().Get("ETag"); got == etag {
		t.Errorf("different flags: ETag = %q, the same as before", got)
	}
	for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
		rec := post(`{"targetingKey":"u1","plan":"free"}`, map[string]string{"If-None-Match": inm})
		if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 || rec.Header().Get("ETag") != etag {
			t.Errorf("If-None-Match %s: status %d, ETag %q, %d body bytes; want 304, %q, none",
				inm, rec.Code, rec.Header().Get("ETag"), rec.Body.Len(), etag)
		}
	}
	if rec := post(`{"targetingKey":"u1","plan":"premium"}`, map[string]string{"If-None-Match": etag}); rec.Code != http.StatusOK {
		t.Errorf("changed flags with the old ETag: status %d; want 200", rec.Code)
	}

	// A new document changes every answer (its updatedAt is in the metadata).
	doc := strings.Replace(ofrepDocument, "2026-11-01T12:00:00.250000Z", "2026-11-02T12:00:00Z", 1)
	s.publishDoc(t, ofrepClientKey, []byte(doc))
	if rec := post(`{"targetingKey":"u1","plan":"free"}`, map[string]string{"If-None-Match": etag}); rec.Code != http.StatusOK {
		t.Errorf("new document with the old ETag: status %d; want 200", rec.Code)
	}
}

// TestOFREPKeyHeaders checks the three ways to send the key.
func TestOFREPKeyHeaders(t *testing.T) {
	h := newOFREPTestServer(t).handler()
	for _, tt := range []struct {
		name    string
		headers map[string]string
		want    int
	}{
		{"X-Environment-Key", map[string]string{"X-Environment-Key": ofrepClientKey}, http.StatusOK},
		{"Authorization Bearer", map[string]string{"Authorization": "Bearer " + ofrepClientKey}, http.StatusOK},
		{"Authorization bearer, any case", map[string]string{"Authorization": "bEaReR " + ofrepServerKey}, http.StatusOK},
		{"X-API-Key", map[string]string{"X-API-Key": ofrepClientKey}, http.StatusOK},
		{"none", nil, http.StatusUnauthorized},
		{"unknown X-API-Key", map[string]string{"X-API-Key": "NotAKeyOfOurs123456"}, http.StatusUnauthorized},
		{"unknown Bearer", map[string]string{"Authorization": "Bearer NotAKeyOfOurs123456"}, http.StatusUnauthorized},
		{"another scheme", map[string]string{"Authorization": "Basic " + ofrepClientKey}, http.StatusUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{"/ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags/banner"} {
				rec := ofrepPost(t, h, path, tt.headers, `{"context":{}}`)
				if rec.Code != tt.want {
					t.Errorf("POST %s: status %d; want %d\n%s", path, rec.Code, tt.want, rec.Body)
				}
				if tt.want == http.StatusUnauthorized && strings.Contains(rec.Body.String(), "OfOurs123456") {
					t.Errorf("POST %s: the 401 body echoes the whole unknown key: %s", path, rec.Body)
				}
			}
		})
	}
}

// TestOFREPErrors checks every error row, in OFREP's shapes: a single
// flag's errors carry its key, bulk errors none.
func TestOFREPErrors(t *testing.T) {
	h := newOFREPTestServer(t, func(c *Config) { c.Limits.MaxBodyBytes = 4096 }).handler()
	type want struct {
		code      int
		errorCode string
		details   string // a part of errorDetails
	}
	tests := []struct {
		name string
		key  string
		body string
		want want
	}{
		{"unknown flag", ofrepClientKey, `{"context":{}}`, want{404, "FLAG_NOT_FOUND", "flag 'FLAG' not found"}},
		{"context is an array", ofrepClientKey, `{"context":[]}`, want{400, "INVALID_CONTEXT", "context: must be an object"}},
		{"context is a string", ofrepClientKey, `{"context":"u1"}`, want{400, "INVALID_CONTEXT", "context: must be an object"}},
		{"trait is an object", ofrepClientKey, `{"context":{"targetingKey":"u1","address":{"city":"Paris"}}}`,
			want{400, "INVALID_CONTEXT", `context["address"]: must be a string, number, boolean or null`}},
		{"trait is an array", ofrepClientKey, `{"context":{"targetingKey":"u1","tags":["a"]}}`,
			want{400, "INVALID_CONTEXT", `context["tags"]: must be a string, number, boolean or null`}},
		{"targetingKey is not a string", ofrepClientKey, `{"context":{"targetingKey":42}}`,
			want{400, "INVALID_CONTEXT", "context.targetingKey: must be a string"}},
		{"trait value over 2000 characters", ofrepClientKey, `{"context":{"targetingKey":"u1","bio":"` + strings.Repeat("x", 2001) + `"}}`,
			want{400, "INVALID_CONTEXT", `context["bio"]: longer than 2000 characters`}},
		{"malformed JSON", ofrepClientKey, `{"context":{"targetingKey":"u1",}}`, want{400, "INVALID_CONTEXT", "malformed JSON at line 1"}},
		{"body is not an object", ofrepClientKey, `[1]`, want{400, "INVALID_CONTEXT", "body: must be a JSON object"}},
		{"empty body", ofrepClientKey, ``, want{400, "INVALID_CONTEXT", "body: empty"}},
		{"trailing data", ofrepClientKey, `{"context":{}} {}`, want{400, "INVALID_CONTEXT", "unexpected data after the JSON object"}},
		{"body over the limit", ofrepClientKey, `{"context":{"pad":"` + strings.Repeat("x", 5000) + `"}}`,
			want{413, "GENERAL", "over 4096 bytes"}},
		{"unknown key", "NotAKeyOfOurs123456", `{"context":{}}`, want{401, "GENERAL", "unknown key"}},
		{"document not received yet", ofrepPendingKey, `{"context":{}}`, want{503, "GENERAL", "has not been received yet"}},
	}
	for _, tt := range tests {
		for _, single := range []bool{true, false} {
			path, flag := "/ofrep/v1/evaluate/flags", "no_such_flag"
			if single {
				path += "/" + flag
			} else if tt.want.errorCode == "FLAG_NOT_FOUND" {
				continue // bulk has no flag to miss
			}
			t.Run(fmt.Sprintf("%s/single=%t", tt.name, single), func(t *testing.T) {
				rec := ofrepPost(t, h, path, withKey(tt.key), tt.body)
				if rec.Code != tt.want.code {
					t.Fatalf("status %d; want %d\n%s", rec.Code, tt.want.code, rec.Body)
				}
				var got map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatalf("error body is not JSON: %v\n%s", err, rec.Body)
				}
				if got["errorCode"] != tt.want.errorCode {
					t.Errorf("errorCode = %v; want %s", got["errorCode"], tt.want.errorCode)
				}
				details, _ := got["errorDetails"].(string)
				if wantDetails := strings.ReplaceAll(tt.want.details, "FLAG", flag); !strings.Contains(details, wantDetails) {
					t.Errorf("errorDetails = %q; want it to contain %q", details, wantDetails)
				}
				if key, has := got["key"]; single && key != flag || !single && has {
					t.Errorf("key = %v (present %t); want %q on the single-flag endpoint only", key, has, flag)
				}
				if len(got) > 3 {
					t.Errorf("error body has fields beyond key, errorCode, errorDetails: %s", rec.Body)
				}
			})
		}
	}
}

// TestOFREPEmptyFlagKey: a path ending in "/" names no flag; it must not
// answer with every flag run together.
func TestOFREPEmptyFlagKey(t *testing.T) {
	h := newOFREPTestServer(t).handler()
	rec := ofrepPost(t, h, "/ofrep/v1/evaluate/flags/", withKey(ofrepServerKey), `{"context":{}}`)
	want := `{"key":"","errorCode":"FLAG_NOT_FOUND","errorDetails":"flag '' not found"}`
	if rec.Code != http.StatusNotFound || rec.Body.String() != want {
		t.Errorf("POST /ofrep/v1/evaluate/flags/ = %d %s; want 404 %s", rec.Code, rec.Body, want)
	}
}

// TestOFREPMethodNotAllowed checks other methods get 405 with Allow, in
// OFREP's error shape.
func TestOFREPMethodNotAllowed(t *testing.T) {
	h := newOFREPTestServer(t).handler()
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodHead} {
		for _, path := range []string{"/ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags/banner"} {
			req := httptest.NewRequest(method, path, nil)
			req.Header.Set("X-Environment-Key", ofrepClientKey)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "POST, OPTIONS" {
				t.Errorf("%s %s: status %d, Allow %q; want 405, \"POST, OPTIONS\"", method, path, rec.Code, rec.Header().Get("Allow"))
			}
			if method != http.MethodHead && !strings.Contains(rec.Body.String(), `"errorCode":"GENERAL"`) {
				t.Errorf("%s %s: body %s; want OFREP's error shape", method, path, rec.Body)
			}
		}
	}
}

// TestOFREPCORSPreflight checks a browser may call the OFREP endpoints: the
// web provider sends Content-Type: application/json, which needs a preflight,
// and reads the ETag.
func TestOFREPCORSPreflight(t *testing.T) {
	h := newOFREPTestServer(t).handler()
	req := httptest.NewRequest(http.MethodOptions, "/ofrep/v1/evaluate/flags", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type,x-api-key")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Header().Get("Access-Control-Allow-Methods"), "POST") ||
		rec.Header().Get("Access-Control-Allow-Headers") != "content-type,x-api-key" {
		t.Errorf("preflight: status %d, headers %v; want 200 allowing POST and the requested headers", rec.Code, rec.Header())
	}
	post := ofrepPost(t, h, "/ofrep/v1/evaluate/flags", map[string]string{"X-API-Key": ofrepClientKey, "Origin": "https://app.example"}, `{"context":{}}`)
	if !strings.Contains(post.Header().Get("Access-Control-Expose-Headers"), "ETag") {
		t.Errorf("Access-Control-Expose-Headers = %q; want ETag exposed", post.Header().Get("Access-Control-Expose-Headers"))
	}
}

// TestOFREPMatchesIdentities checks, on the benchmark document (50
// features, nested segments, splits, identity overrides), that OFREP gives
// every identity what POST /api/v1/identities/ gives it for the same traits:
// the same flags, value for enabled ones (true for a null value), no value
// for disabled ones but false for a disabled one with a null value, and the
// variant of enabled ones (none where the identities answer's is null).
func TestOFREPMatchesIdentities(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "bench", "environment-document.json"))
	if err != nil {
		t.Fatalf("benchmark document: %v", err)
	}
	var doc struct {
		APIKey string `json:"api_key"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, withPairs(KeyPair{ServerSideKey: "ser.ofrep-bench", ClientSideKey: doc.APIKey}))
	s.publishDoc(t, doc.APIKey, raw)
	h := s.handler()
	traitSets := []map[string]any{
		{},
		{"plan": "premium", "age": 34, "country": "GB", "app_version": "2.4.1", "beta_tester": true},
		{"plan": "free", "age": "17", "country": "DE"},
		{"plan": "enterprise", "age": 61.5, "country": "FR", "beta_tester": "true"},
		{"app_version": "1.0.0", "email": "someone@example.com", "beta_tester": false},
	}
	compared := 0
	for _, key := range []string{doc.APIKey, "ser.ofrep-bench"} {
		for i := range 40 {
			identifier := fmt.Sprintf("user_%d", i)
			if i < 10 {
				identifier = fmt.Sprintf("identity_override_%d", i) // may hit the document's overrides
			}
			traits := traitSets[i%len(traitSets)]
			var flagsmithTraits []map[string]any
			ctx := map[string]any{"targetingKey": identifier}
			for k, v := range traits {
				flagsmithTraits = append(flagsmithTraits, map[string]any{"trait_key": k, "trait_value": v})
				ctx[k] = v
			}
			idBody, _ := json.Marshal(map[string]any{"identifier": identifier, "traits": flagsmithTraits})
			ofrepBody, _ := json.Marshal(map[string]any{"context": ctx})

			idRec := ofrepPost(t, h, "/api/v1/identities/", withKey(key), string(idBody))
			ofRec := ofrepPost(t, h, "/ofrep/v1/evaluate/flags", withKey(key), string(ofrepBody))
			if idRec.Code != http.StatusOK || ofRec.Code != http.StatusOK {
				t.Fatalf("%s: identities %d, OFREP %d", identifier, idRec.Code, ofRec.Code)
			}
			var identities struct {
				Flags []struct {
					Feature struct {
						ID   json.Number `json:"id"`
						Name string      `json:"name"`
					} `json:"feature"`
					Enabled bool            `json:"enabled"`
					Value   json.RawMessage `json:"feature_state_value"`
					Variant *string         `json:"variant"`
				} `json:"flags"`
			}
			if err := json.Unmarshal(idRec.Body.Bytes(), &identities); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{}
			for _, f := range identities.Flags {
				m := map[string]any{"enabled": f.Enabled, "featureId": f.Feature.ID}
				switch {
				case f.Enabled && string(f.Value) == "null":
					m["value"] = true
				case f.Enabled:
					m["value"] = ofrepJSON(t, f.Value)
				case string(f.Value) == "null":
					m["value"] = false
				}
				if f.Enabled && f.Variant != nil {
					m["variant"] = *f.Variant
				}
				want[f.Feature.Name] = m
			}
			got := map[string]any{}
			for name, f := range ofrepBulkFlags(t, ofRec.Body.Bytes()) {
				fm := f.(map[string]any)
				md := fm["metadata"].(map[string]any)
				m := map[string]any{"enabled": md["enabled"], "featureId": md["featureId"]}
				for _, field := range []string{"value", "variant"} {
					if v, ok := fm[field]; ok {
						m[field] = v
					}
				}
				got[name] = m
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("key %s, identity %s %v: OFREP differs from /api/v1/identities/ (-identities +ofrep):\n%s",
					maskedKey(key), identifier, traits, diff)
			}
			compared += len(want)
		}
	}
	if compared < 1000 {
		t.Fatalf("compared only %d flags", compared)
	}
}

// TestOFREPStream checks the realtime stream in OFREP's format: a
// refetchEvaluation event on connect unless the client is current (by
// ?since= or Last-Event-ID), and one per new document.
func TestOFREPStream(t *testing.T) {
	s := newOFREPTestServer(t).listen(t, nil)
	open := func(query, lastEventID string) *sseStream {
		t.Helper()
		header := http.Header{}
		if lastEventID != "" {
			header.Set("Last-Event-ID", lastEventID)
		}
		st := sseOpenStream(t, s.client, s.url+sseStreamPath(ofrepClientKey)+query, header)
		if it := st.next(t, "the retry hint"); it.retry != "3000" {
			t.Fatalf("first item = %+v; want the retry hint", it)
		}
		return st
	}
	wantRefetch := func(st *sseStream, name, updatedAt string) {
		t.Helper()
		it := st.nextEvent(t, name+": a refetchEvaluation event")
		lastModified, _, _ := strings.Cut(updatedAt, ".")
		want := sseItem{isEvent: true, event: "message", id: updatedAt,
			data: `{"type":"refetchEvaluation","lastModified":` + lastModified + `}`}
		if diff := cmp.Diff(want, it, cmp.AllowUnexported(sseItem{})); diff != "" {
			t.Errorf("%s: event (-want +got):\n%s", name, diff)
		}
	}
	current := s.env(t, ofrepClientKey).snap.Load().updatedAtUnix

	fresh := open("?format=ofrep", "")
	wantRefetch(fresh, "on connect", current)
	behind := open("?format=ofrep", "1.0")
	wantRefetch(behind, "reconnect behind", current)
	upToDate := open("?format=ofrep&since="+current, "")
	resumed := open("?format=ofrep&since=1.0", current)

	s.publishDoc(t, ofrepClientKey, []byte(strings.Replace(ofrepDocument, "2026-11-01T12:00:00.250000Z", "2026-11-02T12:00:00.5Z", 1)))
	updated := s.env(t, ofrepClientKey).snap.Load().updatedAtUnix
	// The clients that were current hear of the new document first thing.
	for name, st := range map[string]*sseStream{"fresh": fresh, "behind": behind, "up to date": upToDate, "resumed": resumed} {
		wantRefetch(st, name+" after a new document", updated)
	}
}

// TestOFREPDecodeContext checks the context's traits are exactly those an
// identity request with the same traits gets: coerced once, unread traits
// dropped, the last of repeated members kept.
func TestOFREPDecodeContext(t *testing.T) {
	names := map[string]string{"plan": "plan", "age": "age", "score": "score", "beta": "beta", "gone": "gone"}
	lim := identityLimits{maxTraits: 10, maxTraitKeyLength: 20, traitNames: names}
	body := `{"ignored": [1, {"x": 2}], "context": {"targetingKey": "first", "plan": "free", "age": "42",
		"score": -4.5, "beta": true, "gone": null, "unread": "x", "plan": "premium", "targetingKey": "u\u00e9"}}`
	var buf requestBuffers
	key, err := decodeOFREPRequest([]byte(body), &buf, lim)
	if err != nil {
		t.Fatal(err)
	}
	if key != "ué" {
		t.Errorf("targeting key = %q; want %q", key, "ué")
	}
	want := []trait{
		{"plan", coerceString("free")}, {"age", intValue(42)}, {"score", floatValue(-4.5)},
		{"beta", boolValue(true)}, {"gone", value{}}, {"plan", coerceString("premium")},
	}
	if diff := cmp.Diff(want, buf.traits, cmp.AllowUnexported(trait{}, value{})); diff != "" {
		t.Errorf("traits (-want +got):\n%s", diff)
	}
	for _, body := range []string{`{}`, `{"context": null}`, `{"context": {}}`, `{"context": {"targetingKey": null}}`} {
		if key, err := decodeOFREPRequest([]byte(body), &buf, lim); err != nil || key != "" || len(buf.traits) != 0 {
			t.Errorf("decode(%s) = %q, %d traits, %v; want no targeting key, no traits", body, key, len(buf.traits), err)
		}
	}
	tooMany := `{"context": {"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11}}`
	if _, err := decodeOFREPRequest([]byte(tooMany), &buf, lim); err == nil || !strings.Contains(err.Error(), "more than 10 traits") {
		t.Errorf("11 traits: err = %v; want the trait limit", err)
	}
	longKey := `{"context": {"` + strings.Repeat("k", 21) + `": 1}}`
	if _, err := decodeOFREPRequest([]byte(longKey), &buf, lim); err == nil || !strings.Contains(err.Error(), "longer than 20") {
		t.Errorf("long trait key: err = %v; want the key length limit", err)
	}
}

// ofrepBenchContext is the 5-trait benchmark identity as an OFREP context,
// for identifier n.
func ofrepBenchContext(n int) string {
	return `{"context":{"targetingKey":"bench_user_` + strconv.Itoa(n) + `","plan":"premium","age":34,"country":"GB","app_version":"2.4.1","beta_tester":true}}`
}

// BenchmarkHandlerOFREPBulk is POST /ofrep/v1/evaluate/flags for the
// benchmark identity, a different identifier each time, in parallel: compare
// with BenchmarkHandlerIdentities (the bulk path may cost at most 1.3× it).
func BenchmarkHandlerOFREPBulk(b *testing.B) {
	benchmarkOFREP(b, "/ofrep/v1/evaluate/flags")
}

// BenchmarkHandlerOFREPFlag is POST /ofrep/v1/evaluate/flags/{key} for one
// segment-overridden flag of the benchmark document.
func BenchmarkHandlerOFREPFlag(b *testing.B) {
	benchmarkOFREP(b, "/ofrep/v1/evaluate/flags/new_checkout")
}

func benchmarkOFREP(b *testing.B, path string) {
	s := benchServer(b, benchDocument(b))
	h := s.handler()
	key := s.environments()[0].pair.ClientSideKey
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(ofrepBenchContext(i)))
			req.Header.Set("X-Environment-Key", key)
			w := newDiscardWriter()
			h.ServeHTTP(w, req)
			if w.status != http.StatusOK {
				b.Fatalf("status %d", w.status)
			}
		}
	})
}
