package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
		Environment: snap.doc.engine.result(nil),
		ClientFlags: snap.views[clientKey].flags.body,
		Identities:  map[string]evaluationResult{},
	}
	for _, gi := range gc.Identities {
		id := &identity{identifier: gi.Identifier}
		for _, tr := range gi.Traits {
			id.traits = append(id.traits, trait{key: tr.Key, value: valueFromJSON(tr.Value)})
		}
		res.Identities[gi.Identifier] = snap.doc.engine.result(id)
	}
	out, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzEvaluateContext feeds arbitrary evaluation contexts to the engine: it
// must never panic, and must give the same result twice.
func FuzzEvaluateContext(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz-seeds", "*.json"))
	for _, s := range seeds {
		if data, err := os.ReadFile(s); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(`{"environment":{"key":"k","name":"n"},"identity":{"identifier":"i","traits":{"a":1}},"features":{"x":{"key":"1","name":"x","enabled":true,"value":1,"variants":[{"value":"v","weight":50,"priority":1}]}},"segments":{"1":{"key":"1","name":"s","rules":[{"type":"ANY","conditions":[{"property":"a","operator":"MODULO","value":"2|1"}]}],"overrides":[{"key":"2","name":"x","enabled":false,"value":2,"priority":0}]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		first, err1 := evaluateContextJSON(data)
		second, err2 := evaluateContextJSON(data)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("errors differ: %v vs %v", err1, err2)
		}
		if err1 != nil {
			return
		}
		if diff := cmp.Diff(string(mustJSON(t, first)), string(mustJSON(t, second))); diff != "" {
			t.Fatalf("two evaluations differ (-first +second):\n%s", diff)
		}
	})
}
