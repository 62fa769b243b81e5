package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

// decodeForTest runs the request decoder as the identities handler does and
// returns what it decoded: the identifier, the traits coerced for the
// engine (only those named in names, unless names is nil) and the traits as
// sent, for the response.
func decodeForTest(body []byte, names map[string]string) (string, []trait, []sentTrait, error) {
	var buf decodedTraits
	identifier, err := decodeIdentityBody(body, &buf, identityLimits{maxTraits: 1000, maxTraitKeyLength: 200, traitNames: names})
	return identifier, buf.traits, buf.sent, err
}

// FuzzIdentityBodyMatchesEncodingJSON checks the hand-written decoder
// against encoding/json: it calls a body malformed exactly when
// encoding/json does; it decodes the identifier, the trait keys and the
// trait values the same way; the bytes it echoes back decode to what was
// sent; and with the environment's trait names it keeps exactly the traits
// so named, under the interned name.
func FuzzIdentityBodyMatchesEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`{"identifier":"a","traits":[{"trait_key":"k","trait_value":1.5e3}]}`,
		`{"identifier":"\u00e9\ud83d\ude00\n","traits":null,"transient":false}`,
		`{"identifier":"x","traits":[{"trait_key":"a\"b","trait_value":"\ud800"}],"extra":{"deep":[1,[2,{"x":null}]]}}`,
		`{"identifier":"x","traits":[{"trait_key":"n","trait_value":"42"},{"trait_key":"n","trait_value":-0.0},{"trait_key":"\u006e"}]}`,
		`{"identifier":"x","traits":[{"trait_value":true,"trait_key":"b","trait_key":"c"},{"trait_key":"s","trait_value":"1\u002e5"}],"traits":[{"trait_key":"z","trait_value":null}]}`,
		`{"identifier":"x"} `, `{"identifier":"x",}`, `[`, `{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":"\x"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		identifier, coerced, echoed, err := decodeForTest(body, nil)
		if !utf8.Valid(body) {
			// encoding/json accepts invalid UTF-8; the proxy refuses it.
			if err == nil || err.Error() != "body: not valid UTF-8" {
				t.Fatalf("decodeIdentityBody(%q) = %v; want the invalid UTF-8 error", body, err)
			}
			return
		}
		valid := json.Valid(body)
		malformed := err != nil && (strings.HasPrefix(err.Error(), "body: malformed") || strings.HasPrefix(err.Error(), "body: not valid UTF-8") || strings.HasPrefix(err.Error(), "body: empty"))
		if valid && malformed && !strings.Contains(err.Error(), "nested too deeply") {
			t.Fatalf("decodeIdentityBody(%q) = %v; encoding/json finds it valid", body, err)
		}
		if !valid && err == nil {
			t.Fatalf("decodeIdentityBody(%q) accepted a body encoding/json rejects", body)
		}
		if err != nil {
			return
		}
		// Keys are matched exactly, as in Python (encoding/json's struct
		// decoding would also accept "Identifier"); numbers keep their text.
		want, ok := decodeObject(body)
		if !ok {
			t.Fatalf("decodeIdentityBody(%q) accepted what encoding/json cannot map", body)
		}
		if identifier != want["identifier"] {
			t.Fatalf("identifier of %q = %q; want %v", body, identifier, want["identifier"])
		}
		traits, _ := want["traits"].([]any)
		if len(echoed) != len(traits) || len(coerced) != len(traits) {
			t.Fatalf("traits of %q: %d echoed and %d coerced; want %d", body, len(echoed), len(coerced), len(traits))
		}
		for i, tr := range traits {
			wantKey, wantValue := tr.(map[string]any)["trait_key"], tr.(map[string]any)["trait_value"]
			var echoedKey string
			if err := json.Unmarshal(echoed[i].key, &echoedKey); err != nil || echoedKey != wantKey {
				t.Fatalf("trait %d of %q: echoed key %s = %q (%v); want %v", i, body, echoed[i].key, echoedKey, err, wantKey)
			}
			echoedValue, ok := decodeValue(echoed[i].value)
			if !ok || !reflect.DeepEqual(echoedValue, wantValue) {
				t.Fatalf("trait %d of %q: echoed value %s; want %#v", i, body, echoed[i].value, wantValue)
			}
			if coerced[i].key != wantKey {
				t.Fatalf("trait %d of %q: coerced key %q; want %v", i, body, coerced[i].key, wantKey)
			}
			// encoding/json's reading of the value, coerced the one way the
			// engine coerces every value.
			if got, want := coerced[i].value, valueFromJSON(mustJSON(t, wantValue)); !cmp.Equal(got, want, cmp.AllowUnexported(value{})) {
				t.Fatalf("trait %d of %q: coerced value %+v; want %+v", i, body, got, want)
			}
		}

		// With the environment's trait names, the decoder keeps only the
		// traits a condition can read, in order, under the interned name.
		names := map[string]string{"a-name-no-trait-has": "a-name-no-trait-has"}
		for i, tr := range coerced {
			if i%2 == 0 {
				names[tr.key] = strings.Clone(tr.key)
			}
		}
		_, kept, _, err := decodeForTest(body, names)
		if err != nil {
			t.Fatalf("decodeIdentityBody(%q) with trait names = %v; without = nil", body, err)
		}
		var wantKept []trait
		for _, tr := range coerced {
			if _, ok := names[tr.key]; ok {
				wantKept = append(wantKept, tr)
			}
		}
		if diff := cmp.Diff(wantKept, kept, cmp.AllowUnexported(trait{}, value{})); diff != "" {
			t.Fatalf("traits of %q kept by name (-want +got):\n%s", body, diff)
		}
		for _, tr := range kept {
			if unsafe.StringData(tr.key) != unsafe.StringData(names[tr.key]) {
				t.Fatalf("trait %q of %q is not the interned name", tr.key, body)
			}
		}
	})
}

// decodeObject is encoding/json's reading of a JSON object, numbers kept as
// written.
func decodeObject(body []byte) (map[string]any, bool) {
	v, ok := decodeValue(body)
	m, isObject := v.(map[string]any)
	return m, ok && isObject
}

func decodeValue(raw []byte) (any, bool) {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, false
	}
	return v, true
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

// TestDecodeTransient: the identity's "transient" and each trait's are
// kept, as Flagsmith reads them, for write-back to leave out.
func TestDecodeTransient(t *testing.T) {
	body := `{"identifier": "u", "transient": true, "traits": [
		{"trait_key": "a", "trait_value": 1, "transient": true},
		{"trait_key": "b", "trait_value": 2, "transient": "True"},
		{"trait_key": "c", "trait_value": 3, "transient": 1.0},
		{"trait_key": "d", "trait_value": 4, "transient": false},
		{"trait_key": "e", "trait_value": 5},
		{"trait_key": "f", "trait_value": 6, "transient": "off"},
		{"trait_key": "g", "transient": ["x"], "trait_value": 7}]}`
	var buf decodedTraits
	if _, err := decodeIdentityBody([]byte(body), &buf, identityLimits{maxTraits: 10, maxTraitKeyLength: 10}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, tr := range buf.sent {
		got[string(tr.key)] = tr.transient
	}
	want := map[string]bool{`"a"`: true, `"b"`: true, `"c"`: true, `"d"`: false, `"e"`: false, `"f"`: false, `"g"`: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("transient traits (-want +got):\n%s", diff)
	}
	if !buf.transient {
		t.Error("transient identity not decoded as transient")
	}
	if _, err := decodeIdentityBody([]byte(`{"identifier": "u", "transient": true, "transient": false}`), &buf, identityLimits{maxTraits: 1, maxTraitKeyLength: 1}); err != nil || buf.transient {
		t.Errorf("a repeated transient = %v, transient %v; want the last one, false", err, buf.transient)
	}
}
