package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestConfigProblemsInFieldOrder: several bad keys are all reported, in the
// order of Config's fields, the same way every time.
func TestConfigProblemsInFieldOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	body := `{"sse": {"enabled": "yes"}, "limits": [], "api_url": 5, "server": {"port": "x"}, "logging": 1, "api_poll_timeout": "soon"}`
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) string { return "" }
	_, _, err := loadConfig(path, true, noEnv)
	if err == nil {
		t.Fatalf("loadConfig(%s) = nil; want errors", body)
	}
	// The missing key pairs too: a value of the wrong type hides no other
	// problem.
	want := []string{"environment_key_pairs", "api_url", "api_poll_timeout_seconds", "server.port", "logging", "sse.enabled", "limits"}
	lines := strings.Split(err.Error(), "\n")
	var got []string
	for _, l := range lines {
		key, _, _ := strings.Cut(l, ":")
		got = append(got, key)
	}
	if !slices.Equal(got, want) {
		t.Errorf("loadConfig reports %q; want the keys %q in that order", lines, want)
	}
	for range 20 {
		if _, _, again := loadConfig(path, true, noEnv); again.Error() != err.Error() {
			t.Fatalf("loadConfig gave %q, then %q; want the same text every time", err, again)
		}
	}
}

// TestConfigMaxDocumentPages: max_document_pages defaults to 1,000 and is
// refused outside 1 to 100,000, by name, from the file or the environment.
func TestConfigMaxDocumentPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	body := `{"environment_key_pairs": [{"server_side_key": "ser.abc", "client_side_key": "abc"}]}`
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		env     string // MAX_DOCUMENT_PAGES
		want    int
		wantErr bool
	}{
		{"", defaultMaxDocumentPages, false},
		{"1", 1, false},
		{"100000", 100_000, false},
		{"0", 0, true},
		{"-3", 0, true},
		{"100001", 0, true},
		{"many", 0, true},
	}
	for _, tt := range tests {
		getenv := func(k string) string {
			if k == "MAX_DOCUMENT_PAGES" {
				return tt.env
			}
			return ""
		}
		cfg, _, err := loadConfig(path, true, getenv)
		switch {
		case tt.wantErr && (err == nil || !strings.Contains(err.Error(), "max_document_pages")):
			t.Errorf("MAX_DOCUMENT_PAGES=%q: loadConfig = %v; want an error naming max_document_pages", tt.env, err)
		case !tt.wantErr && (err != nil || cfg.MaxDocumentPages != tt.want):
			t.Errorf("MAX_DOCUMENT_PAGES=%q: max_document_pages = %d, %v; want %d", tt.env, cfg.MaxDocumentPages, err, tt.want)
		}
	}
}

// TestDocumentFileMissingAtStart: a document file that does not exist stops
// the start with an error naming the resolved path and how it was found
// (relative to the config file's folder), instead of a proxy answering 503.
func TestDocumentFileMissingAtStart(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	raw := `{"environment_key_pairs": [
		{"server_side_key": "ser.one-key-0001", "client_side_key": "one", "environment_document_path": "docs/one.json"}],
		"server": {"host": "127.0.0.1", "port": 0}}`
	if err := os.WriteFile(cfgPath, []byte(raw), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := run(ctx, []string{"-config", cfgPath}, func(string) string { return "" }, io.Discard, io.Discard)
	resolved := filepath.Join(dir, "docs", "one.json")
	for _, want := range []string{"environment_key_pairs[0].environment_document_path", resolved + " does not exist",
		`"docs/one.json" as written, relative to the config file's folder ` + dir} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("run with a missing document file = %v; want an error containing %q", err, want)
		}
	}

	// Once the file exists the same configuration is accepted.
	cfg, written, _, err := loadConfigPaths(cfgPath, true, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(resolved), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(resolved, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkDocumentFiles(&cfg, cfgPath, written); err != nil {
		t.Errorf("checkDocumentFiles with the file present = %v; want nil", err)
	}
}

// TestDocumentFileMissingAtReload: a reload naming a document file that does
// not exist is rejected whole, the error saying how the path was resolved,
// and the running configuration stays.
func TestDocumentFileMissingAtReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	s := newTestServer(t, withPairs(pairA))
	before := s.live.Load()
	reloadWriteConfig(t, path, map[string]any{"environment_key_pairs": []any{map[string]any{
		"server_side_key": serverKeyA, "client_side_key": clientKeyA, "environment_document_path": "missing.json"}}})
	s.reload(t.Context(), &configSource{path: path, explicit: true, getenv: func(string) string { return "" }}, "signal")
	if s.live.Load() != before {
		t.Error("a configuration naming a missing document file replaced the running one")
	}
	s.logs.mustHave(t, logRecord{level: "ERROR", msg: "configuration rejected"})
	if logs := s.logs.String(); !strings.Contains(logs, filepath.Join(dir, "missing.json")+` does not exist (\"missing.json\" as written, relative to the config file's folder `+dir) {
		t.Errorf("reload rejection does not name the resolved path and how it was resolved:\n%s", logs)
	}
}
