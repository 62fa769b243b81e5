package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// e2eWriteFile writes v as JSON to dir/name and returns the path.
func e2eWriteFile(t testing.TB, dir, name string, v any) string {
	t.Helper()
	path := filepath.Join(dir, name)
	raw, ok := v.([]byte)
	if s, isString := v.(string); isString {
		raw, ok = []byte(s), true
	}
	if !ok {
		var err error
		if raw, err = json.MarshalIndent(v, "", "  "); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestE2EServeBinary runs the built binary against a fake Flagsmith API:
// the SDK endpoints over real HTTP, a document change seen within a poll
// period (and pushed to a realtime stream), then a graceful SIGTERM during
// which an in-flight request completes and the stream is closed.
func TestE2EServeBinary(t *testing.T) {
	bin := buildEdgeProxy(t)

	v1 := time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)
	v2 := v1.Add(5 * time.Minute)
	up := newUpstream(t)
	doc1 := demoDocument(t, v1, "Welcome to Acme Notes!")
	up.set(demoServerKey, doc1)

	dir := t.TempDir()
	cfg := e2eWriteFile(t, dir, "config.json", map[string]any{
		"environment_key_pairs":      []any{map[string]any{"server_side_key": demoServerKey, "client_side_key": demoClientKey}},
		"api_url":                    up.apiURL,
		"api_poll_frequency_seconds": 1,
		"server":                     map[string]any{"host": "127.0.0.1", "port": 0, "shutdown_timeout_seconds": 5, "drain_seconds": 0.5},
		"logging":                    map[string]any{"log_format": "json", "log_level": "INFO"},
	})
	p := startProcess(t, bin, []string{"-config", cfg}, nil, nil)
	addr, _ := p.waitLog(t, "listening", 10*time.Second)["addr"].(string)
	if _, _, err := net.SplitHostPort(addr); err != nil {
		t.Fatalf("listening addr = %q; want host:port", addr)
	}
	base := "http://" + addr
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	waitStatus(t, client, base+"/proxy/health/readiness", http.StatusOK, 5*time.Second)

	t.Run("endpoints", func(t *testing.T) {
		tests := []struct {
			name, method, path, key, body string
			wantStatus                    int
			check                         func(t *testing.T, resp *http.Response, body []byte)
		}{
			{
				name: "flags with the client key hide server-only features", method: "GET", path: "/api/v1/flags/", key: demoClientKey,
				wantStatus: http.StatusOK,
				check: func(t *testing.T, resp *http.Response, body []byte) {
					var flags []apiFlag
					mustUnmarshal(t, body, &flags)
					byName := flagsByName(flags)
					if _, ok := byName["billing_provider"]; ok {
						t.Errorf("client key sees server-only feature billing_provider")
					}
					if got, want := string(byName["welcome_message"].Value), `"Welcome to Acme Notes!"`; got != want {
						t.Errorf("welcome_message = %s; want %s", got, want)
					}
					if got, want := len(flags), 23; got != want {
						t.Errorf("len(flags) = %d; want %d", got, want)
					}
					if got := resp.Header.Get(updatedAtHeader); got != unixSeconds(v1) {
						t.Errorf("%s = %q; want %q", updatedAtHeader, got, unixSeconds(v1))
					}
				},
			},
			{
				name: "flags with the server key show every feature", method: "GET", path: "/api/v1/flags", key: demoServerKey,
				wantStatus: http.StatusOK,
				check: func(t *testing.T, resp *http.Response, body []byte) {
					var flags []apiFlag
					mustUnmarshal(t, body, &flags)
					if got, want := len(flags), 24; got != want {
						t.Errorf("len(flags) = %d; want %d", got, want)
					}
					if _, ok := flagsByName(flags)["billing_provider"]; !ok {
						t.Errorf("server key does not see billing_provider")
					}
				},
			},
			{
				name: "one feature", method: "GET", path: "/api/v1/flags/?feature=max_upload_mb", key: demoClientKey,
				wantStatus: http.StatusOK,
				check: func(t *testing.T, resp *http.Response, body []byte) {
					var f apiFlag
					mustUnmarshal(t, body, &f)
					if f.Feature.Name != "max_upload_mb" || string(f.Value) != "10" || !f.Enabled {
						t.Errorf("flag = %+v (value %s); want max_upload_mb enabled with 10", f.Feature, f.Value)
					}
				},
			},
			{name: "unknown feature", method: "GET", path: "/api/v1/flags/?feature=nope", key: demoClientKey, wantStatus: http.StatusNotFound},
			{
				name: "unknown key", method: "GET", path: "/api/v1/flags/", key: "UnknownKeyThatIsLong-123456",
				wantStatus: http.StatusUnauthorized,
				check: func(t *testing.T, resp *http.Response, body []byte) {
					if bytes.Contains(body, []byte("UnknownKeyThatIsLong-123456")) {
						t.Errorf("401 body %s echoes the whole unknown key", body)
					}
				},
			},
			{
				name: "identity POST with a segment trait", method: "POST", path: "/api/v1/identities/", key: demoClientKey,
				body:       `{"identifier": "alice", "traits": [{"trait_key": "plan", "trait_value": "premium"}]}`,
				wantStatus: http.StatusOK,
				check: func(t *testing.T, resp *http.Response, body []byte) {
					var got struct {
						Identifier string            `json:"identifier"`
						Traits     []json.RawMessage `json:"traits"`
						Flags      []apiFlag         `json:"flags"`
					}
					mustUnmarshal(t, body, &got)
					if got.Identifier != "alice" || len(got.Traits) != 1 {
						t.Errorf("identifier, traits = %q, %d traits; want \"alice\", 1 trait", got.Identifier, len(got.Traits))
					}
					if v := string(flagsByName(got.Flags)["max_upload_mb"].Value); v != "100" {
						t.Errorf("max_upload_mb for a premium identity = %s; want 100 (premium_users override)", v)
					}
				},
			},
			{
				name: "identity GET with an identity override", method: "GET", path: "/api/v1/identities/?identifier=vip@example.com", key: demoClientKey,
				wantStatus: http.StatusOK,
				check: func(t *testing.T, resp *http.Response, body []byte) {
					var got struct {
						Flags []apiFlag `json:"flags"`
					}
					mustUnmarshal(t, body, &got)
					byName := flagsByName(got.Flags)
					if v := string(byName["dark_mode"].Value); v != `"midnight"` {
						t.Errorf("dark_mode for vip@example.com = %s; want \"midnight\"", v)
					}
					if v := string(byName["max_upload_mb"].Value); v != "1000" {
						t.Errorf("max_upload_mb for vip@example.com = %s; want 1000", v)
					}
				},
			},
			{
				name: "environment document with the server key", method: "GET", path: "/api/v1/environment-document/", key: demoServerKey,
				wantStatus: http.StatusOK,
				check: func(t *testing.T, resp *http.Response, body []byte) {
					if !bytes.Equal(body, doc1) {
						t.Errorf("environment document differs from the one the upstream sent (%d bytes; want %d)", len(body), len(doc1))
					}
				},
			},
			{name: "environment document with the client key", method: "GET", path: "/api/v1/environment-document/", key: demoClientKey, wantStatus: http.StatusUnauthorized},
			{
				name: "readiness", method: "GET", path: "/proxy/health/readiness", wantStatus: http.StatusOK,
				check: func(t *testing.T, resp *http.Response, body []byte) {
					var r readiness
					mustUnmarshal(t, body, &r)
					if r.Status != "ok" || r.Reason != nil || r.LastSuccessfulUpdate == nil {
						t.Errorf("readiness = %s; want status ok, reason null and a last_successful_update", body)
					}
				},
			},
			{name: "liveness", method: "GET", path: "/proxy/health/liveness", wantStatus: http.StatusOK},
			{name: "stream health", method: "GET", path: "/sse/health", wantStatus: http.StatusOK},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp, body := httpDo(t, client, tt.method, base+tt.path, tt.key, tt.body)
				if resp.StatusCode != tt.wantStatus {
					t.Fatalf("%s %s = %d %s; want %d", tt.method, tt.path, resp.StatusCode, body, tt.wantStatus)
				}
				if ct := resp.Header.Get("Content-Type"); len(body) > 0 && ct != "application/json" {
					t.Errorf("%s %s Content-Type = %q; want application/json", tt.method, tt.path, ct)
				}
				if tt.check != nil {
					tt.check(t, resp, body)
				}
			})
		}
	})

	// A realtime stream, held open across the document change and the
	// shutdown. Its client has no timeout: the stream is meant to stay open.
	streamClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(streamClient.CloseIdleConnections)
	stream := sseOpenStream(t, streamClient, base+sseStreamPath(demoClientKey), nil)
	if ct := stream.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("stream Content-Type = %q; want text/event-stream", ct)
	}
	stream.wantUpdated(t, v1)

	t.Run("document change within a poll period", func(t *testing.T) {
		up.set(demoServerKey, demoDocument(t, v2, "Hello from v2"))
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, body := httpDo(t, client, "GET", base+"/api/v1/flags/?feature=welcome_message", demoClientKey, "")
			var f apiFlag
			mustUnmarshal(t, body, &f)
			if string(f.Value) == `"Hello from v2"` {
				if got := resp.Header.Get(updatedAtHeader); got != unixSeconds(v2) {
					t.Errorf("%s = %q; want %q", updatedAtHeader, got, unixSeconds(v2))
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("welcome_message = %s 5s after the upstream changed; want \"Hello from v2\"", f.Value)
			}
			time.Sleep(50 * time.Millisecond)
		}
		stream.wantUpdated(t, v2)
	})

	t.Run("metrics", func(t *testing.T) {
		resp, body := httpDo(t, client, "GET", base+"/metrics", "", "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics = %d; want 200", resp.StatusCode)
		}
		want := `edge_proxy_polls_total{environment="` + demoClientKey + `",result="ok"} 2`
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	})

	// An identity request whose handler is running when SIGTERM arrives: the
	// server's "100 Continue" proves the handler started reading the body;
	// the body is sent only once the process logged that it is shutting down.
	body := `{"identifier": "in-flight", "traits": [{"trait_key": "plan", "trait_value": "enterprise"}]}`
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	slowReq, _ := http.NewRequest("POST", base+"/api/v1/identities/", nil)
	fmt.Fprintf(conn, "POST /api/v1/identities/ HTTP/1.1\r\nHost: %s\r\nX-Environment-Key: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n",
		addr, demoClientKey, len(body))
	br := bufio.NewReader(conn)
	cont, err := http.ReadResponse(br, slowReq)
	if err != nil || cont.StatusCode != http.StatusContinue {
		t.Fatalf("interim response = %v, %v; want 100 Continue", cont, err)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "shutting down", 5*time.Second)

	t.Run("in-flight request completes", func(t *testing.T) {
		if _, err := io.WriteString(conn, body); err != nil {
			t.Fatalf("send the body after SIGTERM: %v", err)
		}
		resp, err := http.ReadResponse(br, slowReq)
		if err != nil {
			t.Fatalf("response to the in-flight request: %v", err)
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		var id struct {
			Flags []apiFlag `json:"flags"`
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("in-flight POST = %d %s; want 200", resp.StatusCode, got)
		}
		mustUnmarshal(t, got, &id)
		if v := string(flagsByName(id.Flags)["max_upload_mb"].Value); v != "100" {
			t.Errorf("in-flight identity max_upload_mb = %s; want 100", v)
		}
	})

	t.Run("stream closed", func(t *testing.T) {
		stream.waitEnd(t) // fails if the stream is still open testWait after SIGTERM
	})

	// shutdown_timeout_seconds is 5; allow as much again for the process to exit.
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("edge-proxy exit after SIGTERM: %v; want status 0", err)
	}
	p.waitLog(t, "stopped", time.Second)

	t.Run("logs", func(t *testing.T) {
		for _, line := range p.stderr() {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("log line %q is not JSON: %v", line, err)
				continue
			}
			if _, ok := rec["message"]; !ok {
				t.Errorf("log line %q has no \"message\" field (logging.log_event_field_name)", line)
			}
			if _, ok := rec["msg"]; ok {
				t.Errorf("log line %q still has a \"msg\" field", line)
			}
			if strings.Contains(line, demoServerKey) {
				t.Errorf("log line %q holds the server key in clear", line)
			}
		}
	})
}

// e2eEnv is a getenv for run() that sees only vars.
func e2eEnv(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// e2eRun calls run with args and an environment of exactly vars.
func e2eRun(t testing.TB, ctx context.Context, vars map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb logBuffer
	err = run(ctx, args, e2eEnv(vars), &out, &errb)
	return out.String(), errb.String(), err
}

func TestRunVersion(t *testing.T) {
	out, _, err := e2eRun(t, t.Context(), nil, "-version")
	if err != nil {
		t.Fatalf("run(-version) = %v; want nil", err)
	}
	v, ok := strings.CutPrefix(out, "edge-proxy ")
	if !ok || strings.TrimSpace(v) == "" || strings.Count(out, "\n") != 1 {
		t.Errorf("run(-version) printed %q; want \"edge-proxy <version>\\n\"", out)
	}
}

func TestRunHelp(t *testing.T) {
	_, errOut, err := e2eRun(t, t.Context(), nil, "-help")
	if err != nil {
		t.Fatalf("run(-help) = %v; want nil", err)
	}
	for _, want := range []string{"-healthcheck", "-print-config", "-version", "evaluate"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("run(-help) output lacks %q:\n%s", want, errOut)
		}
	}
}

// The printed configuration never holds a secret in clear, and shows every
// documented default.
func TestRunPrintConfig(t *testing.T) {
	const serverSecret = "ser.SuperSecretServerKey1234"
	const adminSecret = "admin-token-very-secret-9876"
	path := e2eWriteFile(t, t.TempDir(), "config.json", map[string]any{
		"environment_key_pairs": []any{map[string]any{"server_side_key": serverSecret, "client_side_key": "client-a"}},
		"admin_token":           adminSecret,
	})
	out, errOut, err := e2eRun(t, t.Context(), nil, "-config", path, "-print-config")
	if err != nil {
		t.Fatalf("run(-print-config) = %v; want nil", err)
	}
	for _, s := range []string{serverSecret, adminSecret, "SuperSecretServerKey", "very-secret"} {
		if strings.Contains(out+errOut, s) {
			t.Errorf("run(-print-config) output holds %q:\n%s", s, out)
		}
	}
	var got Config
	mustUnmarshal(t, []byte(out), &got)
	grace := 30.0
	tests := []struct {
		name      string
		got, want any
	}{
		{"server_side_key", string(got.EnvironmentKeyPairs[0].ServerSideKey), "ser.****1234"},
		{"client_side_key", got.EnvironmentKeyPairs[0].ClientSideKey, "client-a"},
		{"admin_token", string(got.AdminToken), "****9876"},
		{"api_url", got.APIURL, "https://edge.api.flagsmith.com/api/v1"},
		{"api_poll_frequency_seconds", got.PollFrequency, 10.0},
		{"api_poll_timeout_seconds", got.PollTimeout, 5.0},
		{"allow_origins", got.AllowOrigins, []string{"*"}},
		{"server.host", got.Server.Host, "0.0.0.0"},
		{"server.port", got.Server.Port, 8000},
		{"server.proxy_headers", got.Server.ProxyHeaders, false},
		{"server.timeout_keep_alive", got.Server.TimeoutKeepAlive, 5},
		{"logging.log_level", got.Logging.LogLevel, "INFO"},
		{"logging.log_format", got.Logging.LogFormat, "generic"},
		{"logging.enable_access_log", got.Logging.EnableAccessLog, false},
		{"health_check.environment_update_grace_period_seconds", got.HealthCheck.GracePeriod, &grace},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.got); diff != "" {
			t.Errorf("printed %s differs (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestRunBadConfig(t *testing.T) {
	validPairs := `"environment_key_pairs": [{"server_side_key": "ser.valid-key-0001", "client_side_key": "c1"}]`
	tests := []struct {
		name    string
		file    string // config.json content; "" means no file at the -config path
		env     map[string]string
		want    []string // substrings of the error
		secrets []string // must not appear in the error
	}{
		{
			name:    "server key without ser.",
			file:    `{"environment_key_pairs": [{"server_side_key": "NotAServerKey123456", "client_side_key": "c1"}]}`,
			want:    []string{`environment_key_pairs[0].server_side_key`, `must start with "ser."`},
			secrets: []string{"NotAServerKey123456"},
		},
		{name: "no key pairs", file: `{"api_url": "https://flagsmith.example.com/api/v1"}`, want: []string{"environment_key_pairs", "1 to 1000 entries like {"}},
		{name: "empty key pairs", file: `{"environment_key_pairs": []}`, want: []string{"environment_key_pairs", "1 to 1000 entries like {"}},
		{name: "empty client key", file: `{"environment_key_pairs": [{"server_side_key": "ser.valid-key-0001", "client_side_key": ""}]}`, want: []string{"environment_key_pairs[0].client_side_key"}},
		{name: "non-URL api_url", file: `{` + validPairs + `, "api_url": "not a url"}`, want: []string{`api_url: "not a url"`, "http(s) URL"}},
		{name: "api_url without a host", file: `{` + validPairs + `, "api_url": "https://"}`, want: []string{"api_url"}},
		{name: "negative frequency", file: `{` + validPairs + `, "api_poll_frequency_seconds": -1}`, want: []string{`api_poll_frequency_seconds: "-1" is out of range; want 1 to 86400 seconds`}},
		{name: "negative frequency by alias", file: `{` + validPairs + `, "api_poll_frequency": -2}`, want: []string{`api_poll_frequency_seconds: "-2"`}},
		{name: "frequency of the wrong type", file: `{` + validPairs + `, "api_poll_frequency_seconds": "often"}`, want: []string{"api_poll_frequency_seconds"}},
		{name: "negative timeout", file: `{` + validPairs + `, "api_poll_timeout_seconds": -3}`, want: []string{`api_poll_timeout_seconds: "-3"`}},
		{name: "bad log level", file: `{` + validPairs + `, "logging": {"log_level": "LOUD"}}`, want: []string{`logging.log_level: "LOUD"`}},
		{name: "port out of range", file: `{` + validPairs + `, "server": {"port": 70000}}`, want: []string{`server.port: "70000" is out of range; want 0 to 65535`}},
		{
			// The column is the offending comma's, as an editor counts it.
			name: "unreadable JSON",
			file: "{\n  \"api_url\": ,\n}",
			want: []string{"invalid JSON at line 2, column 14"},
		},
		{name: "truncated JSON", file: "{\n  \"api_url\": \"https://x.example\"", want: []string{"invalid JSON at line 2"}},
		{name: "missing config file", file: "", want: []string{"config.json", "no such file"}},
		{
			name: "every problem at once",
			file: `{"environment_key_pairs": [{"server_side_key": "NotAServerKey123456", "client_side_key": "c1"}], "api_poll_frequency_seconds": -1}`,
			want: []string{"environment_key_pairs[0].server_side_key", "api_poll_frequency_seconds"},
		},
		{
			name: "bad value from the environment",
			file: `{` + validPairs + `}`,
			env:  map[string]string{"API_POLL_FREQUENCY_SECONDS": "-5"},
			want: []string{`api_poll_frequency_seconds: "-5"`},
		},
		{
			name: "bad key pairs from the environment",
			file: `{` + validPairs + `}`,
			env:  map[string]string{"ENVIRONMENT_KEY_PAIRS": `[{"server_side_key": "NotAServerKey999999", "client_side_key": "c9"}]`},
			want: []string{"environment_key_pairs[0].server_side_key"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.json")
			if tt.file != "" {
				e2eWriteFile(t, filepath.Dir(path), "config.json", tt.file)
			}
			// -print-config: should the configuration wrongly pass, run
			// prints it instead of serving on port 8000.
			_, _, err := e2eRun(t, t.Context(), tt.env, "-config", path, "-print-config")
			if err == nil {
				t.Fatalf("run(-config %s) = nil; want an error", tt.file)
			}
			if got := exitCode(err); got != 1 {
				t.Errorf("exitCode(%v) = %d; want 1", err, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("run error = %q; want it to contain %q", err, w)
				}
			}
			for _, s := range tt.secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("run error = %q; holds the secret %q", err, s)
				}
			}
		})
	}
}

// e2ePrintedConfig runs -print-config and decodes its output.
func e2ePrintedConfig(t testing.TB, vars map[string]string, args ...string) Config {
	t.Helper()
	out, _, err := e2eRun(t, t.Context(), vars, append(args, "-print-config")...)
	if err != nil {
		t.Fatalf("run(%q -print-config) = %v; want nil", args, err)
	}
	var cfg Config
	mustUnmarshal(t, []byte(out), &cfg)
	return cfg
}

func TestRunConfigSources(t *testing.T) {
	dir := t.TempDir()
	filePath := e2eWriteFile(t, dir, "file.json", map[string]any{
		"environment_key_pairs":      []any{map[string]any{"server_side_key": "ser.from-file-0001", "client_side_key": "file-client"}},
		"api_url":                    "https://file.example.com/api/v1",
		"api_poll_frequency_seconds": 10,
	})
	otherPath := e2eWriteFile(t, dir, "other.json", map[string]any{
		"environment_key_pairs": []any{map[string]any{"server_side_key": "ser.from-other-0002", "client_side_key": "other-client"}},
	})
	aliasPath := e2eWriteFile(t, dir, "alias.json", map[string]any{
		"environment_key_pairs": []any{map[string]any{"server_side_key": "ser.from-file-0001", "client_side_key": "file-client"}},
		"api_poll_frequency":    7,
		"api_poll_timeout":      2,
	})
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		check func(t *testing.T, c Config)
	}{
		{
			name: "API_URL overrides the file, unquoted",
			env:  map[string]string{"API_URL": "https://env.example.com/api/v1/"},
			args: []string{"-config", filePath},
			check: func(t *testing.T, c Config) {
				if c.APIURL != "https://env.example.com/api/v1" {
					t.Errorf("api_url = %q; want the environment's, without its trailing slash", c.APIURL)
				}
			},
		},
		{
			name: "API_POLL_FREQUENCY_SECONDS overrides the file",
			env:  map[string]string{"API_POLL_FREQUENCY_SECONDS": "3"},
			args: []string{"-config", filePath},
			check: func(t *testing.T, c Config) {
				if c.PollFrequency != 3 {
					t.Errorf("api_poll_frequency_seconds = %v; want 3", c.PollFrequency)
				}
			},
		},
		{
			name: "ENVIRONMENT_KEY_PAIRS as JSON overrides the file",
			env:  map[string]string{"ENVIRONMENT_KEY_PAIRS": `[{"server_side_key": "ser.from-env-key-00005678", "client_side_key": "env-client"}]`},
			args: []string{"-config", filePath},
			check: func(t *testing.T, c Config) {
				if len(c.EnvironmentKeyPairs) != 1 || c.EnvironmentKeyPairs[0].ClientSideKey != "env-client" || c.EnvironmentKeyPairs[0].ServerSideKey != "ser.****5678" {
					t.Errorf("environment_key_pairs = %+v; want the environment's one pair", c.EnvironmentKeyPairs)
				}
			},
		},
		{
			name: "API_POLL_FREQUENCY (the alias) overrides the file",
			env:  map[string]string{"API_POLL_FREQUENCY": "4"},
			args: []string{"-config", filePath},
			check: func(t *testing.T, c Config) {
				if c.PollFrequency != 4 {
					t.Errorf("api_poll_frequency_seconds = %v; want 4", c.PollFrequency)
				}
			},
		},
		{
			name: "SERVER as JSON keeps the other server defaults",
			env:  map[string]string{"SERVER": `{"port": 9001}`},
			args: []string{"-config", filePath},
			check: func(t *testing.T, c Config) {
				if c.Server.Port != 9001 || c.Server.Host != "0.0.0.0" || c.Server.TimeoutKeepAlive != 5 {
					t.Errorf("server = %+v; want port 9001 with the default host and keep-alive", c.Server)
				}
			},
		},
		{
			name: "CONFIG_PATH names the file",
			env:  map[string]string{"CONFIG_PATH": otherPath},
			check: func(t *testing.T, c Config) {
				if c.EnvironmentKeyPairs[0].ClientSideKey != "other-client" {
					t.Errorf("client_side_key = %q; want other-client from CONFIG_PATH", c.EnvironmentKeyPairs[0].ClientSideKey)
				}
			},
		},
		{
			name: "-config wins over CONFIG_PATH",
			env:  map[string]string{"CONFIG_PATH": otherPath},
			args: []string{"-config", filePath},
			check: func(t *testing.T, c Config) {
				if c.EnvironmentKeyPairs[0].ClientSideKey != "file-client" {
					t.Errorf("client_side_key = %q; want file-client from -config", c.EnvironmentKeyPairs[0].ClientSideKey)
				}
			},
		},
		{
			name: "api_poll_frequency and api_poll_timeout aliases",
			args: []string{"-config", aliasPath},
			check: func(t *testing.T, c Config) {
				if c.PollFrequency != 7 || c.PollTimeout != 2 {
					t.Errorf("frequency, timeout = %v, %v; want 7, 2 from the aliases", c.PollFrequency, c.PollTimeout)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, e2ePrintedConfig(t, tt.env, tt.args...))
		})
	}

	t.Run("environment only, no file at the default path", func(t *testing.T) {
		t.Chdir(t.TempDir())
		c := e2ePrintedConfig(t, map[string]string{
			"ENVIRONMENT_KEY_PAIRS": `[{"server_side_key": "ser.from-env-key-00005678", "client_side_key": "env-client"}]`,
		})
		if len(c.EnvironmentKeyPairs) != 1 || c.EnvironmentKeyPairs[0].ClientSideKey != "env-client" {
			t.Errorf("environment_key_pairs = %+v; want the environment's pair", c.EnvironmentKeyPairs)
		}
	})
}

// When a file sets both a key and its alias, the key itself wins, every
// time (Flagsmith's proxy lists api_poll_frequency_seconds first among its
// alias choices).
func TestRunConfigAliasPrecedence(t *testing.T) {
	path := e2eWriteFile(t, t.TempDir(), "config.json",
		`{"environment_key_pairs": [{"server_side_key": "ser.valid-key-0001", "client_side_key": "c1"}], "api_poll_frequency": 7, "api_poll_frequency_seconds": 3}`)
	seen := map[float64]int{}
	for range 40 {
		seen[e2ePrintedConfig(t, nil, "-config", path).PollFrequency]++
	}
	if len(seen) != 1 || seen[3] == 0 {
		t.Errorf("api_poll_frequency_seconds over 40 loads = %v (value: times); want always 3, the canonical key's value", seen)
	}
}

// e2eOfflineConfig is a config serving the example document from its file on
// 127.0.0.1:port, logging JSON.
func e2eOfflineConfig(t testing.TB, port int, extra map[string]any) string {
	t.Helper()
	doc, err := filepath.Abs(demoDocumentPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"environment_key_pairs": []any{map[string]any{
			"server_side_key": demoServerKey, "client_side_key": demoClientKey, "environment_document_path": doc,
		}},
		"server":  map[string]any{"host": "127.0.0.1", "port": port},
		"logging": map[string]any{"log_format": "json"},
	}
	for k, v := range extra {
		cfg[k] = v
	}
	return e2eWriteFile(t, t.TempDir(), "config.json", cfg)
}

// e2eServeOnce runs the server with a context that has already ended: it
// starts, logs its warnings and stops at once.
func e2eServeOnce(t testing.TB, vars map[string]string, cfg string) []map[string]any {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, errOut, err := e2eRun(t, ctx, vars, "-config", cfg)
	if err != nil {
		t.Fatalf("run(-config %s) with an ended context = %v; want nil\n%s", cfg, err, errOut)
	}
	return logRecords(t, errOut)
}

func TestRunUnknownKeyWarns(t *testing.T) {
	recs := e2eServeOnce(t, nil, e2eOfflineConfig(t, 0, map[string]any{"not_a_key": 1}))
	for _, r := range recs {
		if w, _ := r["warning"].(string); strings.Contains(w, `"not_a_key"`) {
			if r["level"] != "WARN" {
				t.Errorf("unknown key logged at %v; want WARN", r["level"])
			}
			return
		}
	}
	t.Errorf("no warning names the unknown key \"not_a_key\"; logs: %v", recs)
}

// WEB_CONCURRENCY, a setting of Flagsmith's Python proxy, is accepted and
// ignored with an info line.
func TestRunWebConcurrencyAccepted(t *testing.T) {
	recs := e2eServeOnce(t, map[string]string{"WEB_CONCURRENCY": "4"}, e2eOfflineConfig(t, 0, nil))
	for _, r := range recs {
		line, _ := json.Marshal(r)
		if strings.Contains(string(line), "WEB_CONCURRENCY") {
			if r["level"] != "INFO" {
				t.Errorf("WEB_CONCURRENCY logged at %v; want INFO (ignored with an info line)", r["level"])
			}
			return
		}
	}
	t.Errorf("no log line mentions WEB_CONCURRENCY; logs: %v", recs)
}

// e2eContextFile is a small engine-test-data style context, with a comment.
const e2eContextFile = `// a premium identity: "limit" comes from the premium segment
{"context": {
  "environment": {"key": "env-key", "name": "Test"},
  "features": {
    "banner": {"key": "1", "name": "banner", "enabled": true, "value": "blue", "metadata": {"id": 1}},
    "limit": {"key": "2", "name": "limit", "enabled": false, "value": 10, "metadata": {"id": 2}}
  },
  "identity": {"identifier": "alice", "key": "env-key_alice", "traits": {"plan": "premium"}},
  "segments": {
    "7": {
      "key": "7", "name": "premium",
      "rules": [{"type": "ALL", "conditions": [{"property": "plan", "operator": "EQUAL", "value": "premium"}], "rules": []}],
      "overrides": [{"key": "3", "name": "limit", "enabled": true, "value": 100, "priority": 1, "metadata": {"id": 2}}],
      "metadata": {"id": 7, "source": "api"}
    }
  }
}}
`

func TestRunEvaluateContext(t *testing.T) {
	path := e2eWriteFile(t, t.TempDir(), "context.jsonc", e2eContextFile)
	out, _, err := e2eRun(t, t.Context(), nil, "evaluate", path)
	if err != nil {
		t.Fatalf("run(evaluate %s) = %v; want nil", path, err)
	}
	want := `{
	  "flags": {
	    "banner": {"name": "banner", "enabled": true, "value": "blue", "reason": "DEFAULT", "variant": null, "metadata": {"id": 1}},
	    "limit": {"name": "limit", "enabled": true, "value": 100, "reason": "TARGETING_MATCH; segment=premium", "variant": null, "metadata": {"id": 2}}
	  },
	  "segments": [{"name": "premium", "metadata": {"id": 7, "source": "api"}}]
	}`
	if diff := cmp.Diff(decodeLoose(t, []byte(want)), decodeLoose(t, []byte(out))); diff != "" {
		t.Errorf("run(evaluate) result differs (-want +got):\n%s", diff)
	}
}

func TestRunEvaluateDocument(t *testing.T) {
	args := []string{"evaluate", "-document", demoDocumentPath, "-identifier", "alice", "-trait", "plan=premium", "-trait", "n=5"}

	t.Run("table", func(t *testing.T) {
		out, _, err := e2eRun(t, t.Context(), nil, args...)
		if err != nil {
			t.Fatalf("run(%q) = %v; want nil", args, err)
		}
		for _, want := range []string{
			`identity "alice"`,
			"Traits: plan=premium, n=5",
			"Segments matched: premium_users",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("run(evaluate -document) output lacks %q:\n%s", want, out)
			}
		}
		rows := map[string][]string{}
		var header []string
		for line := range strings.Lines(out) {
			fields := strings.Fields(line)
			if len(fields) > 0 && fields[0] == "FEATURE" {
				header = fields
				continue
			}
			if header != nil && len(fields) == 0 {
				break // the table ends; the segments not matched follow
			}
			if header != nil {
				rows[fields[0]] = fields
			}
		}
		if diff := cmp.Diff([]string{"FEATURE", "ENABLED", "VALUE", "VARIANT", "REASON"}, header); diff != "" {
			t.Fatalf("table header differs (-want +got):\n%s\n%s", diff, out)
		}
		if got, want := len(rows), 24; got != want {
			t.Errorf("table has %d feature rows; want %d (every feature, server-only ones included)", got, want)
		}
		wantRows := map[string]string{
			"max_upload_mb":   "max_upload_mb true 100 TARGETING_MATCH; segment=premium_users",
			"welcome_message": `welcome_message true "Welcome to Acme Notes!" DEFAULT`,
			"dark_mode":       "dark_mode true null DEFAULT",
		}
		for name, want := range wantRows {
			if got := strings.Join(rows[name], " "); got != want {
				t.Errorf("row %s = %q; want %q", name, got, want)
			}
		}
		// billing_provider is in server_key_only_feature_ids.
		if got := strings.Join(rows["billing_provider"], " "); !strings.HasSuffix(got, "DEFAULT [server-only: client keys never see it]") {
			t.Errorf("row billing_provider = %q; want it marked server-only", got)
		}
		for _, want := range []string{
			"Segments not matched:",
			"beta_testers (key 2): a rule does not hold",
			`beta_tester EQUAL "true": read not set, holds false`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("run(evaluate -document) output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		out, _, err := e2eRun(t, t.Context(), nil, append(args, "-json")...)
		if err != nil {
			t.Fatalf("run(%q -json) = %v; want nil", args, err)
		}
		var res evaluationResult
		mustUnmarshal(t, []byte(out), &res)
		if got, want := len(res.Flags), 24; got != want {
			t.Errorf("len(flags) = %d; want %d", got, want)
		}
		f := res.Flags["max_upload_mb"]
		if string(f.Value) != "100" || f.Reason != "TARGETING_MATCH; segment=premium_users" {
			t.Errorf("max_upload_mb = %s, %q; want 100, \"TARGETING_MATCH; segment=premium_users\"", f.Value, f.Reason)
		}
		if len(res.Segments) != 1 || res.Segments[0].Name != "premium_users" {
			t.Errorf("segments = %+v; want premium_users only", res.Segments)
		}
	})

	t.Run("identity override", func(t *testing.T) {
		out, _, err := e2eRun(t, t.Context(), nil, "evaluate", "-document", demoDocumentPath, "-identifier", "vip@example.com", "-json")
		if err != nil {
			t.Fatalf("run(evaluate -identifier vip@example.com) = %v; want nil", err)
		}
		var res evaluationResult
		mustUnmarshal(t, []byte(out), &res)
		if f := res.Flags["dark_mode"]; string(f.Value) != `"midnight"` || !strings.HasPrefix(f.Reason, "TARGETING_MATCH") {
			t.Errorf("dark_mode = %s, %q; want \"midnight\" by TARGETING_MATCH", f.Value, f.Reason)
		}
	})
}

func TestRunEvaluateBadInput(t *testing.T) {
	dir := t.TempDir()
	invalid := e2eWriteFile(t, dir, "invalid.json", `{"context": {`)
	notDoc := e2eWriteFile(t, dir, "notdoc.json", `[1, 2, 3]`)
	ctxFile := e2eWriteFile(t, dir, "context.json", e2eContextFile)
	tests := []struct {
		name string
		args []string
	}{
		{"missing context file", []string{"evaluate", filepath.Join(dir, "missing.json")}},
		{"invalid context JSON", []string{"evaluate", invalid}},
		{"no context file", []string{"evaluate"}},
		{"two context files", []string{"evaluate", ctxFile, ctxFile}},
		{"missing document", []string{"evaluate", "-document", filepath.Join(dir, "missing.json")}},
		{"invalid document JSON", []string{"evaluate", "-document", invalid}},
		{"document that is not an object", []string{"evaluate", "-document", notDoc}},
		{"trait without =", []string{"evaluate", "-document", demoDocumentPath, "-identifier", "alice", "-trait", "plan"}},
		{"trait with an empty key", []string{"evaluate", "-document", demoDocumentPath, "-identifier", "alice", "-trait", "=x"}},
		{"trait without an identifier", []string{"evaluate", "-document", demoDocumentPath, "-trait", "plan=premium"}},
		{"unknown flag", []string{"evaluate", "-bogus", ctxFile}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := e2eRun(t, t.Context(), nil, tt.args...)
			if err == nil {
				t.Fatalf("run(%q) = nil; want an error", tt.args)
			}
			if got := exitCode(err); got != 2 {
				t.Errorf("exitCode(run(%q)) = %d (%v); want 2", tt.args, got, err)
			}
		})
	}
}

// TestRunHealthcheck probes a server that run serves in this process.
func TestRunHealthcheck(t *testing.T) {
	port := freePort(t)
	cfg := e2eOfflineConfig(t, port, nil)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	var serverLog logBuffer
	go func() { served <- run(ctx, []string{"-config", cfg}, e2eEnv(nil), io.Discard, &serverLog) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-served:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("serve still running 10s after its context ended")
		}
	}
	t.Cleanup(func() { _ = stop() })

	t.Run("ready server", func(t *testing.T) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, _, err := e2eRun(t, t.Context(), nil, "-config", cfg, "-healthcheck")
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("run(-healthcheck) = %v 5s after start; want nil\nserver log:\n%s", err, serverLog.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("server stopped", func(t *testing.T) {
		if err := stop(); err != nil {
			t.Fatalf("serve = %v; want nil after its context ended", err)
		}
		_, _, err := e2eRun(t, t.Context(), nil, "-config", cfg, "-healthcheck")
		if err == nil || exitCode(err) != 1 {
			t.Errorf("run(-healthcheck) on a dead port = %v (exit %d); want an error with exit 1", err, exitCode(err))
		}
	})

	t.Run("server not ready", func(t *testing.T) {
		port := freePort(t)
		// A document file that does not load: the proxy serves, unready.
		invalid := filepath.Join(t.TempDir(), "invalid.json")
		if err := os.WriteFile(invalid, []byte(`{"api_key": `), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg := e2eWriteFile(t, t.TempDir(), "config.json", map[string]any{
			"environment_key_pairs": []any{map[string]any{
				"server_side_key": demoServerKey, "client_side_key": demoClientKey, "environment_document_path": invalid,
			}},
			"server":  map[string]any{"host": "127.0.0.1", "port": port},
			"logging": map[string]any{"log_format": "json"},
		})
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- run(ctx, []string{"-config", cfg}, e2eEnv(nil), io.Discard, io.Discard) }()
		t.Cleanup(func() {
			cancel()
			<-served
		})
		// Liveness first, so the probe below meets a serving, unready proxy.
		waitStatus(t, &http.Client{Timeout: time.Second}, "http://127.0.0.1:"+strconv.Itoa(port)+"/proxy/health/liveness", http.StatusOK, 5*time.Second)
		_, _, err := e2eRun(t, t.Context(), nil, "-config", cfg, "-healthcheck")
		if err == nil || exitCode(err) != 1 {
			t.Errorf("run(-healthcheck) on an unready server = %v (exit %d); want an error with exit 1", err, exitCode(err))
		}
	})
}
