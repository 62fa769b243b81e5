package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

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
