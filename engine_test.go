package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// engineTestDataEnv names the folder holding Flagsmith's engine-test-data
// (its test_cases/ subfolder is read). When set, the folder must exist.
const engineTestDataEnv = "ENGINE_TEST_DATA"

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func conformanceCases(t *testing.T) []string {
	t.Helper()
	dir, set := os.LookupEnv(engineTestDataEnv)
	if !set {
		dir = filepath.Join("..", "shared", "engine-test-data")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "test_cases", "*.json*"))
	if len(files) == 0 {
		if set {
			t.Fatalf("%s=%q holds no test_cases/*.json", engineTestDataEnv, dir)
		}
		t.Skipf("engine-test-data not found at %s; set %s to run the conformance suite", dir, engineTestDataEnv)
	}
	return files
}

// TestConformance runs Flagsmith's engine conformance suite: every field of
// every expected result must match.
func TestConformance(t *testing.T) {
	for _, file := range conformanceCases(t) {
		name := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var tc struct {
				Result json.RawMessage `json:"result"`
			}
			if err := json.Unmarshal(stripJSONComments(data), &tc); err != nil {
				t.Fatalf("parse case: %v", err)
			}
			got, err := evaluateContextJSON(data)
			if err != nil {
				t.Fatalf("evaluateContextJSON: %v", err)
			}
			if diff := cmp.Diff(decodeLoose(t, tc.Result), decodeLoose(t, mustJSON(t, got))); diff != "" {
				t.Errorf("result mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeLoose decodes JSON keeping numbers as their literal text, so 1 and
// 1.0 stay distinct, as they are for Python.
func decodeLoose(t testing.TB, raw []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return v
}

// goldenCase is one file of testdata/golden: a document, the identities to
// evaluate against it, and what the case exercises.
type goldenCase struct {
	Reason     string          `json:"reason"`
	Document   json.RawMessage `json:"document"`
	Identities []struct {
		Identifier string                   `json:"identifier"`
		Traits     ordered[json.RawMessage] `json:"traits"`
	} `json:"identities"`
}

// goldenResult is what a golden file records: every flag with its reason
// for the environment and each identity, and the client-key flags list.
type goldenResult struct {
	Reason      string                      `json:"reason"`
	Environment evaluationResult            `json:"environment"`
	ClientFlags json.RawMessage             `json:"client_flags"`
	Identities  map[string]evaluationResult `json:"identities"`
}

// TestGolden evaluates the documents under testdata/golden and compares with
// the recorded results; -update rewrites them (read the diff before
// committing).
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var inputs []string
	for _, f := range files {
		if !strings.HasSuffix(f, ".golden.json") {
			inputs = append(inputs, f)
		}
	}
	if len(inputs) < 10 {
		t.Fatalf("found %d golden inputs under testdata/golden; want at least 10", len(inputs))
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".json")
		t.Run(name, func(t *testing.T) {
			if !*update {
				t.Parallel()
			}
			got := evaluateGoldenCase(t, in)
			goldenPath := strings.TrimSuffix(in, ".json") + ".golden.json"
			if *update {
				if err := os.WriteFile(goldenPath, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("%v (run go test -run Golden -update)", err)
			}
			if diff := cmp.Diff(decodeLoose(t, want), decodeLoose(t, got)); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", goldenPath, diff)
			}
		})
	}
}

func evaluateGoldenCase(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var gc goldenCase
	if err := json.Unmarshal(data, &gc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if gc.Reason == "" {
		t.Fatalf("%s: every golden case states its reason", path)
	}
	snap, err := newSnapshot(gc.Document)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	res := goldenResult{
		Reason:      gc.Reason,
		Environment: snap.engine.result(nil),
		ClientFlags: viewBody(&snap.views[clientKey]),
		Identities:  map[string]evaluationResult{},
	}
	for _, gi := range gc.Identities {
		id := &identity{identifier: gi.Identifier}
		for _, tr := range gi.Traits {
			id.traits = append(id.traits, trait{key: tr.Key, value: valueFromJSON(tr.Value)})
		}
		res.Identities[gi.Identifier] = snap.engine.result(id)
	}
	out, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzEvaluateContext evaluates arbitrary contexts and checks that the
// result stays the same under edits that cannot matter to Flagsmith's
// engine: the traits in another order, an unrelated trait added, every
// object's fields in reverse order with other whitespace, and the identity
// key given explicitly as its default.
func FuzzEvaluateContext(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz-seeds", "*.json"))
	if dir := os.Getenv(engineTestDataEnv); dir != "" {
		cases, _ := filepath.Glob(filepath.Join(dir, "test_cases", "*.json"))
		seeds = append(seeds, cases...)
	}
	for _, s := range seeds {
		if data, err := os.ReadFile(s); err == nil {
			f.Add(stripJSONComments(data))
		}
	}
	f.Add([]byte(`{"environment":{"key":"k","name":"n"},"identity":{"identifier":"i","traits":{"a":1,"b":"x"}},"features":{"x":{"key":"1","name":"x","enabled":true,"value":1,"variants":[{"value":"v","weight":50,"priority":1}]}},"segments":{"1":{"key":"1","name":"s","metadata":{ },"rules":[{"type":"ANY","conditions":[{"property":"a","operator":"MODULO","value":"2|1"}]}],"overrides":[{"key":"2","name":"x","enabled":false,"value":2,"priority":0}]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		want, err := evaluateContextJSON(data)
		if err != nil || !utf8.Valid(data) || !json.Valid(data) {
			return
		}
		root := parseJSONTree(t, data)
		ctx := root
		if c := root.member("context"); c != nil && c.kind == '{' {
			ctx = c
		}
		var parsed evalContext
		if json.Unmarshal(ctx.encode(false), &parsed) != nil {
			return
		}
		check := func(edit string, edited *jsonNode) {
			t.Helper()
			for _, spaced := range []bool{false, true} {
				text := edited.encode(spaced)
				got, err := evaluateContextJSON(text)
				if err != nil {
					t.Fatalf("%s: evaluating the edited context: %v\n%s", edit, err, text)
				}
				if diff := cmp.Diff(decodeLoose(t, mustJSON(t, want)), decodeLoose(t, mustJSON(t, got))); diff != "" {
					t.Fatalf("%s (spaced %t) changed the result (-before +after):\n%s\nedited context:\n%s", edit, spaced, diff, text)
				}
			}
		}

		check("rewriting the whitespace", root)
		check("reversing every object's fields", root.reversed())

		identity := ctx.member("identity")
		if parsed.Identity == nil || identity == nil || identity.kind != '{' || identity.hasFoldedDuplicates() {
			return
		}
		traits := identity.member("traits")
		if traits != nil && traits.kind == '{' && len(traits.keys) > 1 && !traits.hasFoldedDuplicates() {
			slices.Reverse(traits.keys)
			slices.Reverse(traits.vals)
			check("reversing the traits", root)
			slices.Reverse(traits.keys)
			slices.Reverse(traits.vals)
		}

		if unrelated := unrelatedTraitKey(&parsed); traits == nil || traits.kind == '{' {
			added := root.clone()
			addedIdentity := added.member("context")
			if addedIdentity == nil || addedIdentity.kind != '{' {
				addedIdentity = added
			}
			addedIdentity = addedIdentity.member("identity")
			if tr := addedIdentity.member("traits"); tr != nil {
				tr.set(unrelated, &jsonNode{raw: []byte(`"irrelevant"`)})
			} else {
				addedIdentity.set("traits", &jsonNode{kind: '{', keys: []string{unrelated}, vals: []*jsonNode{{raw: []byte(`"irrelevant"`)}}})
			}
			check("adding an unrelated trait", added)
		}

		if parsed.Identity.Key == "" {
			keyed := root.clone()
			id := keyed.member("context")
			if id == nil || id.kind != '{' {
				id = keyed
			}
			id = id.member("identity")
			defaultKey, _ := json.Marshal(parsed.Environment.Key + "_" + parsed.Identity.Identifier)
			id.set("key", &jsonNode{raw: defaultKey})
			check("giving the identity key explicitly", keyed)
		}
	})
}

// unrelatedTraitKey returns a trait key that no condition of ctx can read.
func unrelatedTraitKey(ctx *evalContext) string {
	var properties []string
	var walk func([]ruleContext)
	walk = func(rules []ruleContext) {
		for _, r := range rules {
			for _, c := range r.Conditions {
				properties = append(properties, c.Property)
			}
			walk(r.Rules)
		}
	}
	for _, s := range ctx.Segments {
		walk(s.Value.Rules)
	}
	for n := 0; ; n++ {
		key := fmt.Sprintf("unrelated-trait-%d", n)
		if !slices.ContainsFunc(properties, func(p string) bool { return strings.Contains(p, key) }) {
			return key
		}
	}
}

// jsonNode is a JSON value that keeps its object fields in order and its
// scalars as written.
type jsonNode struct {
	kind byte // '{', '[' or 0 for a scalar
	keys []string
	vals []*jsonNode
	raw  json.RawMessage
}

func parseJSONTree(t testing.TB, data []byte) *jsonNode {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var read func() *jsonNode
	read = func() *jsonNode {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("parse %q: %v", data, err)
		}
		switch tok := tok.(type) {
		case json.Delim:
			n := &jsonNode{kind: byte(tok)}
			for dec.More() {
				if n.kind == '{' {
					key, _ := dec.Token()
					n.keys = append(n.keys, key.(string))
				}
				n.vals = append(n.vals, read())
			}
			_, _ = dec.Token() // the closing delimiter
			return n
		case json.Number:
			return &jsonNode{raw: json.RawMessage(tok)}
		default:
			return &jsonNode{raw: mustJSON(t, tok)}
		}
	}
	return read()
}

// member returns the value of key in an object, nil if absent. Go's
// decoder matches field names without regard to case and keeps the last.
func (n *jsonNode) member(key string) *jsonNode {
	var found *jsonNode
	for i, k := range n.keys {
		if strings.EqualFold(k, key) {
			found = n.vals[i]
		}
	}
	return found
}

func (n *jsonNode) set(key string, v *jsonNode) {
	for i, k := range n.keys {
		if k == key {
			n.vals[i] = v
			return
		}
	}
	n.keys, n.vals = append(n.keys, key), append(n.vals, v)
}

// hasFoldedDuplicates reports whether two keys could name the same field,
// where their order decides which value counts.
func (n *jsonNode) hasFoldedDuplicates() bool {
	for i := range n.keys {
		for j := i + 1; j < len(n.keys); j++ {
			if strings.EqualFold(n.keys[i], n.keys[j]) {
				return true
			}
		}
	}
	return false
}

func (n *jsonNode) clone() *jsonNode {
	c := *n
	c.keys = slices.Clone(n.keys)
	c.vals = make([]*jsonNode, len(n.vals))
	for i, v := range n.vals {
		c.vals[i] = v.clone()
	}
	return &c
}

// reversed returns a copy with every object's fields in reverse order,
// except where order means something: the members of "features" and
// "segments" (priority ties go to the earlier segment) and objects with
// keys that could name the same field. Lists keep their order.
func (n *jsonNode) reversed() *jsonNode {
	c := n.clone()
	var walk func(n *jsonNode, keepOrder bool)
	walk = func(n *jsonNode, keepOrder bool) {
		for i, v := range n.vals {
			keep := n.kind == '{' && (strings.EqualFold(n.keys[i], "features") || strings.EqualFold(n.keys[i], "segments"))
			walk(v, keep)
		}
		if n.kind == '{' && !keepOrder && !n.hasFoldedDuplicates() {
			slices.Reverse(n.keys)
			slices.Reverse(n.vals)
		}
	}
	walk(c, false)
	return c
}

// encode writes the tree as JSON, spread over lines when spaced.
func (n *jsonNode) encode(spaced bool) []byte {
	var b bytes.Buffer
	var write func(n *jsonNode, indent string)
	write = func(n *jsonNode, indent string) {
		if n.kind == 0 {
			b.Write(n.raw)
			return
		}
		inner := indent + "  "
		b.WriteByte(n.kind)
		for i, v := range n.vals {
			if i > 0 {
				b.WriteByte(',')
			}
			if spaced {
				b.WriteString("\n" + inner)
			}
			if n.kind == '{' {
				k, _ := json.Marshal(n.keys[i])
				b.Write(k)
				b.WriteString(":")
				if spaced {
					b.WriteString(" ")
				}
			}
			write(v, inner)
		}
		if spaced {
			b.WriteString("\n" + indent)
		}
		b.WriteByte(map[byte]byte{'{': '}', '[': ']'}[n.kind])
	}
	write(n, "")
	return b.Bytes()
}

// TestLiftAllRules: only a condition-less ALL rule with sub-rules is
// replaced by them (a segment needs all its rules anyway); an ALL rule with
// conditions, an ANY or NONE rule, and an empty ALL rule (which matches)
// stay as they are.
func TestLiftAllRules(t *testing.T) {
	cond := []condition{{op: opIsSet}}
	a, b := rule{typ: ruleAny, conditions: cond}, rule{typ: ruleNone, conditions: cond}
	for _, c := range []struct {
		name     string
		in, want []rule
	}{
		{"wrapper", []rule{{typ: ruleAll, rules: []rule{a, b}}}, []rule{a, b}},
		{"wrapper among others", []rule{b, {typ: ruleAll, rules: []rule{a}}}, []rule{b, a}},
		{"two wrappers", []rule{{typ: ruleAll, rules: []rule{b}}, {typ: ruleAll, rules: []rule{a, b}}}, []rule{b, a, b}},
		{"with conditions", []rule{{typ: ruleAll, conditions: cond, rules: []rule{a}}}, nil},
		{"ANY", []rule{{typ: ruleAny, rules: []rule{a}}}, nil},
		{"NONE", []rule{{typ: ruleNone, rules: []rule{a}}}, nil},
		{"empty ALL", []rule{{typ: ruleAll}}, nil},
	} {
		want := c.want
		if want == nil {
			want = c.in
		}
		got := liftAllRules(c.in, &slab[rule]{})
		if len(got) != len(want) {
			t.Fatalf("%s: %d rules; want %d", c.name, len(got), len(want))
		}
		for i := range got {
			if got[i].typ != want[i].typ || len(got[i].conditions) != len(want[i].conditions) || len(got[i].rules) != len(want[i].rules) {
				t.Errorf("%s: rule %d = %+v; want %+v", c.name, i, got[i], want[i])
			}
		}
	}
}
