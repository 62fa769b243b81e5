package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Keys of the environments the handler tests serve. Each document's api_key
// is its environment's client key.
const (
	apiClientKey     = "EnvAclientKey000001"
	apiServerKey     = "ser.EnvAserverKey000001"
	hiddenClientKey  = "EnvBhiddenKey000002"
	hiddenServerKey  = "ser.EnvBserverKey000002"
	bigClientKey     = "EnvCbigKey000003"
	bigServerKey     = "ser.EnvCserverKey000003"
	pendingClientKey = "EnvDpendingKey000004"
	pendingServerKey = "ser.EnvDserverKey000004"
)

// apiDocument is an ordinary environment: every JSON value type, one
// server-only feature (103), a disabled flag the project does not hide, a
// segment override for plan=premium, a multivariate feature whose only
// variant takes 100%, and an identity override for "vip". Its feature states
// are not in name order, and it is indented so that "as received" is
// distinguishable from re-encoded.
const apiDocument = `{
  "id": 1,
  "api_key": "EnvAclientKey000001",
  "name": "Handlers A",
  "updated_at": "2026-11-01T12:00:00.250000Z",
  "project": {
    "id": 1,
    "name": "handlers",
    "hide_disabled_flags": false,
    "server_key_only_feature_ids": [103],
    "segments": [
      {
        "id": 501,
        "name": "premium_users",
        "rules": [
          {"type": "ALL", "rules": [], "conditions": [
            {"operator": "EQUAL", "property_": "plan", "value": "premium"}
          ]}
        ],
        "feature_states": [
          {"feature": {"id": 101, "name": "banner", "type": "STANDARD"}, "enabled": true,
           "django_id": 9501, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000501",
           "feature_segment": {"priority": 0},
           "feature_state_value": "gold", "multivariate_feature_state_values": []}
        ]
      }
    ]
  },
  "feature_states": [
    {"feature": {"id": 101, "name": "banner", "type": "STANDARD"}, "enabled": true,
     "django_id": 9101, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000101",
     "feature_state_value": "blue", "multivariate_feature_state_values": []},
    {"feature": {"id": 102, "name": "max_items", "type": "STANDARD"}, "enabled": true,
     "django_id": 9102, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000102",
     "feature_state_value": 42, "multivariate_feature_state_values": []},
    {"feature": {"id": 103, "name": "secret_algo", "type": "STANDARD"}, "enabled": true,
     "django_id": 9103, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000103",
     "feature_state_value": "v2", "multivariate_feature_state_values": []},
    {"feature": {"id": 104, "name": "ratio", "type": "STANDARD"}, "enabled": true,
     "django_id": 9104, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000104",
     "feature_state_value": 1.5, "multivariate_feature_state_values": []},
    {"feature": {"id": 105, "name": "dark_mode", "type": "STANDARD"}, "enabled": false,
     "django_id": 9105, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000105",
     "feature_state_value": true, "multivariate_feature_state_values": []},
    {"feature": {"id": 106, "name": "empty_value"}, "enabled": true,
     "django_id": 9106, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000106",
     "feature_state_value": null, "multivariate_feature_state_values": []},
    {"feature": {"id": 107, "name": "checkout", "type": "MULTIVARIATE"}, "enabled": true,
     "django_id": 9107, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000107",
     "feature_state_value": "control", "multivariate_feature_state_values": [
       {"id": 7001, "mv_fs_value_uuid": "5b1f1b7e-0001-4000-8000-000000007001",
        "percentage_allocation": 100,
        "multivariate_feature_option": {"id": 71, "value": "variant_a"}}
     ]},
    {"feature": {"id": 108, "name": "price", "type": "STANDARD"}, "enabled": true,
     "django_id": 9108, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000108",
     "feature_state_value": 10.0, "multivariate_feature_state_values": []}
  ],
  "identity_overrides": [
    {"identifier": "vip", "identity_features": [
      {"feature": {"id": 101, "name": "banner", "type": "STANDARD"}, "enabled": false,
       "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000009999",
       "feature_state_value": "platinum", "multivariate_feature_state_values": []}
    ]}
  ]
}
`

// apiDocumentUpdatedAt is apiDocument's updated_at as Unix seconds.
const apiDocumentUpdatedAt = "1793534400.25"

// hiddenDocument hides disabled flags from client keys. Segment "beta"
// enables "off" for beta=true and segment "kill" disables "on" for kill=true,
// so visibility must follow the evaluated flag, not the default.
const hiddenDocument = `{
  "api_key": "EnvBhiddenKey000002",
  "name": "Handlers B",
  "updated_at": "2026-10-15T08:30:00Z",
  "project": {
    "hide_disabled_flags": true,
    "server_key_only_feature_ids": [203],
    "segments": [
      {"id": 601, "name": "beta", "rules": [{"type": "ALL", "rules": [], "conditions": [
         {"operator": "EQUAL", "property_": "beta", "value": "true"}]}],
       "feature_states": [
         {"feature": {"id": 202, "name": "off"}, "enabled": true, "django_id": 9602,
          "feature_segment": {"priority": 1}, "feature_state_value": "beta-on"}]},
      {"id": 602, "name": "kill", "rules": [{"type": "ALL", "rules": [], "conditions": [
         {"operator": "EQUAL", "property_": "kill", "value": "true"}]}],
       "feature_states": [
         {"feature": {"id": 201, "name": "on"}, "enabled": false, "django_id": 9601,
          "feature_segment": {"priority": 2}, "feature_state_value": "killed"}]}
    ]
  },
  "feature_states": [
    {"feature": {"id": 201, "name": "on"}, "enabled": true, "django_id": 9201, "feature_state_value": "yes"},
    {"feature": {"id": 202, "name": "off"}, "enabled": false, "django_id": 9202, "feature_state_value": "no"},
    {"feature": {"id": 203, "name": "server_only"}, "enabled": true, "django_id": 9203, "feature_state_value": 3}
  ]
}`

// hiddenDocumentUpdatedAt is hiddenDocument's updated_at as Unix seconds.
const hiddenDocumentUpdatedAt = "1792053000.0"

// bigDocument has a value long enough that every flags and identities
// response is over the gzip threshold.
var bigDocument = strings.Replace(`{
  "api_key": "EnvCbigKey000003",
  "name": "Handlers C",
  "updated_at": "2026-11-01T12:00:00Z",
  "project": {"segments": []},
  "feature_states": [
    {"feature": {"id": 301, "name": "long_text"}, "enabled": true, "django_id": 9301, "feature_state_value": "LONG"},
    {"feature": {"id": 302, "name": "short"}, "enabled": true, "django_id": 9302, "feature_state_value": 1}
  ]
}`, "LONG", strings.Repeat("lorem ipsum ", 150), 1)

func apiKeyPairs() []KeyPair {
	return []KeyPair{
		{ServerSideKey: apiServerKey, ClientSideKey: apiClientKey},
		{ServerSideKey: hiddenServerKey, ClientSideKey: hiddenClientKey},
		{ServerSideKey: bigServerKey, ClientSideKey: bigClientKey},
		{ServerSideKey: pendingServerKey, ClientSideKey: pendingClientKey},
	}
}

// newAPITestServer serves the four test environments, the default
// configuration changed by edits, with every document published but the
// pending environment's.
func newAPITestServer(t testing.TB, edits ...func(*Config)) *testServer {
	t.Helper()
	s := newTestServer(t, append([]func(*Config){withPairs(apiKeyPairs()...)}, edits...)...)
	s.publishDoc(t, apiClientKey, []byte(apiDocument))
	s.publishDoc(t, hiddenClientKey, []byte(hiddenDocument))
	s.publishDoc(t, bigClientKey, []byte(bigDocument))
	return s
}

// apiJSON decodes a JSON body keeping number literals, so 10.0 and 10 stay
// distinct as they are for Python.
func apiJSON(t testing.TB, body []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %.300q: %v", body, err)
	}
	if dec.More() {
		t.Fatalf("decode %.300q: data after the JSON value", body)
	}
	return v
}

// apiError checks that a response is a JSON error with the status and
// returns its message.
func apiError(t testing.TB, rec *httptest.ResponseRecorder, wantCode int, wantStatus string) string {
	t.Helper()
	if rec.Code != wantCode {
		t.Errorf("status = %d; want %d (body %.300q)", rec.Code, wantCode, rec.Body.Bytes())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q; want application/json", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %.300q is not a JSON object: %v", rec.Body.Bytes(), err)
	}
	status, _ := body["status"].(string)
	message, ok := body["message"].(string)
	if !ok || status == "" {
		t.Errorf("error body %.300q: want string \"status\" and \"message\"", rec.Body.Bytes())
	}
	if wantStatus != "" && status != wantStatus {
		t.Errorf("error status = %q; want %q", status, wantStatus)
	}
	return message
}

// flagNames lists the feature names of a flags array, in order.
func flagNames(t testing.TB, flags any) []string {
	t.Helper()
	list, ok := flags.([]any)
	if !ok {
		t.Fatalf("flags = %T; want a JSON array", flags)
	}
	var names []string
	for _, f := range list {
		feature := f.(map[string]any)["feature"].(map[string]any)
		names = append(names, feature["name"].(string))
	}
	return names
}

// apiFlagsClientA is GET /api/v1/flags/ for apiDocument and a client key:
// document order, secret_algo left out, the disabled flag kept, every value
// with its JSON type (10.0 stays a float literal).
const apiFlagsClientA = `[
 {"feature":{"id":101,"name":"banner","type":"STANDARD"},"enabled":true,"feature_state_value":"blue"},
 {"feature":{"id":102,"name":"max_items","type":"STANDARD"},"enabled":true,"feature_state_value":42},
 {"feature":{"id":104,"name":"ratio","type":"STANDARD"},"enabled":true,"feature_state_value":1.5},
 {"feature":{"id":105,"name":"dark_mode","type":"STANDARD"},"enabled":false,"feature_state_value":true},
 {"feature":{"id":106,"name":"empty_value","type":"STANDARD"},"enabled":true,"feature_state_value":null},
 {"feature":{"id":107,"name":"checkout","type":"MULTIVARIATE"},"enabled":true,"feature_state_value":"control"},
 {"feature":{"id":108,"name":"price","type":"STANDARD"},"enabled":true,"feature_state_value":10.0}
]`

const apiFlagsServerA = `[
 {"feature":{"id":101,"name":"banner","type":"STANDARD"},"enabled":true,"feature_state_value":"blue"},
 {"feature":{"id":102,"name":"max_items","type":"STANDARD"},"enabled":true,"feature_state_value":42},
 {"feature":{"id":103,"name":"secret_algo","type":"STANDARD"},"enabled":true,"feature_state_value":"v2"},
 {"feature":{"id":104,"name":"ratio","type":"STANDARD"},"enabled":true,"feature_state_value":1.5},
 {"feature":{"id":105,"name":"dark_mode","type":"STANDARD"},"enabled":false,"feature_state_value":true},
 {"feature":{"id":106,"name":"empty_value","type":"STANDARD"},"enabled":true,"feature_state_value":null},
 {"feature":{"id":107,"name":"checkout","type":"MULTIVARIATE"},"enabled":true,"feature_state_value":"control"},
 {"feature":{"id":108,"name":"price","type":"STANDARD"},"enabled":true,"feature_state_value":10.0}
]`

const apiFlagsClientB = `[
 {"feature":{"id":201,"name":"on","type":"STANDARD"},"enabled":true,"feature_state_value":"yes"}
]`

const apiFlagsServerB = `[
 {"feature":{"id":201,"name":"on","type":"STANDARD"},"enabled":true,"feature_state_value":"yes"},
 {"feature":{"id":202,"name":"off","type":"STANDARD"},"enabled":false,"feature_state_value":"no"},
 {"feature":{"id":203,"name":"server_only","type":"STANDARD"},"enabled":true,"feature_state_value":3}
]`

func TestHandlersFlags(t *testing.T) {
	h := newAPITestServer(t).handler()
	tests := []struct {
		name string
		key  string
		want string
	}{
		{"client key leaves out server-only features", apiClientKey, apiFlagsClientA},
		{"server key sees every flag", apiServerKey, apiFlagsServerA},
		{"client key with hide_disabled_flags", hiddenClientKey, apiFlagsClientB},
		{"server key ignores hide_disabled_flags", hiddenServerKey, apiFlagsServerB},
	}
	for _, tt := range tests {
		for _, path := range []string{"/api/v1/flags/", "/api/v1/flags"} {
			t.Run(tt.name+" "+path, func(t *testing.T) {
				rec := callHandler(t, h, "GET", path, withKey(tt.key), "")
				if rec.Code != http.StatusOK {
					t.Fatalf("GET %s = %d %s; want 200", path, rec.Code, rec.Body)
				}
				if diff := cmp.Diff(apiJSON(t, []byte(tt.want)), apiJSON(t, rec.Body.Bytes())); diff != "" {
					t.Errorf("GET %s body mismatch (-want +got):\n%s", path, diff)
				}
			})
		}
	}
}

func TestHandlersFlagsFeature(t *testing.T) {
	h := newAPITestServer(t).handler()
	tests := []struct {
		name    string
		key     string
		feature string
		want    string // the flag object; empty for a 404
	}{
		{"found", apiClientKey, "banner",
			`{"feature":{"id":101,"name":"banner","type":"STANDARD"},"enabled":true,"feature_state_value":"blue"}`},
		{"integer value", apiClientKey, "max_items",
			`{"feature":{"id":102,"name":"max_items","type":"STANDARD"},"enabled":true,"feature_state_value":42}`},
		{"float value", apiClientKey, "price",
			`{"feature":{"id":108,"name":"price","type":"STANDARD"},"enabled":true,"feature_state_value":10.0}`},
		{"null value", apiClientKey, "empty_value",
			`{"feature":{"id":106,"name":"empty_value","type":"STANDARD"},"enabled":true,"feature_state_value":null}`},
		{"disabled but not hidden", apiClientKey, "dark_mode",
			`{"feature":{"id":105,"name":"dark_mode","type":"STANDARD"},"enabled":false,"feature_state_value":true}`},
		{"server-only with server key", apiServerKey, "secret_algo",
			`{"feature":{"id":103,"name":"secret_algo","type":"STANDARD"},"enabled":true,"feature_state_value":"v2"}`},
		{"hidden disabled with server key", hiddenServerKey, "off",
			`{"feature":{"id":202,"name":"off","type":"STANDARD"},"enabled":false,"feature_state_value":"no"}`},
		{"unknown", apiClientKey, "nope", ""},
		{"unknown with server key", apiServerKey, "nope", ""},
		{"empty name", apiClientKey, "", ""},
		{"case matters", apiClientKey, "Banner", ""},
		{"server-only with client key", apiClientKey, "secret_algo", ""},
		{"hidden disabled with client key", hiddenClientKey, "off", ""},
		{"server-only with hiding client key", hiddenClientKey, "server_only", ""},
	}
	for _, tt := range tests {
		for _, path := range []string{"/api/v1/flags/", "/api/v1/flags"} {
			t.Run(tt.name+" "+path, func(t *testing.T) {
				target := path + "?feature=" + urlQueryEscape(tt.feature)
				rec := callHandler(t, h, "GET", target, withKey(tt.key), "")
				if tt.want == "" {
					apiError(t, rec, http.StatusNotFound, "not_found")
					wantBody := fmt.Sprintf(`{"status":"not_found","message":"feature '%s' not found"}`, tt.feature)
					if diff := cmp.Diff(apiJSON(t, []byte(wantBody)), apiJSON(t, rec.Body.Bytes())); diff != "" {
						t.Errorf("GET %s body mismatch (-want +got):\n%s", target, diff)
					}
					return
				}
				if rec.Code != http.StatusOK {
					t.Fatalf("GET %s = %d %s; want 200", target, rec.Code, rec.Body)
				}
				if diff := cmp.Diff(apiJSON(t, []byte(tt.want)), apiJSON(t, rec.Body.Bytes())); diff != "" {
					t.Errorf("GET %s body mismatch (-want +got):\n%s", target, diff)
				}
				if got := rec.Header().Get(updatedAtHeader); got == "" {
					t.Errorf("GET %s: no %s header", target, updatedAtHeader)
				}
			})
		}
	}
}

func urlQueryEscape(s string) string {
	return strings.NewReplacer("%", "%25", "&", "%26", "+", "%2B", " ", "%20", "#", "%23").Replace(s)
}

// apiEngineFlags returns what the engine's result() says an identity gets,
// keyed by feature name, in the form the API prints.
func apiEngineFlags(t testing.TB, s *testServer, clientKey, identifier string, traits []trait) map[string]any {
	t.Helper()
	snap := s.env(t, clientKey).snap.Load()
	res := snap.engine.result(&identity{identifier: identifier, traits: traits})
	out := map[string]any{}
	for name, fl := range res.Flags {
		out[name] = map[string]any{"enabled": fl.Enabled, "value": apiJSON(t, fl.Value)}
	}
	return out
}

// apiResponseFlags maps an identities response's flags by name to the same
// form as apiEngineFlags.
func apiResponseFlags(t testing.TB, flags any) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, f := range flags.([]any) {
		obj := f.(map[string]any)
		name := obj["feature"].(map[string]any)["name"].(string)
		out[name] = map[string]any{"enabled": obj["enabled"], "value": obj["feature_state_value"]}
	}
	return out
}

func TestHandlersIdentities(t *testing.T) {
	s := newAPITestServer(t)
	h := s.handler()
	tests := []struct {
		name       string
		key        string
		identifier string
		traits     string // the request's traits list; empty for none
		engine     []trait
		wantNames  []string
		wantFlags  map[string]string // feature name → {"enabled":…,"value":…}, for the flags the case is about
	}{
		{
			name: "segment override", key: apiClientKey, identifier: "alice",
			traits:    `[{"trait_key":"plan","trait_value":"premium"},{"trait_key":"age","trait_value":30}]`,
			engine:    []trait{{key: "plan", value: coerceString("premium")}, {key: "age", value: intValue(30)}},
			wantNames: []string{"banner", "max_items", "ratio", "dark_mode", "empty_value", "checkout", "price"},
			wantFlags: map[string]string{
				"banner":   `{"enabled":true,"value":"gold"}`,
				"checkout": `{"enabled":true,"value":"variant_a"}`,
				"price":    `{"enabled":true,"value":10.0}`,
			},
		},
		{
			name: "no matching segment", key: apiClientKey, identifier: "bob",
			traits:    `[{"trait_key":"plan","trait_value":"free"}]`,
			engine:    []trait{{key: "plan", value: coerceString("free")}},
			wantNames: []string{"banner", "max_items", "ratio", "dark_mode", "empty_value", "checkout", "price"},
			wantFlags: map[string]string{"banner": `{"enabled":true,"value":"blue"}`},
		},
		{
			name: "identity override beats segment override", key: apiClientKey, identifier: "vip",
			traits:    `[{"trait_key":"plan","trait_value":"premium"}]`,
			engine:    []trait{{key: "plan", value: coerceString("premium")}},
			wantNames: []string{"banner", "max_items", "ratio", "dark_mode", "empty_value", "checkout", "price"},
			wantFlags: map[string]string{"banner": `{"enabled":false,"value":"platinum"}`},
		},
		{
			name: "identity override without traits", key: apiClientKey, identifier: "vip",
			wantNames: []string{"banner", "max_items", "ratio", "dark_mode", "empty_value", "checkout", "price"},
			wantFlags: map[string]string{"banner": `{"enabled":false,"value":"platinum"}`},
		},
		{
			name: "server key sees server-only features", key: apiServerKey, identifier: "alice",
			traits:    `[{"trait_key":"plan","trait_value":"premium"}]`,
			engine:    []trait{{key: "plan", value: coerceString("premium")}},
			wantNames: []string{"banner", "max_items", "secret_algo", "ratio", "dark_mode", "empty_value", "checkout", "price"},
			wantFlags: map[string]string{"secret_algo": `{"enabled":true,"value":"v2"}`},
		},
		{
			name: "hidden: segment enables a disabled flag", key: hiddenClientKey, identifier: "carol",
			traits:    `[{"trait_key":"beta","trait_value":true}]`,
			engine:    []trait{{key: "beta", value: boolValue(true)}},
			wantNames: []string{"on", "off"},
			wantFlags: map[string]string{"off": `{"enabled":true,"value":"beta-on"}`},
		},
		{
			name: "hidden: segment disables a flag", key: hiddenClientKey, identifier: "dave",
			traits:    `[{"trait_key":"kill","trait_value":"true"}]`,
			engine:    []trait{{key: "kill", value: coerceString("true")}},
			wantNames: nil,
		},
		{
			name: "hidden: server key sees every flag", key: hiddenServerKey, identifier: "dave",
			traits:    `[{"trait_key":"kill","trait_value":"true"}]`,
			engine:    []trait{{key: "kill", value: coerceString("true")}},
			wantNames: []string{"on", "off", "server_only"},
			wantFlags: map[string]string{"on": `{"enabled":false,"value":"killed"}`},
		},
	}
	for _, tt := range tests {
		var requests []struct{ method, path, body, wantTraits string }
		for _, path := range []string{"/api/v1/identities/", "/api/v1/identities"} {
			traits := tt.traits
			if traits == "" {
				traits = "[]"
			}
			body := fmt.Sprintf(`{"identifier":%q,"traits":%s}`, tt.identifier, traits)
			requests = append(requests, struct{ method, path, body, wantTraits string }{"POST", path, body, traits})
			if tt.traits == "" {
				requests = append(requests, struct{ method, path, body, wantTraits string }{"GET", path + "?identifier=" + tt.identifier, "", "[]"})
			}
		}
		for _, r := range requests {
			t.Run(tt.name+" "+r.method+" "+r.path, func(t *testing.T) {
				rec := callHandler(t, h, r.method, r.path, withKey(tt.key), r.body)
				if rec.Code != http.StatusOK {
					t.Fatalf("%s %s = %d %s; want 200", r.method, r.path, rec.Code, rec.Body)
				}
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q; want application/json", ct)
				}
				got := apiJSON(t, rec.Body.Bytes()).(map[string]any)
				if len(got) != 3 {
					t.Errorf("response keys = %v; want identifier, traits, flags", got)
				}
				if got["identifier"] != tt.identifier {
					t.Errorf("identifier = %v; want %q", got["identifier"], tt.identifier)
				}
				if diff := cmp.Diff(apiJSON(t, []byte(r.wantTraits)), got["traits"]); diff != "" {
					t.Errorf("traits mismatch (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(tt.wantNames, flagNames(t, got["flags"])); diff != "" {
					t.Errorf("flag names mismatch (-want +got):\n%s", diff)
				}
				gotFlags := apiResponseFlags(t, got["flags"])
				for name, want := range tt.wantFlags {
					if diff := cmp.Diff(apiJSON(t, []byte(want)), gotFlags[name]); diff != "" {
						t.Errorf("flag %s mismatch (-want +got):\n%s", name, diff)
					}
				}
				engineFlags := apiEngineFlags(t, s, apiEnvClientKey(tt.key), tt.identifier, tt.engine)
				for name, gf := range gotFlags {
					if diff := cmp.Diff(engineFlags[name], gf); diff != "" {
						t.Errorf("flag %s differs from engine result() (-engine +response):\n%s", name, diff)
					}
				}
			})
		}
	}
}

// apiEnvClientKey maps either key of a test environment to its client key.
func apiEnvClientKey(key string) string {
	for _, p := range apiKeyPairs() {
		if key == p.ClientSideKey || key == string(p.ServerSideKey) {
			return p.ClientSideKey
		}
	}
	return key
}

// TestHandlersIdentitiesDuplicateTraits checks that a repeated trait key
// takes its last value, as a Python dict built from the list does, both for
// a few traits and for enough to take the indexed lookup.
func TestHandlersIdentitiesDuplicateTraits(t *testing.T) {
	h := newAPITestServer(t).handler()
	filler := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, `{"trait_key":"filler_%d","trait_value":%d},`, i, i)
		}
		return b.String()
	}
	tests := []struct {
		name       string
		traits     string
		wantBanner string
	}{
		{"last is premium", `{"trait_key":"plan","trait_value":"free"},{"trait_key":"plan","trait_value":"premium"}`, "gold"},
		{"last is free", `{"trait_key":"plan","trait_value":"premium"},{"trait_key":"plan","trait_value":"free"}`, "blue"},
		{"last is null", `{"trait_key":"plan","trait_value":"premium"},{"trait_key":"plan","trait_value":null}`, "blue"},
		{"many traits, last is premium", filler(20) + `{"trait_key":"plan","trait_value":"free"},` + filler(3) + `{"trait_key":"plan","trait_value":"premium"}`, "gold"},
		{"many traits, last is free", `{"trait_key":"plan","trait_value":"premium"},` + filler(20) + `{"trait_key":"plan","trait_value":"free"}`, "blue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"identifier":"dup","traits":[` + tt.traits + `]}`
			rec := callHandler(t, h, "POST", "/api/v1/identities/", withKey(apiClientKey), body)
			if rec.Code != http.StatusOK {
				t.Fatalf("POST = %d %s; want 200", rec.Code, rec.Body)
			}
			got := apiJSON(t, rec.Body.Bytes()).(map[string]any)
			banner := apiResponseFlags(t, got["flags"])["banner"].(map[string]any)["value"]
			if banner != tt.wantBanner {
				t.Errorf("banner = %v; want %q", banner, tt.wantBanner)
			}
			// The echo keeps every trait as sent, duplicates included.
			if diff := cmp.Diff(apiJSON(t, []byte("["+tt.traits+"]")), got["traits"]); diff != "" {
				t.Errorf("traits mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHandlersIdentitiesConcurrent checks that identity requests sharing
// pooled buffers never see each other's data: each answer equals the one the
// same request got alone.
func TestHandlersIdentitiesConcurrent(t *testing.T) {
	h := newAPITestServer(t).handler()
	bodies := []string{
		`{"identifier":"alice","traits":[{"trait_key":"plan","trait_value":"premium"}]}`,
		`{"identifier":"vip","traits":[]}`,
		`{"identifier":"bob","traits":[{"trait_key":"plan","trait_value":"free"},{"trait_key":"n","trait_value":1.5}]}`,
		apiTraits(40),
	}
	want := make([]string, len(bodies))
	for i, body := range bodies {
		want[i] = callHandler(t, h, "POST", "/api/v1/identities/", withKey(apiClientKey), body).Body.String()
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for n := range 50 {
				i := (g + n) % len(bodies)
				req := httptest.NewRequest("POST", "/api/v1/identities/", strings.NewReader(bodies[i]))
				req.Header.Set("X-Environment-Key", apiClientKey)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if got := rec.Body.String(); got != want[i] {
					t.Errorf("concurrent POST %.60q = %.200q; want %.200q", bodies[i], got, want[i])
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestHandlersEnvironmentDocument(t *testing.T) {
	h := newAPITestServer(t).handler()
	for _, path := range []string{"/api/v1/environment-document/", "/api/v1/environment-document"} {
		t.Run("server key "+path, func(t *testing.T) {
			rec := callHandler(t, h, "GET", path, withKey(apiServerKey), "")
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s = %d %s; want 200", path, rec.Code, rec.Body)
			}
			if got := rec.Body.String(); got != apiDocument {
				t.Errorf("GET %s body is not the document as received:\n%.500s", path, got)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q; want application/json", ct)
			}
		})
		t.Run("client key "+path, func(t *testing.T) {
			rec := callHandler(t, h, "GET", path, withKey(apiClientKey), "")
			apiError(t, rec, http.StatusUnauthorized, "unauthorized")
			if strings.Contains(rec.Body.String(), "feature_states") {
				t.Errorf("client key got document content: %.300s", rec.Body)
			}
		})
	}
	t.Run("server key gzip", func(t *testing.T) {
		rec := callHandler(t, h, "GET", "/api/v1/environment-document/", map[string]string{
			"X-Environment-Key": apiServerKey, "Accept-Encoding": "gzip"}, "")
		if got := string(apiGunzip(t, rec)); got != apiDocument {
			t.Errorf("gunzipped document is not the document as received:\n%.500s", got)
		}
	})
}

func TestHandlersHealth(t *testing.T) {
	s := newTestServer(t, withPairs(KeyPair{ServerSideKey: apiServerKey, ClientSideKey: apiClientKey}))
	h := s.handler()
	readinessPaths := []string{
		"/proxy/health", "/proxy/health/", "/proxy/health/readiness", "/proxy/health/readiness/",
		"/health", "/health/",
	}
	liveness := func(t *testing.T) {
		for _, path := range []string{"/proxy/health/liveness", "/proxy/health/liveness/"} {
			rec := callHandler(t, h, "GET", path, nil, "")
			if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
				t.Errorf("GET %s = %d %q; want 200 and an empty body", path, rec.Code, rec.Body)
			}
		}
	}

	t.Run("before any document", func(t *testing.T) {
		for _, path := range readinessPaths {
			rec := callHandler(t, h, "GET", path, nil, "")
			want := `{"status":"error","reason":"environment document(s) not updated.","last_successful_update":null}`
			if rec.Code != http.StatusServiceUnavailable {
				t.Errorf("GET %s = %d; want 503", path, rec.Code)
			}
			if diff := cmp.Diff(apiJSON(t, []byte(want)), apiJSON(t, rec.Body.Bytes())); diff != "" {
				t.Errorf("GET %s body mismatch (-want +got):\n%s", path, diff)
			}
		}
		liveness(t)
	})

	if err := s.publish(s.environments()[0], []byte(apiDocument), "test"); err != nil {
		t.Fatalf("publish = %v", err)
	}
	t.Run("after a document", func(t *testing.T) {
		for _, path := range readinessPaths {
			rec := callHandler(t, h, "GET", path, nil, "")
			if rec.Code != http.StatusOK {
				t.Errorf("GET %s = %d %s; want 200", path, rec.Code, rec.Body)
				continue
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("GET %s Content-Type = %q; want application/json", path, ct)
			}
			var got readiness
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("GET %s body %q: %v", path, rec.Body, err)
			}
			if got.Status != "ok" || got.Reason != nil || got.LastSuccessfulUpdate == nil {
				t.Errorf("GET %s = %s; want status ok, reason null, a last_successful_update", path, rec.Body)
				continue
			}
			if _, err := time.Parse(time.RFC3339, *got.LastSuccessfulUpdate); err != nil {
				t.Errorf("GET %s last_successful_update %q is not RFC 3339: %v", path, *got.LastSuccessfulUpdate, err)
			}
		}
		liveness(t)
	})

	t.Run("sse health", func(t *testing.T) {
		for _, path := range []string{"/sse/health", "/sse/health/"} {
			rec := callHandler(t, h, "GET", path, nil, "")
			if rec.Code != http.StatusOK {
				t.Errorf("GET %s = %d; want 200", path, rec.Code)
			}
			if diff := cmp.Diff(map[string]any{"status": "ok"}, apiJSON(t, rec.Body.Bytes())); diff != "" {
				t.Errorf("GET %s body mismatch (-want +got):\n%s", path, diff)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		rec := callHandler(t, h, "GET", "/metrics", nil, "")
		if rec.Code != http.StatusOK {
			t.Fatalf("GET /metrics = %d; want 200", rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("GET /metrics Content-Type = %q; want text/plain", ct)
		}
		if !strings.Contains(rec.Body.String(), "edge_proxy_http_requests_total") {
			t.Errorf("GET /metrics body has no request counter:\n%.500s", rec.Body)
		}
	})
}

func TestHandlersUpdatedAtHeader(t *testing.T) {
	h := newAPITestServer(t).handler()
	tests := []struct {
		name, method, path, key, body, want string
	}{
		{"flags", "GET", "/api/v1/flags/", apiClientKey, "", apiDocumentUpdatedAt},
		{"flags no slash", "GET", "/api/v1/flags", apiServerKey, "", apiDocumentUpdatedAt},
		{"flags whole second", "GET", "/api/v1/flags/", hiddenClientKey, "", hiddenDocumentUpdatedAt},
		{"feature", "GET", "/api/v1/flags/?feature=banner", apiClientKey, "", apiDocumentUpdatedAt},
		{"identities post", "POST", "/api/v1/identities/", apiClientKey, `{"identifier":"a"}`, apiDocumentUpdatedAt},
		{"identities post no slash", "POST", "/api/v1/identities", hiddenClientKey, `{"identifier":"a"}`, hiddenDocumentUpdatedAt},
		{"identities get", "GET", "/api/v1/identities/?identifier=a", apiClientKey, "", apiDocumentUpdatedAt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := callHandler(t, h, tt.method, tt.path, withKey(tt.key), tt.body)
			if rec.Code != http.StatusOK {
				t.Fatalf("%s %s = %d %s; want 200", tt.method, tt.path, rec.Code, rec.Body)
			}
			got := rec.Header().Get(updatedAtHeader)
			if got != tt.want {
				t.Errorf("%s = %q; want %q", updatedAtHeader, got, tt.want)
			}
			if _, err := strconv.ParseFloat(got, 64); err != nil || !strings.Contains(got, ".") {
				t.Errorf("%s = %q; want a float of Unix seconds", updatedAtHeader, got)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q; want application/json", ct)
			}
		})
	}
}

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
		small := newAPITestServer(t, func(c *Config) { c.Limits.MaxBodyBytes = 64 }).handler()
		rec := callHandler(t, small, "POST", "/api/v1/identities/", withKey(apiClientKey), apiPadBody(`{"identifier":"a"}`, 64))
		if rec.Code != http.StatusOK {
			t.Errorf("POST a body of exactly the limit = %d %s; want 200", rec.Code, rec.Body)
		}
		rec = callHandler(t, small, "POST", "/api/v1/identities/", withKey(apiClientKey), apiPadBody(`{"identifier":"a"}`, 65))
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

// apiFuzzSeeds are valid and invalid identities bodies for FuzzDecodeIdentity.
var apiFuzzSeeds = []string{
	`{"identifier":"alice","traits":[{"trait_key":"plan","trait_value":"premium"},{"trait_key":"age","trait_value":30}]}`,
	`{"identifier":"vip","traits":[],"transient":true}`,
	`{"identifier":"x","traits":[{"trait_key":"f","trait_value":1.5},{"trait_key":"b","trait_value":false},{"trait_key":"n","trait_value":null}]}`,
	`{"identifier":"x","traits":[{"trait_key":"big","trait_value":123456789012345678901234567890}]}`,
	`{"identifier":"x","traits":[{"trait_key":"s","trait_value":"-42"},{"trait_key":"s","trait_value":"4.20"}]}`,
	`{"identifier":"\u00e9\ud83d\ude00","traits":[{"trait_key":"\u2028","trait_value":"\"\\"}]}`,
	`{"identifier":"x","traits":[{"trait_key":"k","trait_value":1e400}]}`,
	`{"identifier":"a","traits":{"k":1}}`,
	`{"identifier":42}`,
	`{"identifier":"a","traits":[{"trait_key":7,"trait_value":1}]}`,
	`{"identifier":"a","traits":[{"trait_key":"k","trait_value":[1]}]}`,
	`{"identifier":"a"} x`,
	`[[[[[[`,
	`null`,
	"{\"identifier\":\"a\xff\"}",
	`{"identifier":"\ud800"}`,
}

// FuzzDecodeIdentity sends arbitrary bodies to POST /api/v1/identities/: the
// answer is always 200, 400 or 413 with a JSON body, never a panic or a 500,
// and the same body always gets the same answer.
func FuzzDecodeIdentity(f *testing.F) {
	for _, seed := range apiFuzzSeeds {
		f.Add([]byte(seed))
	}
	s := newAPITestServer(f)
	h := s.handler()
	post := func(t *testing.T, body []byte) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/api/v1/identities/", bytes.NewReader(body))
		req.Header.Set("X-Environment-Key", apiServerKey)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		first := post(t, body)
		switch first.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("POST %q = %d %s; want 200, 400 or 413", body, first.Code, first.Body)
		}
		if !json.Valid(first.Body.Bytes()) {
			t.Fatalf("POST %q: body %q is not valid JSON", body, first.Body)
		}
		if first.Code != http.StatusOK {
			var e errorBody
			if err := json.Unmarshal(first.Body.Bytes(), &e); err != nil || e.Status == "" || e.Message == "" {
				t.Fatalf("POST %q: error body %q lacks status and message", body, first.Body)
			}
		}
		second := post(t, body)
		if second.Code != first.Code || !bytes.Equal(second.Body.Bytes(), first.Body.Bytes()) {
			t.Fatalf("POST %q twice: %d %q then %d %q; want the same answer", body, first.Code, first.Body, second.Code, second.Body)
		}
	})
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
