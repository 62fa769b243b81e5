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
