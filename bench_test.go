package main

import (
	"encoding/json"
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
// by default they use the shared benchmark document beside the repository
// (50 features, 10 multivariate, 25 segments with nested rules, 10 identity
// overrides), the one bench/run.sh measures.
const benchDocumentEnv = "BENCH_DOCUMENT"

func benchDocument(b *testing.B) []byte {
	b.Helper()
	path := os.Getenv(benchDocumentEnv)
	if path == "" {
		path = filepath.Join("..", "shared", "bench", "environment-document.json")
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

// BenchmarkIdentityEvaluation is one identity evaluation of the benchmark
// document: every feature, its segment overrides and its multivariate split.
func BenchmarkIdentityEvaluation(b *testing.B) {
	snap, err := newSnapshot(benchDocument(b))
	if err != nil {
		b.Fatal(err)
	}
	id := benchIdentity()
	flags := make([]evalFlag, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		flags = snap.doc.engine.evaluate(flags[:0], id, nil)
	}
	if len(flags) != len(snap.doc.engine.features) {
		b.Fatalf("evaluated %d flags; want %d", len(flags), len(snap.doc.engine.features))
	}
}

// BenchmarkIdentityEvaluationNoLoop is the same with a plain b.N loop, to
// check b.Loop is not hiding allocations.
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
		flags = snap.doc.engine.evaluate(flags[:0], id, nil)
	}
	_ = flags
}

// BenchmarkCompile measures turning the document into a snapshot, which
// happens off the request path whenever a new document arrives.
func BenchmarkCompile(b *testing.B) {
	raw := benchDocument(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := newSnapshot(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func benchServer(b *testing.B) *server {
	b.Helper()
	raw := benchDocument(b)
	var doc struct {
		APIKey string `json:"api_key"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		b.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.EnvironmentKeyPairs = []KeyPair{{ServerSideKey: "ser.bench", ClientSideKey: doc.APIKey}}
	s := newServer(cfg, discardLogger())
	if err := s.publish(s.envs[0], raw, "bench"); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkHandlerFlags is GET /api/v1/flags/ through the whole handler
// stack, in parallel.
func BenchmarkHandlerFlags(b *testing.B) {
	s := benchServer(b)
	h := s.handler()
	key := s.envs[0].pair.ClientSideKey
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
}

// BenchmarkHandlerIdentities is POST /api/v1/identities/ with 5 traits and
// a different identifier each time, in parallel.
func BenchmarkHandlerIdentities(b *testing.B) {
	s := benchServer(b)
	h := s.handler()
	key := s.envs[0].pair.ClientSideKey
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
