package main

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzIdentityBodyMatchesEncodingJSON checks the hand-written decoder
// against encoding/json: it calls a body malformed exactly when
// encoding/json does, and decodes identifiers and trait keys the same way.
func FuzzIdentityBodyMatchesEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`{"identifier":"a","traits":[{"trait_key":"k","trait_value":1.5e3}]}`,
		`{"identifier":"\u00e9\ud83d\ude00\n","traits":null,"transient":false}`,
		`{"identifier":"x","traits":[{"trait_key":"a\"b","trait_value":"\ud800"}],"extra":{"deep":[1,[2,{"x":null}]]}}`,
		`{"identifier":"x"} `, `{"identifier":"x",}`, `[`, `{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":"\x"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		buf := &identityBuffers{}
		identifier, err := decodeIdentityBody(body, &buf.decodedTraits, identityLimits{maxTraits: 1000, maxTraitKeyLength: 200})
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
		// decoding would also accept "Identifier").
		var want map[string]any
		if jerr := json.Unmarshal(body, &want); jerr != nil {
			t.Fatalf("decodeIdentityBody(%q) accepted what encoding/json cannot map: %v", body, jerr)
		}
		if identifier != want["identifier"] {
			t.Fatalf("identifier of %q = %q; want %v", body, identifier, want["identifier"])
		}
		traits, _ := want["traits"].([]any)
		if len(buf.traits) != len(traits) {
			t.Fatalf("traits of %q = %d; want %d", body, len(buf.traits), len(traits))
		}
		for i, tr := range traits {
			if key := tr.(map[string]any)["trait_key"]; buf.traits[i].key != key {
				t.Fatalf("trait key %d of %q = %q; want %v", i, body, buf.traits[i].key, key)
			}
		}
	})
}
