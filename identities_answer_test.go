package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestIdentityResponsesMatchPlainEvaluation checks the two shortcuts the
// identity path takes against a plain reading of the document, on the golden
// documents and on scaled ones: identity overrides are a lookup by
// identifier, where the plain mapping makes each override group a segment
// with one IN condition of the strongest priority; and flags an identity
// leaves as in the environment are copied from the environment's body, where
// the plain response encodes every flag with encoding/json. The answers must
// be byte for byte the same, for both kinds of key.
func TestIdentityResponsesMatchPlainEvaluation(t *testing.T) {
	type docCase struct {
		name       string
		raw        []byte
		identities []goldenIdentity
	}
	var cases []docCase
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, ".golden.json") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var gc goldenCase
		if err := json.Unmarshal(data, &gc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cases = append(cases, docCase{filepath.Base(f), gc.Document, gc.Identities})
		if strings.Contains(f, "identity_overrides") {
			// Many groups, identifiers in several of them, and every
			// identity its own value.
			scaled := scaleDocument(t, gc.Document, 3, 400, true)
			cases = append(cases, docCase{filepath.Base(f) + "/scaled", withRepeatedIdentifiers(t, scaled), gc.Identities})
		}
	}
	demo, err := os.ReadFile(filepath.Join("examples", "environment-document.json"))
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, docCase{"demo/scaled", scaleDocument(t, demo, 4, 300, false), nil})
	// Large enough that the flags lists are held gzipped only.
	cases = append(cases, docCase{"demo/shared-view", scaleDocument(t, demo, 700, 10, false), nil})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			snap, err := newSnapshot(c.raw)
			if err != nil {
				t.Fatal(err)
			}
			plain := newPlainEvaluator(t, c.raw)
			for _, id := range differentialIdentities(t, c.raw, c.identities) {
				for _, kind := range []keyKind{clientKey, serverKey} {
					flags := snap.engine.evaluate(nil, id, nil)
					got := assembledFlags(snap, flags, kind)
					want := plain.flags(t, id, kind)
					if !bytes.Equal(got, want) {
						t.Fatalf("identity %q (traits %v), key kind %d:\n got %s\nwant %s", id.identifier, id.traits, kind, got, want)
					}
				}
			}
			if gzipOnly := snap.views[clientKey].flags.body == nil; gzipOnly != strings.HasSuffix(c.name, "shared-view") {
				t.Fatalf("client view held gzipped only: %t", gzipOnly)
			}
			for _, kind := range []keyKind{clientKey, serverKey} {
				got := viewBody(&snap.views[kind])
				if want := "[" + string(plain.flags(t, nil, kind)) + "]"; string(got) != want {
					t.Fatalf("environment flags, key kind %d:\n got %s\nwant %s", kind, got, want)
				}
			}
		})
	}
}

// goldenIdentity is an identity of a golden case (goldenCase.Identities).
type goldenIdentity = struct {
	Identifier string                   `json:"identifier"`
	Traits     ordered[json.RawMessage] `json:"traits"`
}

// plainEvaluator evaluates a document as its plain mapping reads: identity
// override groups as segments, every flag encoded by encoding/json.
type plainEvaluator struct {
	engine       *engine
	hideDisabled bool
	serverOnly   map[string]bool
}

func newPlainEvaluator(t testing.TB, raw []byte) *plainEvaluator {
	t.Helper()
	doc, err := parseDocument(raw)
	if err != nil {
		t.Fatal(err)
	}
	ctx, groups, err := doc.evalContext()
	if err != nil {
		t.Fatal(err)
	}
	// Stronger than any priority a document holds: the groups' −∞.
	strongest := json.RawMessage("-1" + strings.Repeat("0", 60))
	for gi, g := range groups {
		ids, err := json.Marshal(g.identifiers)
		if err != nil {
			t.Fatal(err)
		}
		seg := segmentContext{
			Name:     "identity_overrides",
			Metadata: json.RawMessage(`{"source":"identity_overrides"}`),
			Rules: []ruleContext{{Type: "ALL", Conditions: []conditionContext{
				{Property: "$.identity.identifier", Operator: opIn.String(), Value: ids},
			}}},
		}
		for _, o := range g.overrides {
			o.Priority = strongest
			seg.Overrides = append(seg.Overrides, o)
		}
		ctx.Segments = append(ctx.Segments, member[segmentContext]{Key: fmt.Sprintf("identity-override-group-%d", gi), Value: seg})
	}
	e, err := compileContext(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &plainEvaluator{engine: e, serverOnly: map[string]bool{}}
	p.hideDisabled = doc.Project.HideDisabledFlags != nil && *doc.Project.HideDisabledFlags
	if doc.HideDisabledFlags != nil {
		p.hideDisabled = *doc.HideDisabledFlags
	}
	for _, id := range doc.Project.ServerKeyOnlyFeatureIDs {
		p.serverOnly[id.String()] = true
	}
	return p
}

// flags is the comma-separated flag objects the API shows the identity (nil:
// the environment) with this kind of key; an identity's carry its variant.
func (p *plainEvaluator) flags(t testing.TB, id *identity, kind keyKind) []byte {
	t.Helper()
	type apiFeature struct {
		ID   json.RawMessage `json:"id"`
		Name string          `json:"name"`
		Type string          `json:"type"`
	}
	type apiFlag struct {
		Feature apiFeature      `json:"feature"`
		Enabled bool            `json:"enabled"`
		Value   json.RawMessage `json:"feature_state_value"`
	}
	type identityFlag struct {
		apiFlag
		Variant *string `json:"variant"`
	}
	var parts [][]byte
	for _, fl := range p.engine.evaluate(nil, id, nil) {
		f := fl.source
		if kind == clientKey && (p.serverOnly[f.apiID] || (!f.enabled && p.hideDisabled)) {
			continue
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		var v any = apiFlag{apiFeature{json.RawMessage(f.apiID), f.name, f.apiType}, f.enabled, fl.value()}
		if id != nil {
			idf := identityFlag{apiFlag: v.(apiFlag)}
			switch {
			case fl.variant >= 0:
				mustUnmarshal(t, f.variants[fl.variant].key, &idf.Variant)
			case fl.variant == controlValue:
				control := "control"
				idf.Variant = &control
			}
			v = idf
		}
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
	}
	return bytes.Join(parts, []byte(","))
}

// withRepeatedIdentifiers lists some overridden identifiers a second time in
// another override, with other features, so that they belong to two groups.
func withRepeatedIdentifiers(t testing.TB, raw []byte) []byte {
	t.Helper()
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	overrides := doc["identity_overrides"].([]any)
	n := len(overrides)
	for i := 0; i < n; i += 7 {
		dup := deepCopyJSON(overrides[(i+3)%n]).(map[string]any)
		dup["identifier"] = overrides[i].(map[string]any)["identifier"]
		overrides = append(overrides, dup)
	}
	doc["identity_overrides"] = overrides
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// differentialIdentities are the golden identities plus, for every
// overridden identifier, that identity, one whose trait named like the
// identifier's path claims it, and identifiers that coerce to numbers.
func differentialIdentities(t testing.TB, raw []byte, golden []goldenIdentity) []*identity {
	t.Helper()
	var doc struct {
		IdentityOverrides []struct {
			Identifier string `json:"identifier"`
		} `json:"identity_overrides"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var out []*identity
	for _, gi := range golden {
		id := &identity{identifier: gi.Identifier}
		for _, tr := range gi.Traits {
			id.traits = append(id.traits, trait{key: tr.Key, value: valueFromJSON(tr.Value)})
		}
		out = append(out, id)
	}
	for i, o := range doc.IdentityOverrides {
		out = append(out, &identity{identifier: o.Identifier})
		if i%5 == 0 {
			out = append(out, &identity{identifier: "someone_else", traits: []trait{
				{key: "$.identity.identifier", value: coerceString(o.Identifier)},
			}})
		}
	}
	for _, s := range []string{"42", "042", "-7", "4.0", "True", "nobody"} {
		out = append(out, &identity{identifier: s})
	}
	return out
}

// TestLargeIdentityResponseInParts: an identity response too large to copy
// into one buffer is written from its parts, most of them straight from the
// environment's body, and one for thousands of features is evaluated and
// written a range of features at a time (without a Content-Length); plain
// and gzipped, each is the same bytes as the assembled response.
func TestLargeIdentityResponseInParts(t *testing.T) {
	for _, size := range []struct {
		name     string
		copies   int
		streamed bool
	}{
		{"parts", 40, false},
		{"streamed", 400, true},
	} {
		t.Run(size.name, func(t *testing.T) {
			testLargeIdentityResponse(t, size.copies, size.streamed)
		})
	}
}

func testLargeIdentityResponse(t *testing.T, copies int, streamed bool) {
	s := newTestServer(t, withPairs(demoPair))
	raw := scaleDocument(t, demoDocument(t, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), "hi"), copies, 50, true)
	s.publishDoc(t, demoClientKey, raw)
	snap := s.environments()[0].snap.Load()
	if got := len(snap.identities.base) > streamedBodyBytes; got != streamed {
		t.Fatalf("identities flags body of %d bytes: streamed = %t; the case wants %t", len(snap.identities.base), got, streamed)
	}
	for _, who := range []struct{ identifier, traits, sent string }{
		{"carol", `[{"trait_key":"plan","trait_value":"premium"}]`, `[{"trait_key":"plan","trait_value":"premium"}]`},
		{"vip_000007", `[]`, ``},
	} {
		for _, kind := range []keyKind{clientKey, serverKey} {
			key := demoClientKey
			if kind == serverKey {
				key = demoServerKey
			}
			id := &identity{identifier: who.identifier}
			if who.sent != "" {
				id.traits = []trait{{key: "plan", value: coerceString("premium")}}
			}
			flags := assembledFlags(snap, snap.engine.evaluate(nil, id, nil), kind)
			want := `{"identifier":"` + who.identifier + `","traits":` + who.traits + `,"flags":[` + string(flags) + `]}`
			if len(want) <= maxAssembledBytes {
				t.Fatalf("response of %d bytes is not large enough to be written in parts", len(want))
			}
			body := `{"identifier":"` + who.identifier + `","traits":` + who.traits + `}`
			for _, gz := range []bool{false, true} {
				headers := withKey(key)
				if gz {
					headers["Accept-Encoding"] = "gzip"
				}
				rec := callHandler(t, s.handler(), http.MethodPost, "/api/v1/identities/", headers, body)
				got := rec.Body.Bytes()
				if gz {
					if rec.Header().Get("Content-Encoding") != "gzip" {
						t.Fatalf("%s, gzip accepted: Content-Encoding = %q", who.identifier, rec.Header().Get("Content-Encoding"))
					}
					zr, err := gzip.NewReader(bytes.NewReader(got))
					if err != nil {
						t.Fatal(err)
					}
					if got, err = io.ReadAll(zr); err != nil {
						t.Fatal(err)
					}
				} else if cl, wantCL := rec.Header().Get("Content-Length"), strconv.Itoa(len(want)); streamed && cl != "" || !streamed && cl != wantCL {
					t.Errorf("%s: Content-Length = %q; want %q (streamed %t)", who.identifier, cl, wantCL, streamed)
				}
				if rec.Code != http.StatusOK || string(got) != want {
					t.Fatalf("%s, kind %d, gzip %t: %d, body differs from the assembled response (got %d bytes, want %d)",
						who.identifier, kind, gz, rec.Code, len(got), len(want))
				}
			}
		}
	}
}

// assembledFlags is an identity's flags as kind sees them, comma separated,
// as one buffer (flagParts, assembled).
func assembledFlags(s *snapshot, flags []evalFlag, kind keyKind) []byte {
	var p responseParts
	p.reset(nil, s.identities.base)
	s.flagParts(&p, flags, 0, kind, true)
	return p.assemble(nil)
}
