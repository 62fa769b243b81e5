package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// benchDocumentEnv points the benchmarks at another environment document;
// by default they use testdata/bench/environment-document.json, a copy of
// the benchmark document of the performance targets (50 features, 10
// multivariate, 25 segments with nested rules, 10 identity overrides), the
// one bench/run.sh measures.
const benchDocumentEnv = "BENCH_DOCUMENT"

func benchDocument(b testing.TB) []byte {
	b.Helper()
	path := os.Getenv(benchDocumentEnv)
	if path == "" {
		path = filepath.Join("testdata", "bench", "environment-document.json")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatalf("benchmark document: %v (set %s)", err, benchDocumentEnv)
	}
	return raw
}

// benchIdentity is the 5-trait identity bench/run.sh sends.
func benchIdentity() *identity {
	return &identity{identifier: "bench_user_42", traits: []trait{
		{"plan", coerceString("premium")},
		{"age", intValue(34)},
		{"country", coerceString("GB")},
		{"app_version", coerceString("2.4.1")},
		{"beta_tester", boolValue(true)},
	}}
}

// benchSizes are the documents the scaled benchmarks run on: the benchmark
// document as it is, with 10,000 overridden identities that each carry their
// own value, and with ten times its features and segments.
var benchSizes = []struct {
	name              string
	copies, overrides int
	distinctOverrides bool
}{
	{"doc=1x_overrides=10", 1, 10, false},
	{"doc=1x_overrides=10000_distinct", 1, 10000, true},
	{"doc=10x_overrides=1000", 10, 1000, false},
}

// BenchmarkIdentityEvaluation is one identity evaluation: every feature, its
// segment overrides, its identity overrides and its multivariate split, for
// an identity without overrides and for one with.
func BenchmarkIdentityEvaluation(b *testing.B) {
	for _, size := range benchSizes {
		snap, err := newSnapshot(scaleDocument(b, benchDocument(b), size.copies, size.overrides, size.distinctOverrides))
		if err != nil {
			b.Fatal(err)
		}
		for _, who := range []string{"bench_user_42", "vip_000003"} {
			b.Run(size.name+"/identity="+who, func(b *testing.B) {
				id := benchIdentity()
				id.identifier = who
				flags := make([]evalFlag, 0, len(snap.engine.features))
				b.ReportAllocs()
				for b.Loop() {
					flags = snap.engine.evaluate(flags[:0], id, nil)
				}
				if len(flags) != len(snap.engine.features) {
					b.Fatalf("evaluated %d flags; want %d", len(flags), len(snap.engine.features))
				}
			})
		}
	}
}

// BenchmarkIdentityEvaluationNoLoop is the first case with a plain b.N loop,
// to check b.Loop is not hiding allocations.
func BenchmarkIdentityEvaluationNoLoop(b *testing.B) {
	snap, err := newSnapshot(benchDocument(b))
	if err != nil {
		b.Fatal(err)
	}
	id := benchIdentity()
	flags := make([]evalFlag, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		flags = snap.engine.evaluate(flags[:0], id, nil)
	}
	_ = flags
}

// BenchmarkCompile measures turning a document into a snapshot, which
// happens off the request path whenever a new document arrives. The sizes
// double, so that growth reads off adjacent rows: linear compiling takes
// about twice as long per row.
func BenchmarkCompile(b *testing.B) {
	base := benchDocument(b)
	cases := []struct {
		name              string
		copies, overrides int
		// keep limits the features or the segments to the original
		// document's, so one dimension grows alone.
		keep string
	}{
		{"doc=1x", 1, 10, ""},
		{"features=25000", 500, 0, "segments"},
		{"features=50000", 1000, 0, "segments"},
		{"segments=25000", 1000, 0, "features"},
		{"segments=50000", 2000, 0, "features"},
		{"features=50000_segments=25000", 1000, 0, ""},
		{"overrides=5000_distinct", 1, 5000, ""},
		{"overrides=10000_distinct", 1, 10000, ""},
		{"overrides=20000_distinct", 1, 20000, ""},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			raw := scaleDocument(b, base, c.copies, c.overrides, true)
			if c.keep != "" {
				raw = keepOriginal(b, raw, base, c.keep)
			}
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := newSnapshot(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// keepOriginal cuts a scaled document's features or segments ("features",
// "segments") back to as many as the original document has.
func keepOriginal(tb testing.TB, scaled, original []byte, what string) []byte {
	tb.Helper()
	var doc, orig map[string]any
	if json.Unmarshal(scaled, &doc) != nil || json.Unmarshal(original, &orig) != nil {
		tb.Fatal("keepOriginal: documents do not parse")
	}
	switch what {
	case "features":
		n := len(orig["feature_states"].([]any))
		doc["feature_states"] = doc["feature_states"].([]any)[:n]
	case "segments":
		n := len(orig["project"].(map[string]any)["segments"].([]any))
		project := doc["project"].(map[string]any)
		project["segments"] = project["segments"].([]any)[:n]
	}
	out, err := json.Marshal(doc)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// scaleDocument multiplies a document as the shared generator scale.py does:
// copies copies of its features and segments (ids and names renamed per copy,
// segment overrides pointing at their copy's features) and overrides
// identity overrides cloned from its own (identifiers vip_<n>; with distinct,
// each carries its own value).
func scaleDocument(tb testing.TB, raw []byte, copies, overrides int, distinct bool) []byte {
	tb.Helper()
	var src map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&src); err != nil {
		tb.Fatal(err)
	}
	counter := int64(1000000)
	uuidOf := func(n int64) string { return fmt.Sprintf("00000000-0000-0000-0000-%012x", n) }
	num := func(v any) int64 {
		n, err := v.(json.Number).Int64()
		if err != nil {
			tb.Fatalf("scaleDocument: %v is not an integer", v)
		}
		return n
	}
	renameFS := func(fs any, k int) map[string]any {
		out := deepCopyJSON(fs).(map[string]any)
		f := out["feature"].(map[string]any)
		if k > 0 {
			f["id"] = json.Number(strconv.FormatInt(num(f["id"])+100000*int64(k), 10))
			f["name"] = fmt.Sprintf("%s_%d", f["name"], k)
		}
		counter++
		out["django_id"] = counter
		out["featurestate_uuid"] = uuidOf(counter)
		mvs, _ := out["multivariate_feature_state_values"].([]any)
		for _, mv := range mvs {
			counter++
			mv.(map[string]any)["id"] = counter
			mv.(map[string]any)["mv_fs_value_uuid"] = uuidOf(counter)
		}
		return out
	}
	list := func(v any) []any { l, _ := v.([]any); return l }

	doc := deepCopyJSON(src).(map[string]any)
	var features []any
	for k := range copies {
		for _, fs := range list(src["feature_states"]) {
			features = append(features, renameFS(fs, k))
		}
	}
	doc["feature_states"] = features
	project := doc["project"].(map[string]any)
	var segments []any
	for k := range copies {
		for _, s := range list(src["project"].(map[string]any)["segments"]) {
			seg := deepCopyJSON(s).(map[string]any)
			seg["id"] = json.Number(strconv.FormatInt(num(seg["id"])+100000*int64(k), 10))
			if k > 0 {
				seg["name"] = fmt.Sprintf("%s_%d", seg["name"], k)
			}
			var states []any
			for _, fs := range list(seg["feature_states"]) {
				states = append(states, renameFS(fs, k))
			}
			seg["feature_states"] = states
			segments = append(segments, seg)
		}
	}
	project["segments"] = segments
	templates := list(src["identity_overrides"])
	var identities []any
	for n := range overrides {
		o := deepCopyJSON(templates[n%len(templates)]).(map[string]any)
		o["identifier"] = fmt.Sprintf("vip_%06d", n)
		o["identity_uuid"] = uuidOf(int64(n + 1))
		var states []any
		for _, fs := range list(o["identity_features"]) {
			states = append(states, renameFS(fs, 0))
		}
		if distinct && len(states) > 0 {
			states[0].(map[string]any)["feature_state_value"] = fmt.Sprintf("v%d", n)
		}
		o["identity_features"] = states
		identities = append(identities, o)
	}
	doc["identity_overrides"] = identities
	out, err := json.Marshal(doc)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func deepCopyJSON(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = deepCopyJSON(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = deepCopyJSON(x)
		}
		return out
	}
	return v
}

func benchServer(b testing.TB, raw []byte) *server {
	b.Helper()
	var doc struct {
		APIKey string `json:"api_key"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		b.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.EnvironmentKeyPairs = []KeyPair{{ServerSideKey: "ser.bench", ClientSideKey: doc.APIKey}}
	s := newServer(cfg, discardLogger())
	if _, err := s.publish(s.environments()[0], raw, "bench"); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkHandlerFlags is GET /api/v1/flags/ through the whole handler
// stack, in parallel, on each document size.
func BenchmarkHandlerFlags(b *testing.B) {
	for _, size := range benchSizes {
		s := benchServer(b, scaleDocument(b, benchDocument(b), size.copies, size.overrides, size.distinctOverrides))
		b.Run(size.name, func(b *testing.B) {
			h := s.handler()
			key := s.environments()[0].pair.ClientSideKey
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req := httptest.NewRequest(http.MethodGet, "/api/v1/flags/", nil)
				req.Header.Set("X-Environment-Key", key)
				for pb.Next() {
					w := newDiscardWriter()
					h.ServeHTTP(w, req)
					if w.status != http.StatusOK {
						b.Fatalf("status %d", w.status)
					}
				}
			})
		})
	}
}

// BenchmarkHandlerIdentities is POST /api/v1/identities/ with 5 traits and
// a different identifier each time, in parallel, on each document size.
func BenchmarkHandlerIdentities(b *testing.B) {
	for _, size := range benchSizes {
		s := benchServer(b, scaleDocument(b, benchDocument(b), size.copies, size.overrides, size.distinctOverrides))
		b.Run(size.name, func(b *testing.B) {
			h := s.handler()
			key := s.environments()[0].pair.ClientSideKey
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					body := `{"identifier":"bench_user_` + strconv.Itoa(i) + `","traits":[{"trait_key":"plan","trait_value":"premium"},{"trait_key":"age","trait_value":34},{"trait_key":"country","trait_value":"GB"},{"trait_key":"app_version","trait_value":"2.4.1"},{"trait_key":"beta_tester","trait_value":true}]}`
					req := httptest.NewRequest(http.MethodPost, "/api/v1/identities/", strings.NewReader(body))
					req.Header.Set("X-Environment-Key", key)
					w := newDiscardWriter()
					h.ServeHTTP(w, req)
					if w.status != http.StatusOK {
						b.Fatalf("status %d", w.status)
					}
				}
			})
		})
	}
}

// discardWriter is a ResponseWriter that keeps only the status, so handler
// benchmarks measure the handler rather than a recorder's buffer.
type discardWriter struct {
	header http.Header
	status int
}

func newDiscardWriter() *discardWriter { return &discardWriter{header: http.Header{}} }

func (w *discardWriter) Header() http.Header { return w.header }
func (w *discardWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(b), nil
}
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
