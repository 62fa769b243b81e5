package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
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

// unchangedAnswersPath records the answers the proxy gave before identities
// answers carried "variant": a SHA-256 of every status and body, per
// request. It was written by -update on the code before that change.
var unchangedAnswersPath = filepath.Join("testdata", "answers-before-variant.golden.json")

// variantField is the field identities answers carry after
// feature_state_value, with the closing brace of its flag object. A
// "variant" inside a JSON string has its quotes escaped, so only the field
// matches.
var variantField = regexp.MustCompile(`,"variant":(?:null|"(?:[^"\\]|\\.)*")\}`)

// TestAnswersUnchanged: for the golden documents (none of which sets
// hide_sensitive_data or the environment's hide_disabled_flags), every
// /api/v1/flags/ answer and every identities answer is the same bytes as
// before "variant" was added, once each identities flag object's variant is
// taken out; and every identities flag object has one.
func TestAnswersUnchanged(t *testing.T) {
	got := unchangedAnswers(t)
	if *update {
		out, err := json.MarshalIndent(got, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(unchangedAnswersPath, append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	raw, err := os.ReadFile(unchangedAnswersPath)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]string
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("answers differ from %s (-want +got):\n%s", unchangedAnswersPath, diff)
	}
}

// unchangedAnswers asks every golden document's flags (whole and by name)
// and each of its identities (GET, and POST with its traits), with the
// client and the server key, and returns the digest of each status and body,
// variant fields taken out, by request.
func unchangedAnswers(t *testing.T) map[string]string {
	t.Helper()
	inputs, err := filepath.Glob(filepath.Join("testdata", "golden", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	inputs = slices.DeleteFunc(inputs, func(f string) bool { return strings.HasSuffix(f, ".golden.json") })
	if len(inputs) < 10 {
		t.Fatalf("found %d golden inputs; want at least 10", len(inputs))
	}
	out := map[string]string{}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".json")
		var gc goldenCase
		mustUnmarshal(t, mustRead(t, in), &gc)
		var doc struct {
			APIKey        string `json:"api_key"`
			FeatureStates []struct {
				Feature struct {
					Name string `json:"name"`
				} `json:"feature"`
			} `json:"feature_states"`
		}
		mustUnmarshal(t, gc.Document, &doc)
		pair := KeyPair{ServerSideKey: "ser.unchanged", ClientSideKey: doc.APIKey}
		s := newTestServer(t, withPairs(pair))
		s.publishDoc(t, pair.ClientSideKey, gc.Document)
		h := s.handler()
		for _, key := range []string{pair.ClientSideKey, string(pair.ServerSideKey)} {
			kind := "client"
			if key == string(pair.ServerSideKey) {
				kind = "server"
			}
			digest := func(label string, bodies ...[]byte) {
				sum := sha256.Sum256(bytes.Join(bodies, []byte("\n")))
				out[name+" "+kind+" "+label] = hex.EncodeToString(sum[:16])
			}
			ask := func(label, method, path, body string) []byte {
				t.Helper()
				rec := callHandler(t, h, method, path, withKey(key), body)
				b := append([]byte(strconv.Itoa(rec.Code)+" "), rec.Body.Bytes()...)
				if strings.HasPrefix(path, "/api/v1/identities/") && rec.Code == http.StatusOK {
					b = withoutVariants(t, name+" "+kind+" "+label, b)
				}
				return b
			}
			digest("flags", ask("flags", http.MethodGet, "/api/v1/flags/", ""))
			// Each feature by name, in one digest.
			var one [][]byte
			for _, fs := range doc.FeatureStates {
				n := fs.Feature.Name
				one = append(one, ask("flags?feature="+n, http.MethodGet, "/api/v1/flags/?feature="+url.QueryEscape(n), ""))
			}
			digest("flags?feature=", one...)
			for _, gi := range gc.Identities {
				label := "GET " + gi.Identifier
				digest(label, ask(label, http.MethodGet, "/api/v1/identities/?identifier="+url.QueryEscape(gi.Identifier), ""))
				var body bytes.Buffer
				body.WriteString(`{"identifier":`)
				body.Write(mustJSON(t, gi.Identifier))
				body.WriteString(`,"traits":[`)
				for i, tr := range gi.Traits {
					if i > 0 {
						body.WriteByte(',')
					}
					body.WriteString(`{"trait_key":`)
					body.Write(mustJSON(t, tr.Key))
					body.WriteString(`,"trait_value":`)
					body.Write(tr.Value)
					body.WriteByte('}')
				}
				body.WriteString(`]}`)
				label = "POST " + gi.Identifier
				digest(label, ask(label, http.MethodPost, "/api/v1/identities/", body.String()))
			}
		}
	}
	return out
}

// withoutVariants takes each flag object's variant out of an identities
// answer, failing unless every flag object had exactly one (under -update
// it only takes them out).
func withoutVariants(t *testing.T, what string, body []byte) []byte {
	t.Helper()
	var answer struct {
		Flags []json.RawMessage `json:"flags"`
	}
	_, js, _ := bytes.Cut(body, []byte(" "))
	mustUnmarshal(t, js, &answer)
	stripped := variantField.ReplaceAll(body, []byte("}"))
	if n := len(variantField.FindAll(body, -1)); n != len(answer.Flags) && !*update {
		t.Errorf("%s: %d variant fields for %d flags", what, n, len(answer.Flags))
	}
	return stripped
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAnswersGolden serves the documents under testdata/answers and records
// what the API answers each kind of key: the environment's flags, each
// identity's (GET, and POST with its traits) and its OFREP bulk evaluation;
// -update rewrites the .golden.json files (read the diff before committing).
// Bodies are kept byte for byte, field order included.
func TestAnswersGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "answers", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	inputs = slices.DeleteFunc(inputs, func(f string) bool { return strings.HasSuffix(f, ".golden.json") })
	if len(inputs) < 3 {
		t.Fatalf("found %d inputs under testdata/answers; want at least 3", len(inputs))
	}
	for _, in := range inputs {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".json"), func(t *testing.T) {
			if !*update {
				t.Parallel()
			}
			got := goldenAnswers(t, in)
			goldenPath := strings.TrimSuffix(in, ".json") + ".golden.json"
			if *update {
				if err := os.WriteFile(goldenPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := mustRead(t, goldenPath)
			if diff := cmp.Diff(strings.Split(string(want), "\n"), strings.Split(string(got), "\n")); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", goldenPath, diff)
			}
		})
	}
}

// goldenAnswers is the golden file's text for one input: every request and
// its status and body, each body indented but otherwise as served.
func goldenAnswers(t *testing.T, path string) []byte {
	t.Helper()
	var gc goldenCase
	mustUnmarshal(t, mustRead(t, path), &gc)
	if gc.Reason == "" {
		t.Fatalf("%s: every case states its reason", path)
	}
	var doc struct {
		APIKey string `json:"api_key"`
	}
	mustUnmarshal(t, gc.Document, &doc)
	pair := KeyPair{ServerSideKey: "ser.answers", ClientSideKey: doc.APIKey}
	s := newTestServer(t, withPairs(pair))
	s.publishDoc(t, pair.ClientSideKey, gc.Document)
	h := s.handler()
	type answer struct {
		Request string          `json:"request"`
		Status  int             `json:"status"`
		Body    json.RawMessage `json:"body"`
	}
	answers := []answer{}
	for _, key := range []string{pair.ClientSideKey, string(pair.ServerSideKey)} {
		kind := "client key"
		if key == string(pair.ServerSideKey) {
			kind = "server key"
		}
		ask := func(method, path, body string) {
			rec := callHandler(t, h, method, path, withKey(key), body)
			label := kind + ": " + method + " " + path
			if body != "" {
				label += " " + body
			}
			answers = append(answers, answer{label, rec.Code, bytes.Clone(rec.Body.Bytes())})
		}
		ask(http.MethodGet, "/api/v1/flags/", "")
		for _, gi := range gc.Identities {
			ask(http.MethodGet, "/api/v1/identities/?identifier="+url.QueryEscape(gi.Identifier), "")
			traits := make([]map[string]json.RawMessage, 0, len(gi.Traits))
			context := map[string]json.RawMessage{"targetingKey": mustJSON(t, gi.Identifier)}
			for _, tr := range gi.Traits {
				traits = append(traits, map[string]json.RawMessage{"trait_key": mustJSON(t, tr.Key), "trait_value": tr.Value})
				context[tr.Key] = tr.Value
			}
			ask(http.MethodPost, "/api/v1/identities/", string(mustJSON(t, map[string]any{"identifier": gi.Identifier, "traits": traits})))
			ask(http.MethodPost, "/ofrep/v1/evaluate/flags", string(mustJSON(t, map[string]any{"context": context})))
		}
	}
	out, err := json.MarshalIndent(struct {
		Reason  string   `json:"reason"`
		Answers []answer `json:"answers"`
	}{gc.Reason, answers}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

// TestConformanceThroughAnswers runs the cases of Flagsmith's engine
// conformance suite whose results carry "variant" through the API: each
// case's context becomes an environment document, served to the server
// key, and every expected flag's variant, value and enabled must be what
// the identities answer shows (the environment's flags, which carry no
// variant, for a case without an identity). A request cannot choose its
// identity key: the proxy, like Flagsmith's Edge API, hashes
// "<environment key>_<identifier>". A case whose identity brings another
// key (the suite's identities from Flagsmith's database bring their id) is
// answered by the same writer, handed the identity with its key.
func TestConformanceThroughAnswers(t *testing.T) {
	ran := 0
	for _, file := range conformanceCases(t) {
		var tc struct {
			Context evalContext `json:"context"`
			Result  struct {
				Flags map[string]map[string]json.RawMessage `json:"flags"`
			} `json:"result"`
		}
		mustUnmarshal(t, stripJSONComments(mustRead(t, file)), &tc)
		hasVariant := false
		for _, fl := range tc.Result.Flags {
			_, ok := fl["variant"]
			hasVariant = hasVariant || ok
		}
		if !hasVariant {
			continue
		}
		ran++
		name := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := &tc.Context
			pair := KeyPair{ServerSideKey: "ser.conformance", ClientSideKey: ctx.Environment.Key}
			s := newTestServer(t, withPairs(pair))
			s.publishDoc(t, pair.ClientSideKey, documentOf(t, ctx))
			var got []map[string]json.RawMessage
			switch id := ctx.Identity; {
			case id == nil:
				rec := callHandler(t, s.handler(), http.MethodGet, "/api/v1/flags/", withKey(string(pair.ServerSideKey)), "")
				mustUnmarshal(t, rec.Body.Bytes(), &got)
			case id.Key == "" || id.Key == ctx.Environment.Key+"_"+id.Identifier:
				traits := []map[string]json.RawMessage{}
				for _, tr := range id.Traits {
					traits = append(traits, map[string]json.RawMessage{"trait_key": mustJSON(t, tr.Key), "trait_value": tr.Value})
				}
				body := mustJSON(t, map[string]any{"identifier": id.Identifier, "traits": traits})
				rec := callHandler(t, s.handler(), http.MethodPost, "/api/v1/identities/", withKey(string(pair.ServerSideKey)), string(body))
				got = identitiesFlags(t, rec)
			default:
				withKey := identity{identifier: id.Identifier, key: id.Key}
				for _, tr := range id.Traits {
					withKey.traits = append(withKey.traits, trait{key: tr.Key, value: valueFromJSON(tr.Value)})
				}
				rec := httptest.NewRecorder()
				buf := getBuffers()
				s.writeIdentity(reply{w: rec}, serverKey,
					s.environments()[0].snap.Load(), buf, withKey)
				putBuffers(buf)
				got = identitiesFlags(t, rec)
			}
			byName := map[string]map[string]json.RawMessage{}
			for _, fl := range got {
				var feature struct {
					Name string `json:"name"`
				}
				mustUnmarshal(t, fl["feature"], &feature)
				byName[feature.Name] = fl
			}
			for name, want := range tc.Result.Flags {
				fl, ok := byName[name]
				if !ok {
					t.Errorf("flag %q missing from the answer", name)
					continue
				}
				gotVariant, hasVariant := fl["variant"]
				if ctx.Identity == nil {
					gotVariant = json.RawMessage("null")
					if hasVariant {
						t.Errorf("flag %q: the environment's flags carry a variant", name)
					}
				} else if !hasVariant {
					t.Errorf("flag %q: no variant in the identities answer", name)
				}
				for _, f := range []struct {
					field     string
					got, want json.RawMessage
				}{
					{"variant", gotVariant, want["variant"]},
					{"value", fl["feature_state_value"], want["value"]},
					{"enabled", fl["enabled"], want["enabled"]},
				} {
					if f.want == nil {
						continue
					}
					if diff := cmp.Diff(decodeLoose(t, f.want), decodeLoose(t, f.got)); diff != "" {
						t.Errorf("flag %q: %s = %s; want %s", name, f.field, f.got, f.want)
					}
				}
			}
		})
	}
	if ran == 0 {
		t.Fatal("no case of the suite has a variant in its results")
	}
}

// identitiesFlags is the flags of a 200 identities answer.
func identitiesFlags(t *testing.T, rec *httptest.ResponseRecorder) []map[string]json.RawMessage {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("identities answer %d: %s", rec.Code, rec.Body)
	}
	var answer struct {
		Flags []map[string]json.RawMessage `json:"flags"`
	}
	mustUnmarshal(t, rec.Body.Bytes(), &answer)
	return answer.Flags
}

// documentOf writes an evaluation context as the environment document that
// maps to it (document.go's mapping, backwards): a feature's key is its
// django_id when it is a number, else its featurestate_uuid; a variant's
// priority its id (the nil UUID for 0); segments keyed by number.
func documentOf(t *testing.T, ctx *evalContext) []byte {
	t.Helper()
	type option struct {
		Value json.RawMessage `json:"value"`
		Key   *string         `json:"key,omitempty"`
	}
	type mvValue struct {
		Option     option          `json:"multivariate_feature_option"`
		Percentage json.Number     `json:"percentage_allocation"`
		ID         json.RawMessage `json:"id,omitempty"`
		UUID       string          `json:"mv_fs_value_uuid,omitempty"`
	}
	type featureState struct {
		Feature struct {
			ID   json.RawMessage `json:"id"`
			Name string          `json:"name"`
			Type string          `json:"type"`
		} `json:"feature"`
		Enabled          bool             `json:"enabled"`
		DjangoID         json.RawMessage  `json:"django_id"`
		FeatureStateUUID string           `json:"featurestate_uuid,omitempty"`
		Value            json.RawMessage  `json:"feature_state_value"`
		Segment          *json.RawMessage `json:"feature_segment"`
		MV               []mvValue        `json:"multivariate_feature_state_values"`
	}
	ids := map[string]json.RawMessage{} // feature name -> id, shared by its overrides
	for i, f := range ctx.Features {
		var meta struct {
			ID json.RawMessage `json:"id"`
		}
		if len(f.Value.Metadata) > 0 {
			mustUnmarshal(t, f.Value.Metadata, &meta)
		}
		if meta.ID == nil {
			meta.ID = json.RawMessage(strconv.Itoa(100000 + i))
		}
		ids[f.Value.Name] = meta.ID
	}
	numeric := regexp.MustCompile(`^[1-9][0-9]*$`)
	state := func(f featureContext) featureState {
		var fs featureState
		fs.Feature.ID, fs.Feature.Name, fs.Feature.Type = ids[f.Name], f.Name, "STANDARD"
		if fs.Feature.ID == nil {
			t.Skipf("an override of %q, which is no feature of the context", f.Name)
		}
		fs.Enabled, fs.Value, fs.DjangoID = f.Enabled, f.Value, json.RawMessage("null")
		if len(fs.Value) == 0 {
			fs.Value = json.RawMessage("null")
		}
		if numeric.MatchString(f.Key) {
			fs.DjangoID = json.RawMessage(f.Key)
		} else {
			fs.FeatureStateUUID = f.Key
		}
		if len(f.Priority) > 0 {
			p := json.RawMessage(`{"priority":` + string(f.Priority) + `}`)
			fs.Segment = &p
		}
		for _, v := range f.Variants {
			mv := mvValue{Option: option{Value: v.Value, Key: v.Key}, Percentage: v.Weight}
			switch p := string(v.Priority); {
			case p == "0":
				mv.UUID = "00000000-0000-0000-0000-000000000000"
			case numeric.MatchString(p):
				mv.ID = v.Priority
			default:
				t.Skipf("variant priority %s has no document form", p)
			}
			fs.MV = append(fs.MV, mv)
		}
		if fs.MV == nil {
			fs.MV = []mvValue{}
		}
		return fs
	}
	type rule struct {
		Type       string `json:"type"`
		Conditions []struct {
			Operator string          `json:"operator"`
			Property string          `json:"property_"`
			Value    json.RawMessage `json:"value"`
		} `json:"conditions"`
		Rules []rule `json:"rules"`
	}
	var rules func([]ruleContext) []rule
	rules = func(in []ruleContext) []rule {
		out := []rule{}
		for _, r := range in {
			d := rule{Type: r.Type, Rules: rules(r.Rules)}
			for _, c := range r.Conditions {
				d.Conditions = append(d.Conditions, struct {
					Operator string          `json:"operator"`
					Property string          `json:"property_"`
					Value    json.RawMessage `json:"value"`
				}{c.Operator, c.Property, c.Value})
			}
			out = append(out, d)
		}
		return out
	}
	type segment struct {
		ID            json.RawMessage `json:"id"`
		Name          string          `json:"name"`
		Rules         []rule          `json:"rules"`
		FeatureStates []featureState  `json:"feature_states"`
	}
	doc := map[string]any{
		"api_key":            ctx.Environment.Key,
		"name":               ctx.Environment.Name,
		"identity_overrides": []any{},
	}
	var states []featureState
	for _, f := range ctx.Features {
		states = append(states, state(f.Value))
	}
	segments := []segment{}
	for _, sm := range ctx.Segments {
		if !numeric.MatchString(sm.Key) {
			t.Skipf("segment key %q is no document id", sm.Key)
		}
		sg := segment{ID: json.RawMessage(sm.Key), Name: sm.Value.Name, Rules: rules(sm.Value.Rules), FeatureStates: []featureState{}}
		for _, o := range sm.Value.Overrides {
			sg.FeatureStates = append(sg.FeatureStates, state(o))
		}
		segments = append(segments, sg)
	}
	doc["feature_states"] = states
	doc["project"] = map[string]any{"hide_disabled_flags": false, "server_key_only_feature_ids": []any{}, "segments": segments}
	return mustJSON(t, doc)
}

// TestHideSettings: the document's top-level hide_disabled_flags, when not
// null, decides over the project's whether client keys see disabled flags
// (flags, identities, OFREP); server keys see them all; hide_sensitive_data
// true answers identities with no traits.
func TestHideSettings(t *testing.T) {
	for _, c := range []struct {
		name                         string
		environment, project, hidden any // JSON values; nil: the field is absent
		wantClientSees               bool
	}{
		{"absent, project shows", nil, false, nil, true},
		{"absent, project hides", nil, true, nil, false},
		{"null defers to the project", json.RawMessage("null"), true, nil, false},
		{"environment hides over the project", true, false, nil, false},
		{"environment shows over the project", false, true, nil, true},
		{"sensitive data hidden", nil, false, true, true},
		{"sensitive data shown", nil, false, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw := testDocument(pairA.ClientSideKey, "2026-06-08T10:00:00Z", "on", func(doc map[string]any) {
				doc["project"].(map[string]any)["hide_disabled_flags"] = c.project
				if c.environment != nil {
					doc["hide_disabled_flags"] = c.environment
				}
				if c.hidden != nil {
					doc["hide_sensitive_data"] = c.hidden
				}
				doc["feature_states"].([]any)[0].(map[string]any)["enabled"] = false
			})
			s := newTestServer(t, withPairs(pairA))
			s.publishDoc(t, pairA.ClientSideKey, raw)
			body := `{"identifier":"ada","traits":[{"trait_key":"plan","trait_value":"pro"}]}`
			for _, key := range []string{pairA.ClientSideKey, string(pairA.ServerSideKey)} {
				sees := key != pairA.ClientSideKey || c.wantClientSees
				flags := callHandler(t, s.handler(), http.MethodGet, "/api/v1/flags/", withKey(key), "")
				if got := strings.Contains(flags.Body.String(), `"banner"`); got != sees {
					t.Errorf("%s: flags show the disabled flag: %t; want %t", maskedKey(key), got, sees)
				}
				rec := callHandler(t, s.handler(), http.MethodPost, "/api/v1/identities/", withKey(key), body)
				if got := strings.Contains(rec.Body.String(), `"banner"`); got != sees {
					t.Errorf("%s: identities show the disabled flag: %t; want %t", maskedKey(key), got, sees)
				}
				ofrep := ofrepPost(t, s.handler(), "/ofrep/v1/evaluate/flags", withKey(key), `{"context":{"targetingKey":"ada"}}`)
				if got := strings.Contains(ofrep.Body.String(), `"banner"`); got != sees {
					t.Errorf("%s: OFREP shows the disabled flag: %t; want %t", maskedKey(key), got, sees)
				}
				var answer struct {
					Traits []json.RawMessage `json:"traits"`
				}
				mustUnmarshal(t, rec.Body.Bytes(), &answer)
				wantTraits := 1
				if c.hidden == true {
					wantTraits = 0
				}
				if len(answer.Traits) != wantTraits {
					t.Errorf("%s: identities answer has %d traits; want %d: %s", maskedKey(key), len(answer.Traits), wantTraits, rec.Body)
				}
			}
		})
	}
}
