package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestConfigKeys checks the one list of configuration keys, Config's json
// tags: each field has its own key, and each alias stands for a key.
func TestConfigKeys(t *testing.T) {
	keys := configKeys()
	for i, k := range keys {
		if k == "" || k == "-" {
			t.Errorf("Config field %d has no json key", i)
		}
		if slices.Index(keys, k) != i {
			t.Errorf("config key %q names two fields", k)
		}
	}
	for alias, key := range configAliases {
		if !slices.Contains(keys, key) {
			t.Errorf("alias %q stands for %q, which is not a config key", alias, key)
		}
		if slices.Contains(keys, alias) {
			t.Errorf("alias %q is also a config key", alias)
		}
	}
}

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
