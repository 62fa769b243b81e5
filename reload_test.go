package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tests of live configuration in process: configuration loading (environment merge,
// relative paths, validation), reloads applied to a running server, key
// rotation in the poller, and files that are not regular files. The tests
// on the built binary are in reload_e2e_test.go.

const (
	clientKeyC = "TestEnvGammaClientKey"
	serverKeyC = "ser.TestEnvGammaServerSecret"
	// serverKeyA2 is environment A's next server key, in a rotation.
	serverKeyA2 = "ser.TestEnvAlphaServerSecretNew"
)

var pairC = KeyPair{ClientSideKey: clientKeyC, ServerSideKey: serverKeyC}

// reloadWriteConfig writes v as JSON to path atomically (a new file renamed
// over the old one), as configuration management tools do, so that a
// reload never reads a half-written file.
func reloadWriteConfig(t testing.TB, path string, v any) {
	t.Helper()
	raw, ok := v.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestLoadConfigRows goes through the configuration rules row by row: environment variables
// that merge into the file's objects, secrets from the environment kept as
// strings, paths relative to the file, and each validation row.
func TestLoadConfigRows(t *testing.T) {
	const pairs = `"environment_key_pairs": [{"server_side_key": "ser.one-key-0001", "client_side_key": "one"}]`
	tests := []struct {
		name   string
		file   string // config.json's text; "" for no file
		env    map[string]string
		check  func(t *testing.T, dir string, c Config) // for a valid configuration
		errors []string                                 // for an invalid one: every problem, in order
	}{
		{
			name: "SERVER merges into the file's server object",
			file: `{` + pairs + `, "server": {"host": "127.0.0.1", "port": 8080, "write_timeout_seconds": 30}}`,
			env:  map[string]string{"SERVER": `{"port": 9000}`},
			check: func(t *testing.T, dir string, c Config) {
				if c.Server.Host != "127.0.0.1" || c.Server.Port != 9000 || c.Server.WriteTimeout != 30 {
					t.Errorf("server = host %q port %d write_timeout %v; want the file's host and timeout, the environment's port 9000",
						c.Server.Host, c.Server.Port, c.Server.WriteTimeout)
				}
				if c.Server.ShutdownTimeout != defaultShutdownSeconds {
					t.Errorf("server.shutdown_timeout_seconds = %v; want the default %d", c.Server.ShutdownTimeout, defaultShutdownSeconds)
				}
			},
		},
		{
			name: "LOGGING merges into the file's logging object",
			file: `{` + pairs + `, "logging": {"log_level": "DEBUG", "log_format": "json"}}`,
			env:  map[string]string{"LOGGING": `{"enable_access_log": true}`},
			check: func(t *testing.T, dir string, c Config) {
				if c.Logging.LogLevel != "DEBUG" || c.Logging.LogFormat != "json" || !c.Logging.EnableAccessLog {
					t.Errorf("logging = %+v; want the file's DEBUG and json with the access log on", c.Logging)
				}
			},
		},
		{
			name: "nested objects merge too",
			file: `{` + pairs + `, "server": {"tls": {"cert_file": "/etc/tls/cert.pem", "key_file": "/etc/tls/key.pem"}}}`,
			env:  map[string]string{"SERVER": `{"tls": {"key_file": "/run/key.pem"}}`},
			check: func(t *testing.T, dir string, c Config) {
				if c.Server.TLS.CertFile != "/etc/tls/cert.pem" || c.Server.TLS.KeyFile != "/run/key.pem" {
					t.Errorf("server.tls = %+v; want the file's cert_file and the environment's key_file", c.Server.TLS)
				}
			},
		},
		{
			name: "SERVER without a file object merges onto the defaults",
			file: `{` + pairs + `}`,
			env:  map[string]string{"SERVER": `{"port": 9001}`},
			check: func(t *testing.T, dir string, c Config) {
				if c.Server.Host != defaultHost || c.Server.Port != 9001 {
					t.Errorf("server = %q:%d; want the default host with port 9001", c.Server.Host, c.Server.Port)
				}
			},
		},
		{
			name: "a list from the environment replaces the file's",
			file: `{` + pairs + `, "allow_origins": ["https://a.example", "https://b.example"]}`,
			env:  map[string]string{"ALLOW_ORIGINS": `["https://c.example"]`},
			check: func(t *testing.T, dir string, c Config) {
				if !slices.Equal(c.AllowOrigins, []string{"https://c.example"}) {
					t.Errorf("allow_origins = %q; want the environment's list", c.AllowOrigins)
				}
			},
		},
		{
			name: "ADMIN_TOKEN of digits is a string",
			file: `{` + pairs + `}`,
			env:  map[string]string{"ADMIN_TOKEN": "12345678901234567890"},
			check: func(t *testing.T, dir string, c Config) {
				if c.AdminToken != "12345678901234567890" {
					t.Errorf("admin_token = %q; want the digits as given", string(c.AdminToken))
				}
			},
		},
		{
			// Were null read as JSON, it would disable the token and pass.
			name:   "ADMIN_TOKEN=null is the string null, too short for a token",
			file:   `{` + pairs + `}`,
			env:    map[string]string{"ADMIN_TOKEN": "null"},
			errors: []string{"admin_token: a secret of 4 characters is too short (it is not shown); want a string of at least 16 characters"},
		},
		{
			name: "CACHE_DIR of digits is a path",
			file: `{` + pairs + `}`,
			env:  map[string]string{"CACHE_DIR": "2026"},
			check: func(t *testing.T, dir string, c Config) {
				if c.CacheDir != "2026" {
					t.Errorf("cache_dir = %q; want \"2026\"", c.CacheDir)
				}
			},
		},
		{
			name: "relative paths in the file are relative to its folder",
			file: `{"environment_key_pairs": [{"server_side_key": "ser.one-key-0001", "client_side_key": "one", "environment_document_path": "docs/one.json"},
				{"server_side_key": "ser.two-key-0002", "client_side_key": "two", "environment_document_path": "/abs/two.json"}],
				"cache_dir": "cache", "server": {"tls": {"cert_file": "tls/cert.pem", "key_file": "../key.pem"}}}`,
			check: func(t *testing.T, dir string, c Config) {
				got := []string{c.EnvironmentKeyPairs[0].DocumentPath, c.EnvironmentKeyPairs[1].DocumentPath,
					c.CacheDir, c.Server.TLS.CertFile, c.Server.TLS.KeyFile}
				want := []string{filepath.Join(dir, "docs/one.json"), "/abs/two.json",
					filepath.Join(dir, "cache"), filepath.Join(dir, "tls/cert.pem"), filepath.Join(filepath.Dir(dir), "key.pem")}
				if !slices.Equal(got, want) {
					t.Errorf("paths = %q; want %q", got, want)
				}
			},
		},
		{
			name: "relative paths from the environment stay relative to the working directory",
			file: `{` + pairs + `}`,
			env:  map[string]string{"CACHE_DIR": "cache", "SERVER": `{"tls": {"cert_file": "c.pem", "key_file": "k.pem"}}`},
			check: func(t *testing.T, dir string, c Config) {
				if c.CacheDir != "cache" || c.Server.TLS.CertFile != "c.pem" {
					t.Errorf("cache_dir %q, cert_file %q; want them as the environment gave them", c.CacheDir, c.Server.TLS.CertFile)
				}
			},
		},
		{
			name: "server_side_keys lists a rotation, server_side_key last",
			file: `{"environment_key_pairs": [{"server_side_keys": ["ser.new-key-0002", " ser.old-key-0001"], "server_side_key": "ser.old-key-0001", "client_side_key": "one"}]}`,
			check: func(t *testing.T, dir string, c Config) {
				p := c.EnvironmentKeyPairs[0]
				want := []secret{"ser.new-key-0002", "ser.old-key-0001"}
				if !slices.Equal(p.serverKeys(), want) || p.ServerSideKey != want[0] {
					t.Errorf("server keys = %q (server_side_key %q); want %q, the first as server_side_key", p.serverKeys(), p.ServerSideKey, want)
				}
			},
		},
		{
			name: "server_side_keys alone",
			file: `{"environment_key_pairs": [{"server_side_keys": ["ser.only-key-0003"], "client_side_key": "one"}]}`,
			check: func(t *testing.T, dir string, c Config) {
				if p := c.EnvironmentKeyPairs[0]; p.ServerSideKey != "ser.only-key-0003" || p.ServerSideKeys != nil {
					t.Errorf("pair = %+v; want server_side_key ser.…0003 and no list", p)
				}
			},
		},
		{
			name: "drain_seconds",
			file: `{` + pairs + `, "server": {"drain_seconds": 0}}`,
			check: func(t *testing.T, dir string, c Config) {
				if c.Server.DrainSeconds != 0 {
					t.Errorf("server.drain_seconds = %v; want 0", c.Server.DrainSeconds)
				}
			},
		},
		{
			name: "drain_seconds defaults",
			file: `{` + pairs + `}`,
			check: func(t *testing.T, dir string, c Config) {
				if c.Server.DrainSeconds != defaultDrainSeconds {
					t.Errorf("server.drain_seconds = %v; want %d", c.Server.DrainSeconds, defaultDrainSeconds)
				}
			},
		},
		{
			name: "PEERS and PEER_SECRET from the environment, the secret masked when printed",
			file: `{` + pairs + `}`,
			env:  map[string]string{"PEERS": `["http://edge-proxy-peers:8000"]`, "PEER_SECRET": "12345678901234567890"},
			check: func(t *testing.T, dir string, c Config) {
				if !slices.Equal(c.Peers, []string{"http://edge-proxy-peers:8000"}) || c.PeerSecret != "12345678901234567890" {
					t.Errorf("peers %q, peer_secret %q; want the environment's", c.Peers, string(c.PeerSecret))
				}
				if out, _ := c.printable(); strings.Contains(string(out), "12345678901234567890") {
					t.Errorf("the printed configuration holds peer_secret in clear:\n%s", out)
				}
			},
		},
		{
			name:   "peers without peer_secret",
			file:   `{` + pairs + `, "peers": ["http://edge-proxy-peers:8000"]}`,
			errors: []string{`peer_secret: required with peers`},
		},
		{
			name: "peer_secret too short, peers that are not base URLs",
			file: `{` + pairs + `, "peer_secret": "short", "peers": ["edge-proxy-peers:8000", "http://user:pass@peers:8000",
				"http://peers:8000/?x=1", "http://peers:0", "ftp://peers"]}`,
			errors: []string{
				`peers[0]: "edge-proxy-peers:8000" is not an http(s) base URL`,
				`peers[1]: "http://user:****@peers:8000" must not hold credentials`,
				`peers[2]: "http://peers:8000/?x=1" must not have a query or fragment`,
				`peers[3]: "http://peers:0" has no valid port`,
				`peers[4]: "ftp://peers" is not an http(s) base URL`,
				`peer_secret: a secret of 5 characters is too short (it is not shown); want a string of at least 16 characters`,
			},
		},
		{
			name: "a server key in two pairs",
			file: `{"environment_key_pairs": [{"server_side_key": "ser.shared-key-0001", "client_side_key": "one"},
				{"server_side_key": "ser.shared-key-0001", "client_side_key": "two"}]}`,
			errors: []string{`environment_key_pairs[1].server_side_key: "ser.****" is also a key of environment_key_pairs[0]`},
		},
		{
			name: "a server key in one pair's list and another's",
			file: `{"environment_key_pairs": [{"server_side_keys": ["ser.new-key-0002", "ser.shared-key-0001"], "client_side_key": "one"},
				{"server_side_key": "ser.shared-key-0001", "client_side_key": "two"}]}`,
			errors: []string{`environment_key_pairs[1].server_side_key: "ser.****" is also a key of environment_key_pairs[0]`},
		},
		{
			name: "a client key in two pairs",
			file: `{"environment_key_pairs": [{"server_side_key": "ser.one-key-0001", "client_side_key": "same"},
				{"server_side_key": "ser.two-key-0002", "client_side_key": "same"}]}`,
			errors: []string{`environment_key_pairs[1].client_side_key: "same" is also the key of environment_key_pairs[0]`},
		},
		{
			name: "cache files that would collide",
			file: `{"cache_dir": "/var/cache/edge-proxy", "environment_key_pairs": [{"server_side_key": "ser.one-key-0001", "client_side_key": "a/b"},
				{"server_side_key": "ser.two-key-0002", "client_side_key": "c/b"}]}`,
			errors: []string{`environment_key_pairs[1].client_side_key: "c/b" would share the cache file /var/cache/edge-proxy/environment-b.json with environment_key_pairs[0]`},
		},
		{
			name: "the same client keys without a cache",
			file: `{"environment_key_pairs": [{"server_side_key": "ser.one-key-0001", "client_side_key": "a/b"},
				{"server_side_key": "ser.two-key-0002", "client_side_key": "c/b"}]}`,
			check: func(t *testing.T, dir string, c Config) {},
		},
		{
			name:   "api_url with a query",
			file:   `{` + pairs + `, "api_url": "https://api.example.com/api/v1?x=y"}`,
			errors: []string{`api_url: "https://api.example.com/api/v1?x=y" must not have a query or fragment`},
		},
		{
			name:   "api_url with an empty query",
			file:   `{` + pairs + `, "api_url": "https://api.example.com/api/v1?"}`,
			errors: []string{`api_url: "https://api.example.com/api/v1?" must not have a query or fragment`},
		},
		{
			name:   "api_url with a fragment",
			file:   `{` + pairs + `, "api_url": "https://api.example.com/api/v1#top"}`,
			errors: []string{`api_url: "https://api.example.com/api/v1#top" must not have a query or fragment`},
		},
		{
			name:   "a listed server key without ser.",
			file:   `{"environment_key_pairs": [{"server_side_keys": ["ser.new-key-0002", "client-looking-0003"], "client_side_key": "one"}]}`,
			errors: []string{`environment_key_pairs[0].server_side_keys[1]: "****" must start with "ser."`},
		},
		{
			name:   "negative drain_seconds",
			file:   `{` + pairs + `, "server": {"drain_seconds": -1}}`,
			errors: []string{`server.drain_seconds: "-1" is out of range; want 0 to 3600 seconds`},
		},
		{
			name: "a missing config file is named",
			env:  map[string]string{},
			errors: []string{
				"config file {dir}/config.json not found",
				"environment_key_pairs: a list of 0 entries is not valid; want a list of 1 to 1000 entries like",
			},
		},
		{
			name: "every problem, in a stable order",
			file: `{"environment_key_pairs": [{"server_side_key": "ser.shared-key-0001", "client_side_key": "one"},
				{"server_side_key": "ser.shared-key-0001", "client_side_key": "one"}],
				"api_url": "https://x.example/api?q=1", "api_poll_frequency_seconds": -1}`,
			errors: []string{
				`environment_key_pairs[1].server_side_key: "ser.****" is also a key of environment_key_pairs[0]`,
				`environment_key_pairs[1].client_side_key: "one" is also the key of environment_key_pairs[0]`,
				`api_url: "https://x.example/api?q=1" must not have a query or fragment`,
				`api_poll_frequency_seconds: "-1" is out of range; want 1 to 86400 seconds`,
			},
		},
		{
			name: "type errors of several keys, in the order of Config's fields",
			file: `{` + pairs + `, "sse": {"enabled": "yes"}, "limits": {"max_traits": "many"}, "api_poll_frequency_seconds": "often", "server": {"port": "http"}}`,
			errors: []string{
				`api_poll_frequency_seconds: "often" (a string) is not valid; want 1 to 86400 seconds`,
				`server.port: "http" (a string) is not valid; want 0 to 65535`,
				`sse.enabled: "yes" (a string) is not valid; want true or false`,
				`limits.max_traits: "many" (a string) is not valid; want 1 to 10000 traits`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "config.json")
			if tt.file != "" {
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			getenv := func(k string) string { return tt.env[k] }
			// Not explicit, as when ./config.json is looked for: a missing
			// file is then not an error by itself.
			cfg, _, err := loadConfig(path, false, getenv)
			if tt.errors == nil {
				if err != nil {
					t.Fatalf("loadConfig = %v; want nil", err)
				}
				tt.check(t, dir, cfg)
				return
			}
			if err == nil {
				t.Fatal("loadConfig = nil; want an error")
			}
			got := problems(err)
			if len(got) != len(tt.errors) {
				t.Fatalf("loadConfig problems = %q; want %d: %q", got, len(tt.errors), tt.errors)
			}
			for i, want := range tt.errors {
				want = strings.ReplaceAll(want, "{dir}", dir)
				if !strings.HasPrefix(got[i], want) {
					t.Errorf("problem %d = %q; want it to begin %q", i, got[i], want)
				}
			}
			for range 5 { // map order must not leak into the message
				if _, _, again := loadConfig(path, false, getenv); again.Error() != err.Error() {
					t.Fatalf("loadConfig again = %q; want the same error %q", again, err)
				}
			}
		})
	}
}

// TestLoadConfigKeyTypes ties takesString to the Config fields: the keys
// an environment variable sets verbatim are exactly those holding strings.
func TestLoadConfigKeyTypes(t *testing.T) {
	var got []string
	for _, key := range configKeys() {
		if takesString(key) {
			got = append(got, key)
		}
	}
	slices.Sort(got)
	if want := []string{"admin_token", "api_url", "cache_dir", "peer_secret", "realtime_api_url", "webhook_secret"}; !slices.Equal(got, want) {
		t.Errorf("keys set verbatim from the environment = %q; want %q", got, want)
	}
}

// TestNotRegularFiles: a FIFO where a file is read blocks nothing. Each
// read is refused at once, naming the file; before the fix a FIFO held the
// open until a writer came, which is forever.
func TestNotRegularFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := func(t *testing.T, path string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			t.Skipf("mkfifo: %v", err) // not every filesystem has FIFOs
		}
		return path
	}
	within := func(t *testing.T, what string, f func()) {
		t.Helper()
		done := make(chan struct{})
		go func() { f(); close(done) }()
		select {
		case <-done:
		case <-time.After(testWait):
			t.Fatalf("%s still blocked after %v", what, testWait)
		}
	}

	t.Run("config file", func(t *testing.T) {
		path := fifo(t, filepath.Join(dir, "config", "config.json"))
		var err error
		within(t, "loadConfig", func() { _, _, err = loadConfig(path, true, func(string) string { return "" }) })
		if err == nil || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), path) {
			t.Errorf("loadConfig(FIFO) = %v; want an error naming %s as not a regular file", err, path)
		}
	})
	t.Run("cache file", func(t *testing.T) {
		cache := filepath.Join(dir, "cache")
		fifo(t, cachePath(cache, clientKeyA))
		s := newTestServer(t, withPairs(pairA), func(c *Config) { c.CacheDir = cache })
		within(t, "loadCache", s.loadCache)
		s.logs.mustHave(t, logRecord{level: "WARN", msg: "cached document ignored", env: clientKeyA, err: "not a regular file"})
	})
	t.Run("document file", func(t *testing.T) {
		path := fifo(t, filepath.Join(dir, "docs", "a.json"))
		s := newTestServer(t, withPairs(KeyPair{ClientSideKey: clientKeyA, ServerSideKey: serverKeyA, DocumentPath: path}))
		stop := s.poll(t, pollClient(t))
		s.logs.waitFor(t, logRecord{level: "ERROR", msg: "document file not loaded", env: clientKeyA, err: "not a regular file"})
		within(t, "stopping the pollers", stop)
	})
	t.Run("certificate file", func(t *testing.T) {
		path := fifo(t, filepath.Join(dir, "tls", "cert.pem"))
		var err error
		within(t, "loadCertificate", func() { _, err = loadCertificate(ServerTLSConfig{CertFile: path, KeyFile: path}) })
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("loadCertificate(FIFO) = %v; want a not-a-regular-file error", err)
		}
	})
}

// TestPollKeyRotation follows one environment through a server key
// rotation: the poller uses the first key the upstream accepts,
// keeps it, and moves on within the same poll when it is rejected.
func TestPollKeyRotation(t *testing.T) {
	up := newUpstream(t)
	doc1 := testDocument(clientKeyA, pollerUpdatedAt, "blue")
	up.set(serverKeyA, doc1) // the new key is not known upstream yet
	rotating := KeyPair{ClientSideKey: clientKeyA, ServerSideKeys: []secret{serverKeyA2, serverKeyA}}
	s := newTestServer(t, withUpstream(up), withPairs(rotating))
	env, client := s.environments()[0], pollClient(t)
	keysOf := func(reqs []upstreamRequest) []string {
		var keys []string
		for _, r := range reqs {
			keys = append(keys, r.key)
		}
		return keys
	}

	pollerMustPoll(t, s, env, client)
	pollerWantFlags(t, s, clientKeyA, pollerFlags("blue"))
	if got, want := keysOf(up.recorded()), []string{serverKeyA2, serverKeyA}; !slices.Equal(got, want) {
		t.Fatalf("first poll's keys = %q; want the new key rejected, then the old", got)
	}
	pollerMustPoll(t, s, env, client)
	if got := keysOf(up.recorded())[2:]; !slices.Equal(got, []string{serverKeyA}) {
		t.Errorf("second poll's keys = %q; want only the old key, which the upstream accepted", got)
	}
	for _, key := range []string{serverKeyA, serverKeyA2, clientKeyA} {
		if code, _ := pollerFlagsBody(t, s, key); code != http.StatusOK {
			t.Errorf("GET /api/v1/flags/ with %s = %d; want 200: SDKs may use every listed key", maskedKey(key), code)
		}
	}

	// The rotation upstream: the new key works, the old one is revoked,
	// and the document changes at the same time.
	up.set(serverKeyA2, testDocument(clientKeyA, "2026-11-20T10:05:00Z", "green"))
	up.remove(serverKeyA)
	before := len(up.recorded())
	pollerMustPoll(t, s, env, client)
	pollerWantFlags(t, s, clientKeyA, pollerFlags("green"))
	if got := keysOf(up.recorded()[before:]); !slices.Equal(got, []string{serverKeyA, serverKeyA2}) {
		t.Errorf("poll after the revocation used keys %q; want the old key rejected, then the new", got)
	}
	s.logs.mustHave(t, logRecord{level: "INFO", msg: "server key in use", env: clientKeyA})
	if got := env.keyInUse.Load(); got != 0 {
		t.Errorf("keyInUse = %d; want 0, the new key", got)
	}

	// Every key rejected: the last good document stays, and the failure is
	// an error naming the rejection.
	up.remove(serverKeyA2)
	err := s.pollNow(t.Context(), env, client)
	if !errors.Is(err, errKeyRejected) {
		t.Errorf("pollOnce with every key revoked = %v; want errKeyRejected", err)
	}
	pollerWantFlags(t, s, clientKeyA, pollerFlags("green"))
	s.logs.mustHave(t, logRecord{level: "ERROR", msg: "rejected the server key", env: clientKeyA})
	s.logs.noServerKeys(t)
}

// TestApplyConfig reloads a running server in process: an
// unchanged environment keeps its environment, poller, document and
// streams; a removed one stops polling, its keys and streams end; an added
// one answers with flags as soon as the reload returns; a changed one
// (rotated keys) keeps its document and streams.
func TestApplyConfig(t *testing.T) {
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "a"))
	up.set(serverKeyB, testDocument(clientKeyB, pollerUpdatedAt, "b"))
	up.set(serverKeyC, testDocument(clientKeyC, pollerUpdatedAt, "c"))
	up.set(serverKeyA2, testDocument(clientKeyA, pollerUpdatedAt, "a"))
	s := newTestServer(t, withUpstream(up), withPairs(pairA, pairB))
	s.listen(t, nil)
	s.poll(t, pollClient(t))
	eventually(t, "A and B hold documents", func() bool {
		return s.env(t, clientKeyA).snap.Load() != nil && s.env(t, clientKeyB).snap.Load() != nil
	})
	envA, envB := s.env(t, clientKeyA), s.env(t, clientKeyB)
	pollerA, snapA := envA.loops, envA.snap.Load()
	streamA := sseOpenStream(t, s.client, s.url+sseStreamPath(clientKeyA), nil)
	streamB := sseOpenStream(t, s.client, s.url+sseStreamPath(clientKeyB), nil)
	held, _ := time.Parse(time.RFC3339Nano, pollerUpdatedAt)
	streamA.wantUpdated(t, held) // each stream opens with the current document
	streamB.wantUpdated(t, held)

	change := s.applyConfig(t.Context(), testConfig(t, withUpstream(up), withPairs(pairA, pairC)))
	if want := (configChange{added: []string{clientKeyC}, removed: []string{clientKeyB}}); !slices.Equal(change.added, want.added) ||
		!slices.Equal(change.removed, want.removed) || len(change.changed) != 0 {
		t.Errorf("applyConfig = %+v; want %+v", change, want)
	}
	if s.env(t, clientKeyA) != envA || envA.loops != pollerA || envA.snap.Load() != snapA {
		t.Error("environment A was replaced, or its poller or document; want it untouched")
	}
	pollerWantFlags(t, s, clientKeyC, pollerFlags("c")) // at once: the reload awaited its first poll
	pollerWantFlags(t, s, serverKeyC, `[{"feature":{"id":1,"name":"banner","type":"STANDARD"},"enabled":true,"feature_state_value":"c"}]`)
	for _, key := range []string{clientKeyB, serverKeyB} {
		if code, _ := pollerFlagsBody(t, s, key); code != http.StatusUnauthorized {
			t.Errorf("GET /api/v1/flags/ with removed key %s = %d; want 401", maskedKey(key), code)
		}
	}
	streamB.waitEnd(t)
	if envB.loops != nil {
		t.Error("removed environment B still has a poller")
	}
	if code, _, _ := s.do(t, "GET", sseStreamPath(clientKeyB), nil); code != http.StatusNotFound {
		t.Errorf("GET stream of removed B = %d; want 404", code)
	}

	// A rotation: A gets a second key. A new environment with A's document,
	// its stream still open and still fed.
	rotated := KeyPair{ClientSideKey: clientKeyA, ServerSideKeys: []secret{serverKeyA2, serverKeyA}}
	change = s.applyConfig(t.Context(), testConfig(t, withUpstream(up), withPairs(rotated, pairC)))
	if !slices.Equal(change.changed, []string{clientKeyA}) || len(change.added)+len(change.removed) != 0 {
		t.Errorf("applyConfig(rotation) = %+v; want A changed only", change)
	}
	newA := s.env(t, clientKeyA)
	if newA == envA || newA.snap.Load() != snapA {
		t.Error("rotated A: want a new environment holding the same document")
	}
	if envA.loops != nil {
		t.Error("the replaced environment A still has a poller")
	}
	for _, key := range []string{serverKeyA, serverKeyA2} {
		if code, _ := pollerFlagsBody(t, s, key); code != http.StatusOK {
			t.Errorf("GET /api/v1/flags/ with %s after the rotation = %d; want 200", maskedKey(key), code)
		}
	}
	up.set(serverKeyA2, testDocument(clientKeyA, "2026-11-20T10:05:00Z", "a2"))
	up.set(serverKeyA, testDocument(clientKeyA, "2026-11-20T10:05:00Z", "a2"))
	newA.triggerRefresh()
	streamA.wantUpdated(t, time.Date(2026, 11, 20, 10, 5, 0, 0, time.UTC))
}

// TestReloadRejected: a configuration that does not validate changes
// nothing, and every problem is logged and counted.
func TestReloadRejected(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	s := newTestServer(t, withPairs(pairA))
	s.publishDoc(t, clientKeyA, testDocument(clientKeyA, pollerUpdatedAt, "a"))
	before := s.live.Load()
	reloadWriteConfig(t, path, []byte(`{"environment_key_pairs": [{"server_side_key": "ser.dup-key-0001", "client_side_key": "x"},
		{"server_side_key": "ser.dup-key-0001", "client_side_key": "y"}], "api_url": "https://x.example/?a=b"}`))
	src := &configSource{path: path, explicit: true, getenv: func(string) string { return "" }}
	s.reload(t.Context(), src, "signal")

	if s.live.Load() != before {
		t.Error("a rejected configuration replaced the running one")
	}
	pollerWantFlags(t, s, clientKeyA, pollerFlags("a"))
	var logged []any
	for _, rec := range s.logs.records(t) {
		if rec["msg"] == "configuration rejected; the running configuration stays" {
			logged, _ = rec["problems"].([]any)
		}
	}
	if len(logged) != 2 || !strings.Contains(logged[0].(string), "server_side_key") || !strings.Contains(logged[1].(string), "api_url") {
		t.Errorf("logged problems = %q; want the duplicate server key, then the api_url", logged)
	}
	metrics := string(s.exposition())
	for _, want := range []string{`edge_proxy_config_reloads_total{result="error"} 1`, "edge_proxy_config_last_reload_successful 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// Fixed: applied, and the server and logging settings that need a
	// restart keep their running values, with a warning.
	reloadWriteConfig(t, path, map[string]any{
		"environment_key_pairs": []any{map[string]any{"server_side_key": serverKeyA, "client_side_key": clientKeyA}},
		"server":                map[string]any{"port": 9999},
		"allow_origins":         []string{"https://app.example"},
	})
	s.reload(t.Context(), src, "file")
	if got := s.config(); got.Server.Port != before.cfg.Server.Port || !slices.Equal(got.AllowOrigins, []string{"https://app.example"}) {
		t.Errorf("after reload: server.port %d, allow_origins %q; want the running port %d and the new origins",
			got.Server.Port, got.AllowOrigins, before.cfg.Server.Port)
	}
	s.logs.mustHave(t, logRecord{level: "WARN", msg: "needs a restart"})
	metrics = string(s.exposition())
	for _, want := range []string{`edge_proxy_config_reloads_total{result="ok"} 1`, "edge_proxy_config_last_reload_successful 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestConfigEndpoint: GET /proxy/config shows the configuration in force,
// secrets masked, to the admin token only.
func TestConfigEndpoint(t *testing.T) {
	const token = "admin-token-for-tests-0001"
	rotating := KeyPair{ClientSideKey: clientKeyA, ServerSideKeys: []secret{serverKeyA2, serverKeyA}}
	s := newTestServer(t, withPairs(rotating), func(c *Config) { c.AdminToken = token })
	tests := []struct {
		name, auth string
		want       int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"wrong token", "Bearer nope", http.StatusUnauthorized},
		{"admin token", "Bearer " + token, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := callHandler(t, s.handler(), "GET", "/proxy/config", map[string]string{"Authorization": tt.auth}, "")
			if rec.Code != tt.want {
				t.Fatalf("GET /proxy/config = %d %s; want %d", rec.Code, rec.Body, tt.want)
			}
			if tt.want != http.StatusOK {
				return
			}
			for _, key := range []string{serverKeyA, serverKeyA2, token} {
				if strings.Contains(rec.Body.String(), key) {
					t.Errorf("GET /proxy/config shows the secret %s in clear", maskedKey(key))
				}
			}
			var got Config
			mustUnmarshal(t, rec.Body.Bytes(), &got)
			if p := got.EnvironmentKeyPairs; len(p) != 1 || len(p[0].ServerSideKeys) != 2 || p[0].ClientSideKey != clientKeyA {
				t.Errorf("GET /proxy/config pairs = %+v; want A with its two keys, masked", p)
			}
		})
	}
	s2 := newTestServer(t, withPairs(pairA))
	if rec := callHandler(t, s2.handler(), "GET", "/proxy/config", nil, ""); rec.Code != http.StatusNotFound {
		t.Errorf("GET /proxy/config without admin_token = %d; want 404", rec.Code)
	}
}

// TestRunPollersRestart: the pollers can be stopped and started again, as
// between two runLoops, and a reload while none run starts nothing.
func TestRunPollersRestart(t *testing.T) {
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "a"))
	up.set(serverKeyC, testDocument(clientKeyC, pollerUpdatedAt, "c"))
	s := newTestServer(t, withUpstream(up), withPairs(pairA))
	s.applyConfig(context.Background(), testConfig(t, withUpstream(up), withPairs(pairA, pairC)))
	if env := s.env(t, clientKeyC); env.loops != nil || env.snap.Load() != nil {
		t.Fatal("a reload with the pollers stopped started a poller")
	}
	stop := s.poll(t, pollClient(t))
	eventually(t, "C polled once the pollers run", func() bool { return s.env(t, clientKeyC).snap.Load() != nil })
	stop()
	for _, env := range s.environments() {
		if env.loops != nil {
			t.Errorf("%s: poller still set after runLoops returned", env.pair.ClientSideKey)
		}
	}
}

// TestAnalyticsAcrossReload: analytics counts survive a reload. A removed
// environment's counts are sent once more with its key; a
// rotated one's move to its successor, sent with the successor's keys.
func TestAnalyticsAcrossReload(t *testing.T) {
	up := newAnaUpstream(t)
	slow := func(c *Config) { c.Analytics.FlushIntervalSeconds = 3600 } // only the flushes the test makes
	s := newAnaServer(t, up, slow)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.runLoops(ctx, http.DefaultClient) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "both environments hold documents", func() bool {
		envs := s.environments()
		return envs[0].snap.Load() != nil && envs[1].snap.Load() != nil
	})
	h := s.handler()
	for _, p := range []struct{ key, body string }{{anaClientKey, `{"banner": 3}`}, {anaClientKey2, `{"footer": 5}`}} {
		if rec := anaPostTo(t, h, "/api/v1/analytics/flags/", p.key, p.body, nil); rec.Code != http.StatusOK {
			t.Fatalf("POST analytics for %s = %d %s", p.key, rec.Code, rec.Body)
		}
	}
	before := anaEnv(t, s, anaClientKey)

	const rotatedKey = "ser.AnalyticsServerKeyNext"
	next := defaultConfig()
	next.APIURL = up.apiURL()
	slow(&next)
	next.EnvironmentKeyPairs = []KeyPair{{ClientSideKey: anaClientKey, ServerSideKeys: []secret{anaServerKey, rotatedKey}}}
	if err := next.validate(); err != nil {
		t.Fatal(err)
	}
	s.applyConfig(t.Context(), next)

	v1, _, posts := up.sums()
	if v1["footer"] != 5 || len(posts) != 1 || posts[0].Key != anaServerKey2 {
		t.Errorf("upstream after removing environment 2: sums %v, posts %+v; want footer 5 posted once with its key", v1, posts)
	}
	after := anaEnv(t, s, anaClientKey)
	if after != before || after.env != s.environments()[0] {
		t.Fatal("the rotated environment's analytics were not handed to its successor")
	}
	if err := after.flush(t.Context(), s, http.DefaultClient); err != nil {
		t.Fatalf("flush after the rotation = %v", err)
	}
	v1, _, posts = up.sums()
	if v1["banner"] != 3 || posts[len(posts)-1].Key != anaServerKey {
		t.Errorf("upstream after the rotation: sums %v, last post %+v; want banner 3 posted with the key in use", v1, posts[len(posts)-1])
	}
}

// TestWatchConfigSecretVolume: a Kubernetes Secret mounted as a folder is
// updated by writing the new files into a new folder and swapping the
// ..data symlink, so config.json (a symlink through ..data) names another
// file at once. The swap is noticed by the file's identity alone: here the
// new file has the old one's size and modification time.
func TestWatchConfigSecretVolume(t *testing.T) {
	dir := t.TempDir()
	mtime := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	write := func(version, token string) {
		t.Helper()
		raw, err := json.Marshal(map[string]any{
			"environment_key_pairs": []KeyPair{pairA},
			"api_url":               "http://127.0.0.1:1/api/v1",
			"admin_token":           token,
		})
		if err != nil {
			t.Fatal(err)
		}
		folder := filepath.Join(dir, "..2026_12_07_09_00_00."+version)
		if err := os.Mkdir(folder, 0o755); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(folder, "config.json")
		if err := os.WriteFile(file, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(file, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		// As the kubelet's atomic writer does: a new ..data link renamed
		// over the old one.
		if err := os.Symlink(filepath.Base(folder), filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	write("1", "admin-token-version-0001")
	path := filepath.Join(dir, "config.json")
	if err := os.Symlink(filepath.Join("..data", "config.json"), path); err != nil {
		t.Fatal(err)
	}
	src := &configSource{path: path, explicit: true, getenv: func(string) string { return "" }}
	cfg, _, err := src.load()
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, func(c *Config) { *c = cfg })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.watchConfig(ctx, src, nil); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	// Past the first look, so that the swap is what the next one sees.
	time.Sleep(2 * configCheckInterval)
	write("2", "admin-token-version-0002")
	eventually(t, "the swapped Secret is reloaded", func() bool {
		return s.config().AdminToken == "admin-token-version-0002"
	})
}
