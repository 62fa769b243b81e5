package main

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// explainServer serves the demo document.
func explainServer(t testing.TB) http.Handler {
	t.Helper()
	raw, err := os.ReadFile(demoDocumentPath)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, withPairs(demoPair))
	s.publishDoc(t, demoClientKey, raw)
	return s.handler()
}

func postExplain(t testing.TB, h http.Handler, key, body string) explanation {
	t.Helper()
	rec := callHandler(t, h, http.MethodPost, "/proxy/explain", withKey(key), body)
	if rec.Code != http.StatusOK {
		t.Fatalf("POST /proxy/explain = %d %s; want 200", rec.Code, rec.Body)
	}
	var ex explanation
	if err := json.Unmarshal(rec.Body.Bytes(), &ex); err != nil {
		t.Fatalf("explain body %s: %v", rec.Body, err)
	}
	return ex
}

// TestExplainKeys: the explanation shows segment rules and server-only
// features, so only a server key may ask; errors are JSON.
func TestExplainKeys(t *testing.T) {
	h := explainServer(t)
	body := `{"identifier": "carol"}`
	tests := []struct {
		name, key string
		code      int
	}{
		{"client key", demoClientKey, http.StatusUnauthorized},
		{"unknown key", "ser.not-a-configured-key", http.StatusUnauthorized},
		{"no key", "", http.StatusUnauthorized},
		{"server key", demoServerKey, http.StatusOK},
	}
	for _, tt := range tests {
		rec := callHandler(t, h, http.MethodPost, "/proxy/explain", withKey(tt.key), body)
		if rec.Code != tt.code || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
			t.Errorf("%s: %d %q; want %d JSON", tt.name, rec.Code, rec.Header().Get("Content-Type"), tt.code)
		}
		if tt.code != http.StatusOK && !json.Valid(rec.Body.Bytes()) {
			t.Errorf("%s: error body %q is not JSON", tt.name, rec.Body)
		}
	}
	if rec := callHandler(t, h, http.MethodPost, "/proxy/explain", withKey(demoClientKey), body); !strings.Contains(rec.Body.String(), "server-side key") {
		t.Errorf("client key: body %s; want it to say a server-side key is needed", rec.Body)
	}
	// The body is read by the identities decoder, with its errors.
	for _, bad := range []string{`{"traits": []}`, `{"identifier": ""}`, `[1]`, `{"identifier": "x", "traits": [{"trait_key": 1}]}`} {
		ident := callHandler(t, h, http.MethodPost, "/api/v1/identities/", withKey(demoServerKey), bad)
		rec := callHandler(t, h, http.MethodPost, "/proxy/explain", withKey(demoServerKey), bad)
		if rec.Code != http.StatusBadRequest || rec.Body.String() != ident.Body.String() {
			t.Errorf("explain %s = %d %s; want 400 as the identities endpoint answers: %s", bad, rec.Code, rec.Body, ident.Body)
		}
	}
}

// TestExplainMatchesIdentities: every flag of the explanation is the one
// POST /api/v1/identities/ gives for the same body (one engine), and the
// reasons are the engine's words.
func TestExplainMatchesIdentities(t *testing.T) {
	h := explainServer(t)
	bodies := []string{
		`{"identifier": "carol", "traits": [{"trait_key": "plan", "trait_value": "premium"}, {"trait_key": "country", "trait_value": "FR"}]}`,
		`{"identifier": "vip@example.com"}`,
		`{"identifier": "dave", "traits": [{"trait_key": "logins", "trait_value": 500}, {"trait_key": "plan", "trait_value": "free"}]}`,
	}
	for _, body := range bodies {
		rec := callHandler(t, h, http.MethodPost, "/api/v1/identities/", withKey(demoServerKey), body)
		var ident struct {
			Flags []struct {
				Feature struct {
					Name string `json:"name"`
				} `json:"feature"`
				Enabled bool            `json:"enabled"`
				Value   json.RawMessage `json:"feature_state_value"`
				Variant json.RawMessage `json:"variant"`
			} `json:"flags"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &ident); err != nil {
			t.Fatal(err)
		}
		ex := postExplain(t, h, demoServerKey, body)
		want, got := map[string]string{}, map[string]string{}
		for _, f := range ident.Flags {
			variant := string(f.Variant)
			if variant == "" { // encoding/json leaves a RawMessage nil for null
				variant = "null"
			}
			want[f.Feature.Name] = string(compactJSON(f.Value)) + " " + variant + " " + strconvBool(f.Enabled)
		}
		for _, f := range ex.Flags {
			got[f.Feature] = string(f.Value) + " " + string(f.Variant) + " " + strconvBool(f.Enabled)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("explain %s: flags differ from the identities answer (-want +got):\n%s", body, diff)
		}
	}

	reasons := func(ex explanation) map[string]string {
		m := map[string]string{}
		for _, f := range ex.Flags {
			m[f.Feature] = f.Reason
		}
		return m
	}
	carol := postExplain(t, h, demoServerKey, bodies[0])
	r := reasons(carol)
	for _, f := range carol.Flags {
		if f.Feature == "checkout_button_colour" && string(f.Variant) != `"orange"` {
			t.Errorf("carol: variant of checkout_button_colour = %s; want \"orange\" (the split's option key)", f.Variant)
		}
	}
	for feature, want := range map[string]string{
		"max_upload_mb":          "TARGETING_MATCH; segment=premium_users",
		"welcome_message":        "DEFAULT",
		"checkout_button_colour": "SPLIT; weight=50.0",
	} {
		if r[feature] != want {
			t.Errorf("carol: reason of %s = %q; want %q", feature, r[feature], want)
		}
	}
	if diff := cmp.Diff([]string{"premium_users", "european_users"}, carol.Segments); diff != "" {
		t.Errorf("carol: segments differ (-want +got):\n%s", diff)
	}
	vip := postExplain(t, h, demoServerKey, bodies[1])
	if got := reasons(vip)["dark_mode"]; got != "TARGETING_MATCH; segment=identity_overrides" {
		t.Errorf("vip: reason of dark_mode = %q; want the identity override", got)
	}
	if !strings.Contains(strings.Join(vip.Segments, ","), "identity_overrides") {
		t.Errorf("vip: segments %q; want identity_overrides among them", vip.Segments)
	}
	for _, f := range carol.Flags {
		if want := f.Feature == "billing_provider"; f.ServerOnly != want {
			t.Errorf("carol: %s server_only = %t; want %t", f.Feature, f.ServerOnly, want)
		}
	}
}

// TestExplainSegmentNotMatched: for a segment the identity is not in, the
// first rule that failed and the trait value its condition read, after
// the engine's coercion ("5" is read as the number 5).
func TestExplainSegmentNotMatched(t *testing.T) {
	h := explainServer(t)
	ex := postExplain(t, h, demoServerKey, `{"identifier": "erin", "traits": [
		{"trait_key": "logins", "trait_value": "5"}, {"trait_key": "plan", "trait_value": "premium"}]}`)
	misses := map[string]segmentMiss{}
	for _, m := range ex.SegmentsNotMatched {
		misses[m.Name] = m
	}
	if _, in := misses["premium_users"]; in {
		t.Errorf("premium_users listed as not matched; erin's plan is premium")
	}
	power, ok := misses["power_users"]
	if !ok || power.Rule == nil {
		t.Fatalf("segments not matched = %+v; want power_users with its failed rule", ex.SegmentsNotMatched)
	}
	// power_users: ALL of [ANY of [logins > 100, team_size >= 10], NONE of [plan = free]].
	want := &ruleMiss{Type: "ANY", Why: "none of its sub-rules holds; the first:", SubRule: &ruleMiss{
		Type: "ALL", Why: "this condition does not hold",
		Conditions: []conditionRead{{Property: "logins", Operator: "GREATER_THAN", Value: "100", Read: json.RawMessage("5"), Holds: false}},
	}}
	if diff := cmp.Diff(want, power.Rule); diff != "" {
		t.Errorf("power_users failed rule differs (-want +got):\n%s", diff)
	}
	beta := misses["beta_testers"]
	if beta.Rule == nil || len(beta.Rule.Conditions) != 1 || beta.Rule.Conditions[0].Property != "beta_tester" ||
		string(beta.Rule.Conditions[0].Read) != "null" {
		t.Errorf("beta_testers failed rule = %+v; want beta_tester EQUAL, read null (not set)", beta.Rule)
	}
}

func strconvBool(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
