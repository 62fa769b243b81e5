package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Tests of the configuration table: every key has a row with a range, the
// README's table is the table's, every value outside a range is refused at
// start and at reload with every problem listed, and secrets and URL
// passwords never show.

// TestConfigTable ties configTable to Config: one row per key, in the order
// of Config's fields, each row's kind fitting its field, and the defaults
// inside their ranges. A new field without a row fails here.
func TestConfigTable(t *testing.T) {
	var rows []string
	for _, k := range configTable {
		rows = append(rows, k.key)
	}
	if diff := cmp.Diff(configSpecKeys(reflect.TypeFor[Config](), ""), rows); diff != "" {
		t.Errorf("configTable rows differ from Config's keys (-Config +configTable):\n%s", diff)
	}

	// A kind fits the Go type it reads.
	fits := map[configKind][]reflect.Kind{
		cfgSeconds:      {reflect.Float64},
		cfgWholeSeconds: {reflect.Int},
		cfgCount:        {reflect.Int, reflect.Int64},
		cfgNumber:       {reflect.Float64},
		cfgBool:         {reflect.Bool},
		cfgEnum:         {reflect.String},
		cfgText:         {reflect.String},
		cfgURL:          {reflect.String},
		cfgPath:         {reflect.String},
		cfgSecret:       {reflect.String},
		cfgServerKey:    {reflect.String},
		cfgList:         {reflect.Slice},
		cfgIgnored:      {reflect.Slice}, // json.RawMessage
	}
	cfg := defaultConfig()
	walkConfig(reflect.ValueOf(&cfg).Elem(), "", "", func(_, spec string, v reflect.Value) {
		k := configSpecs()[spec]
		if k == nil {
			return // reported above
		}
		kind := v.Type().Kind()
		if kind == reflect.Pointer {
			kind = v.Type().Elem().Kind()
		}
		if !slices.Contains(fits[k.kind], kind) {
			t.Errorf("%s: a %s field has the kind %d, which reads %v", spec, v.Type(), k.kind, fits[k.kind])
		}
		if k.meaning == "" || strings.Contains(k.meaning, "|") {
			t.Errorf("%s: meaning %q; want a text without |, for the README's table", spec, k.meaning)
		}
		if k.nullable != (v.Kind() == reflect.Pointer) {
			t.Errorf("%s: nullable = %v for a %s field", spec, k.nullable, v.Type())
		}
		switch k.kind {
		case cfgSeconds, cfgWholeSeconds:
			// The largest value must convert to a time.Duration exactly.
			if k.min < 0 || k.min > k.max || k.max*float64(time.Second) > math.MaxInt64/1000 {
				t.Errorf("%s: range %v to %v seconds; want 0 <= min <= max, far from time.Duration's limit", spec, k.min, k.max)
			}
			if seconds(k.max) != time.Duration(k.max)*time.Second {
				t.Errorf("seconds(%v) = %v; want exact", k.max, seconds(k.max))
			}
		case cfgCount, cfgText, cfgList:
			if k.min < 0 || k.min > k.max || k.max != math.Trunc(k.max) {
				t.Errorf("%s: range %v to %v; want whole numbers, 0 <= min <= max", spec, k.min, k.max)
			}
		case cfgEnum:
			if len(k.values) == 0 {
				t.Errorf("%s: an enum without values", spec)
			}
		}
	})
	// The defaults pass, pairs aside (required, so without a default).
	cfg.EnvironmentKeyPairs = []KeyPair{pairA}
	if errs := checkRanges(&cfg); len(errs) > 0 {
		t.Errorf("checkRanges(defaultConfig()) = %v; want the defaults inside their ranges", errs)
	}
}

// TestConfigRangesEveryKey refuses, for every number in configTable, a
// value under its minimum, over its maximum, NaN and the infinities (which
// JSON cannot carry but a program can), and 1e300; and accepts both bounds.
func TestConfigRangesEveryKey(t *testing.T) {
	for _, k := range configTable {
		if k.kind != cfgSeconds && k.kind != cfgWholeSeconds && k.kind != cfgCount && k.kind != cfgNumber {
			continue
		}
		fractions := k.kind == cfgSeconds || k.kind == cfgNumber
		bad := []float64{k.min - 1, k.max + 1, 1e300, -1e300}
		if fractions {
			bad = append(bad, k.min-k.min/10-1e-9, k.max*1.0001, math.NaN(), math.Inf(1), math.Inf(-1))
		}
		for _, v := range append(bad, k.min, k.max) {
			if !fractions && (math.Abs(v) > 1e15) {
				continue // beyond an int's reach; JSON refuses it as a type error
			}
			t.Run(fmt.Sprintf("%s=%v", k.key, v), func(t *testing.T) {
				cfg := testConfig(t)
				setConfigValue(t, &cfg, k.key, v)
				err := cfg.validate()
				inside := v >= k.min && v <= k.max
				switch {
				case inside && err != nil:
					t.Errorf("validate() with %s = %v: %v; want nil (a bound)", k.key, v, err)
				case !inside && err == nil:
					t.Errorf("validate() with %s = %v = nil; want it refused", k.key, v)
				case !inside && (!strings.HasPrefix(err.Error(), k.key+": ") || !strings.Contains(err.Error(), "want "+k.valid())):
					t.Errorf("validate() with %s = %v: %q; want a problem naming the key and %q", k.key, v, err, k.valid())
				}
			})
		}
	}
}

// setConfigValue sets the number at a dotted key of cfg.
func setConfigValue(t testing.TB, cfg *Config, key string, v float64) {
	t.Helper()
	found := false
	walkConfig(reflect.ValueOf(cfg).Elem(), "", "", func(k, _ string, f reflect.Value) {
		if k != key {
			return
		}
		found = true
		if f.Kind() == reflect.Pointer {
			f.Set(reflect.New(f.Type().Elem()))
			f = f.Elem()
		}
		if f.CanFloat() {
			f.SetFloat(v)
		} else {
			f.SetInt(int64(v))
		}
	})
	if !found {
		t.Fatalf("no config key %s", key)
	}
}

// TestConfigBounds: the settings that broke the proxy are refused at
// start, through loadConfig, each named with its value and its range; and a
// value of the wrong type hides no other problem.
func TestConfigBounds(t *testing.T) {
	const pairs = `"environment_key_pairs": [{"server_side_key": "ser.bounds-key-0001", "client_side_key": "bounds"}]`
	tests := []struct {
		name string
		body string   // config.json after the pairs
		want []string // the problems, whole, in order
	}{
		{
			// 1e10 s overflows time.Duration: the proxy polled 23 times a second.
			name: "poll frequency overflowing time.Duration",
			body: `"api_poll_frequency_seconds": 1e10`,
			want: []string{`api_poll_frequency_seconds: "1e+10" is out of range; want 1 to 86400 seconds`},
		},
		{
			name: "polls a hundred times a second",
			body: `"api_poll_frequency_seconds": 0.01`,
			want: []string{`api_poll_frequency_seconds: "0.01" is out of range; want 1 to 86400 seconds`},
		},
		{
			name: "the alias too",
			body: `"api_poll_frequency": 0.01`,
			want: []string{`api_poll_frequency_seconds: "0.01" is out of range; want 1 to 86400 seconds`},
		},
		{
			// Every response was cut before a byte was written.
			name: "a write timeout of a nanosecond",
			body: `"server": {"write_timeout_seconds": 1e-9}`,
			want: []string{`server.write_timeout_seconds: "1e-09" is out of range; want 0.1 to 3600 seconds`},
		},
		{
			// Slow-loris connections stayed for ever.
			name: "a read header timeout of 1e300 seconds",
			body: `"server": {"read_header_timeout_seconds": 1e300}`,
			want: []string{`server.read_header_timeout_seconds: "1e+300" is out of range; want 0.1 to 3600 seconds`},
		},
		{
			// Every stream handler panicked: NewTicker of a negative interval.
			name: "a heartbeat of 1e12 seconds",
			body: `"sse": {"heartbeat_seconds": 1e12}`,
			want: []string{`sse.heartbeat_seconds: "1e+12" is out of range; want 0.1 to 3600 seconds`},
		},
		{
			name: "a number JSON cannot hold in a float64",
			body: `"api_poll_timeout_seconds": 1e400`,
			want: []string{`api_poll_timeout_seconds: "1e400" (a number) is not valid; want 0.1 to 3600 seconds`},
		},
		{
			name: "a type error in one key and a range error in another",
			body: `"server": {"port": "http", "timeout_keep_alive": 0}, "sse": {"heartbeat_seconds": 1e12}`,
			want: []string{
				`server.port: "http" (a string) is not valid; want 0 to 65535`,
				`server.timeout_keep_alive: "0" is out of range; want 1 to 3600 whole seconds`,
				`sse.heartbeat_seconds: "1e+12" is out of range; want 0.1 to 3600 seconds`,
			},
		},
		{
			name: "two type errors in one object",
			body: `"server": {"port": "http", "host": 5, "drain_seconds": -1}`,
			want: []string{
				`server.host: "5" (a number) is not valid; want a string of 0 to 253 characters`,
				`server.port: "http" (a string) is not valid; want 0 to 65535`,
				`server.drain_seconds: "-1" is out of range; want 0 to 3600 seconds`,
			},
		},
		{
			name: "lists and limits",
			body: `"allow_origins": [], "limits": {"max_body_bytes": 1000000000000, "max_traits": 0}, "server": {"max_header_bytes": 100}, "sse": {"max_subscribers": 0}, "analytics": {"max_pending_keys": 1000000000}`,
			want: []string{
				`allow_origins: a list of 0 entries is not valid; want a list of 1 to 1000 entries, each a string of 1 to 2048 characters`,
				`server.max_header_bytes: "100" is out of range; want 1024 to 1048576 bytes`,
				`sse.max_subscribers: "0" is out of range; want 1 to 100000 streams`,
				`limits.max_body_bytes: "1000000000000" is out of range; want 1024 to 67108864 bytes`,
				`limits.max_traits: "0" is out of range; want 1 to 10000 traits`,
				`analytics.max_pending_keys: "1000000000" is out of range; want 1 to 1000000 keys`,
			},
		},
		{
			// A one-character admin token was accepted.
			name: "secrets shorter than 16 characters",
			body: `"admin_token": "x", "webhook_secret": "fifteen-chars-x", "sse": {"authentication_token": "short"}`,
			want: []string{
				`admin_token: a secret of 1 characters is too short (it is not shown); want a string of at least 16 characters`,
				`sse.authentication_token: a secret of 5 characters is too short (it is not shown); want a string of at least 16 characters`,
				`webhook_secret: a secret of 15 characters is too short (it is not shown); want a string of at least 16 characters`,
			},
		},
		{
			name: "a fleet: 65 peers, a short peer_secret",
			body: `"peers": [` + strings.Repeat(`"http://peer:8000", `, 64) + `"http://peer:8000"], "peer_secret": "fifteen-chars-x"`,
			want: []string{
				`peers: a list of 65 entries is not valid; want a list of 0 to 64 entries, each an http(s) URL`,
				`peer_secret: a secret of 15 characters is too short (it is not shown); want a string of at least 16 characters`,
			},
		},
		{
			name: "secrets of 16 characters",
			body: `"admin_token": "sixteen-chars-xx", "webhook_secret": "sixteen-chars-yy", "sse": {"authentication_token": "sixteen-chars-zz"}, "peer_secret": "sixteen-chars-ww"`,
		},
		{
			name: "a secret of the wrong type is not shown",
			body: `"admin_token": 123456789012345678901234567890`,
			want: []string{`admin_token: a number (not shown: it may hold a secret) is not valid; want a string of at least 16 characters`},
		},
		{
			name: "a grace period of null disables the check; a negative one is refused",
			body: `"health_check": {"environment_update_grace_period_seconds": -1}`,
			want: []string{`health_check.environment_update_grace_period_seconds: "-1" is out of range; want 0 to 3600 seconds, or null`},
		},
		{
			name: "an unknown key inside an object is a warning",
			body: `"server": {"prot": 9000}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.json")
			if err := os.WriteFile(path, []byte(`{`+pairs+`, `+tt.body+`}`), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := loadConfig(path, true, func(string) string { return "" })
			var got []string
			if err != nil {
				got = problems(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("loadConfig(%s) problems (-want +got):\n%s", tt.body, diff)
			}
		})
	}

	t.Run("warnings name nested unknown keys", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(path, []byte(`{`+pairs+`, "server": {"prot": 9000}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		_, warnings, err := loadConfig(path, true, func(string) string { return "" })
		if err != nil || !slices.Contains(warnings, `unknown config key "server.prot" ignored`) {
			t.Errorf("loadConfig = %v, warnings %q; want nil and a warning for server.prot", err, warnings)
		}
	})
}

// TestSecretMask: a mask shows no part of a secret shorter than 24
// characters; a longer one shows its last four, to tell keys apart. A
// server key shows its "ser.", which every server key has.
func TestSecretMask(t *testing.T) {
	tests := []struct {
		secret, want string
	}{
		{"", "****"},
		{"x", "****"},
		{"nine-char", "****"},                            // showed "****char"
		{"twenty-three-characters", "****"},              // 23
		{"twenty-four-characters-x", "****rs-x"},         // 24
		{"ser.", "ser.****"},                             // the prefix alone
		{"ser.short-key-0001", "ser.****"},               // 18
		{"ser.abcdefghijklmnopqrstuv", "ser.****stuv"},   // Flagsmith's length, 26
		{"admin-token-very-secret-9876", "****9876"},     // 28
		{"ser.SuperSecretServerKey1234", "ser.****1234"}, // 28
	}
	for _, tt := range tests {
		if got := secret(tt.secret).String(); got != tt.want {
			t.Errorf("secret(%q).String() = %q; want %q", tt.secret, got, tt.want)
		}
		if got := secret(tt.secret).LogValue().String(); got != tt.want {
			t.Errorf("secret(%q).LogValue() = %q; want %q", tt.secret, got, tt.want)
		}
	}
	// An unknown key a client sends may be a server key too.
	if got := maskedKey("ser.mistyped-0001"); got != "ser.****" {
		t.Errorf("maskedKey(a short server key) = %q; want %q", got, "ser.****")
	}
}

// TestMaskURL: the password of a URL never shows, nor a lone user name
// (a token); a URL that does not parse is masked too.
func TestMaskURL(t *testing.T) {
	tests := []struct {
		url, want string
	}{
		{"https://edge.api.flagsmith.com/api/v1", "https://edge.api.flagsmith.com/api/v1"},
		{"http://user:pass@flagsmith.internal:8000/api/v1", "http://user:****@flagsmith.internal:8000/api/v1"},
		{"https://TOKEN123@realtime.example", "https://****@realtime.example"},
		{"http://user:p@ss:w/rd@host/api", "http://user:****@host/api"},
		{"http://user:%7Bpass%7D@host", "http://user:****@host"},
		{"http://us er:pa ss@host", "http://us er:****@host"}, // does not parse
		{"user:pass@host", "user:****@host"},                  // no scheme
		{"", ""},
	}
	for _, tt := range tests {
		if got := maskURL(tt.url); got != tt.want {
			t.Errorf("maskURL(%q) = %q; want %q", tt.url, got, tt.want)
		}
	}
}

// TestPrintConfigMasksURLs: passwords in api_url and realtime_api_url are
// masked by -print-config, by GET /proxy/config, and in problems.
func TestPrintConfigMasksURLs(t *testing.T) {
	const password = "hunter2-db-password"
	path := e2eWriteFile(t, t.TempDir(), "config.json", map[string]any{
		"environment_key_pairs": []any{map[string]any{"server_side_key": "ser.print-key-0001", "client_side_key": "print"}},
		"api_url":               "https://proxy-user:" + password + "@flagsmith.internal/api/v1",
		"realtime_api_url":      "https://" + password + "@realtime.internal",
		"admin_token":           "admin-token-for-print-0001",
	})
	out, errOut, err := e2eRun(t, t.Context(), nil, "-config", path, "-print-config")
	if err != nil {
		t.Fatalf("run(-print-config) = %v; want nil", err)
	}
	if strings.Contains(out+errOut, "hunter2") {
		t.Errorf("-print-config shows the password:\n%s", out)
	}
	var got Config
	mustUnmarshal(t, []byte(out), &got)
	if got.APIURL != "https://proxy-user:****@flagsmith.internal/api/v1" || got.RealtimeAPIURL != "https://****@realtime.internal" {
		t.Errorf("-print-config api_url %q, realtime_api_url %q; want the passwords masked", got.APIURL, got.RealtimeAPIURL)
	}

	cfg, _, err := loadConfig(path, true, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, func(c *Config) { *c = cfg })
	rec := callHandler(t, s.handler(), "GET", "/proxy/config", map[string]string{"Authorization": "Bearer admin-token-for-print-0001"}, "")
	if rec.Code != 200 || strings.Contains(rec.Body.String(), "hunter2") || !strings.Contains(rec.Body.String(), "proxy-user:****@") {
		t.Errorf("GET /proxy/config = %d %s; want 200 with the passwords masked", rec.Code, rec.Body)
	}
	if s.config().APIURL != "https://proxy-user:"+password+"@flagsmith.internal/api/v1" {
		t.Errorf("the running api_url = %q; masking must not touch the configuration in force", s.config().APIURL)
	}

	// A problem quoting a URL masks it as well.
	bad := e2eWriteFile(t, t.TempDir(), "config.json", map[string]any{
		"environment_key_pairs": []any{map[string]any{"server_side_key": "ser.print-key-0001", "client_side_key": "print"}},
		"api_url":               "https://proxy-user:" + password + "@flagsmith.internal/api/v1?x=1",
		"realtime_api_url":      "ftp://proxy-user:" + password + "@realtime.internal",
	})
	_, _, err = loadConfig(bad, true, func(string) string { return "" })
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "realtime_api_url") || !strings.Contains(err.Error(), "api_url") {
		t.Errorf("loadConfig(URLs with passwords, invalid) = %v; want both named, the passwords masked", err)
	}
}

// TestConfigTableInREADME holds the README's configuration table to
// configTable: the rows under the header "| key | default | range |
// meaning |" must be configTableRows, cell by cell (spaces around cells do
// not matter). On a mismatch it prints the rows to paste.
func TestConfigTableInREADME(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := configTableRows()
	header := regexp.MustCompile(`^\|\s*key\s*\|\s*default\s*\|\s*range\s*\|\s*meaning\s*\|$`)
	lines := strings.Split(string(readme), "\n")
	var got []string
	for i, l := range lines {
		if !header.MatchString(strings.TrimSpace(l)) {
			continue
		}
		for _, row := range lines[i+2:] { // past the |---| line
			if !strings.HasPrefix(strings.TrimSpace(row), "|") {
				break
			}
			got = append(got, normalizeRow(row))
		}
		break
	}
	var normalized []string
	for _, r := range want {
		normalized = append(normalized, normalizeRow(r))
	}
	if diff := cmp.Diff(normalized, got); diff != "" {
		t.Errorf("README.md's configuration table differs from configTable (-configTable +README):\n%s\nThe table, to paste:\n\n%s\n",
			diff, strings.Join(append([]string{"| key | default | range | meaning |", "|---|---|---|---|"}, want...), "\n"))
	}
}

// normalizeRow trims the spaces around a Markdown row's cells.
func normalizeRow(row string) string {
	cells := strings.Split(strings.TrimSpace(row), "|")
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	return strings.Join(cells, "|")
}

// configTableRows writes the README's rows from configTable: the key (and
// its alias), the default as defaultConfig holds it, the range and the
// meaning.
func configTableRows() []string {
	aliases := map[string]string{}
	for alias, key := range configAliases {
		aliases[key] = alias
	}
	defaults := map[string]string{}
	cfg := defaultConfig()
	walkConfig(reflect.ValueOf(&cfg).Elem(), "", "", func(key, _ string, v reflect.Value) {
		defaults[key] = defaultText(v)
	})
	var rows []string
	for _, k := range configTable {
		key := "`" + k.key + "`"
		if alias, ok := aliases[k.key]; ok {
			key += " (alias `" + alias + "`)"
		}
		def := k.def
		if def == "" {
			def = defaults[k.key]
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s |", key, def, k.valid(), k.meaning))
	}
	return rows
}

// defaultText writes a default value as the README shows it.
func defaultText(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "`null`"
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.String:
		if v.String() == "" {
			return "none"
		}
		return "`" + v.String() + "`"
	case reflect.Float64:
		return formatNumber(v.Float())
	case reflect.Int, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	}
	if v.Len() == 0 {
		return "none"
	}
	raw, _ := json.Marshal(v.Interface())
	return "`" + string(raw) + "`"
}

// TestConfigBoundsAtReload: a reload that breaks a bound is refused whole,
// every problem logged (a value of the wrong type beside the others), and
// the running configuration stays. Before, a heartbeat of 1e12 s was
// applied and every stream handler panicked.
func TestConfigBoundsAtReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	h := newTestServer(t, withPairs(pairA), func(c *Config) { c.SSE.HeartbeatSeconds = minTimeoutSeconds }).listen(t, nil)
	h.publishDoc(t, clientKeyA, testDocument(clientKeyA, pollerUpdatedAt, "a"))
	src := &configSource{path: path, explicit: true, getenv: func(string) string { return "" }}
	before := h.live.Load()
	rejected := func(t *testing.T) []string {
		t.Helper()
		var last []string
		for _, rec := range h.logs.records(t) {
			if rec["msg"] == "configuration rejected; the running configuration stays" {
				last = nil
				for _, p := range asSlice(rec["problems"]) {
					last = append(last, fmt.Sprint(p))
				}
			}
		}
		return last
	}
	tests := []struct {
		name   string
		config map[string]any
		want   []string
	}{
		{
			name:   "a heartbeat of 1e12 seconds",
			config: map[string]any{"sse": map[string]any{"heartbeat_seconds": 1e12}},
			want:   []string{`sse.heartbeat_seconds: "1e+12" is out of range; want 0.1 to 3600 seconds`},
		},
		{
			name: "every finding at once, with a type error",
			config: map[string]any{
				"api_poll_frequency_seconds": 1e10,
				"server":                     map[string]any{"port": "http", "write_timeout_seconds": 1e-9, "read_header_timeout_seconds": 1e300},
				"sse":                        map[string]any{"heartbeat_seconds": 1e12},
				"admin_token":                "short",
			},
			want: []string{
				`api_poll_frequency_seconds: "1e+10" is out of range; want 1 to 86400 seconds`,
				`server.port: "http" (a string) is not valid; want 0 to 65535`,
				`server.read_header_timeout_seconds: "1e+300" is out of range; want 0.1 to 3600 seconds`,
				`server.write_timeout_seconds: "1e-09" is out of range; want 0.1 to 3600 seconds`,
				`admin_token: a secret of 5 characters is too short (it is not shown); want a string of at least 16 characters`,
				`sse.heartbeat_seconds: "1e+12" is out of range; want 0.1 to 3600 seconds`,
			},
		},
		{
			name:   "polls a hundred times a second",
			config: map[string]any{"api_poll_frequency_seconds": 0.01},
			want:   []string{`api_poll_frequency_seconds: "0.01" is out of range; want 1 to 86400 seconds`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.config["environment_key_pairs"] = []KeyPair{pairA}
			reloadWriteConfig(t, path, tt.config)
			h.reload(t.Context(), src, "file")
			if h.live.Load() != before {
				t.Fatalf("the reload replaced the running configuration; want it refused")
			}
			if diff := cmp.Diff(tt.want, rejected(t)); diff != "" {
				t.Errorf("logged problems (-want +got):\n%s", diff)
			}
		})
	}
	// Streams still serve, heartbeats at the running interval.
	st := sseOpen(t, h, sseStreamPath(clientKeyA), nil)
	for seen := 0; seen < 2; {
		if it := st.next(t, "a heartbeat at the running interval"); it.isComment {
			seen++
		}
	}
	if got := h.config().SSE.HeartbeatSeconds; got != minTimeoutSeconds {
		t.Errorf("sse.heartbeat_seconds in force = %v; want the running %v", got, minTimeoutSeconds)
	}
}

// TestConfigBoundsReloadEndToEnd rewrites the config file of a running
// binary with the settings that broke it: the reload is refused with every
// problem logged, streams keep their heartbeat, GET /proxy/config shows the
// running values, and nothing panics.
func TestConfigBoundsReloadEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildEdgeProxy(t)
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "a"))
	const token = "admin-token-bounds-0001"
	cfg := e2eReloadConfig(up, e2ePair(clientKeyA, serverKeyA))
	cfg["admin_token"] = token
	cfg["sse"] = map[string]any{"heartbeat_seconds": 0.2}
	p, path, base, client := startOnConfig(t, bin, cfg)

	bad := e2eReloadConfig(up, e2ePair(clientKeyA, serverKeyA))
	bad["admin_token"] = token
	bad["api_poll_frequency_seconds"] = 1e10
	bad["server"] = map[string]any{"host": "127.0.0.1", "port": 0, "write_timeout_seconds": 1e-9, "read_header_timeout_seconds": 1e300}
	bad["sse"] = map[string]any{"heartbeat_seconds": 1e12}
	reloadWriteConfig(t, path, bad)
	rec, _ := e2eWaitRecord(t, p, 0, "a rejected reload", func(rec map[string]any) bool {
		return rec["message"] == "configuration rejected; the running configuration stays" || rec["message"] == "configuration reloaded"
	})
	var got []string
	for _, problem := range asSlice(rec["problems"]) {
		key, _, _ := strings.Cut(fmt.Sprint(problem), ":")
		got = append(got, key)
	}
	want := []string{"api_poll_frequency_seconds", "server.read_header_timeout_seconds", "server.write_timeout_seconds", "sse.heartbeat_seconds"}
	if rec["message"] != "configuration rejected; the running configuration stays" || !slices.Equal(got, want) {
		t.Fatalf("reload logged %v; want it rejected for the keys %q", rec, want)
	}

	st := sseOpenStream(t, client, base+sseStreamPath(clientKeyA), nil)
	for seen := 0; seen < 2; {
		if it := st.next(t, "a heartbeat after the rejected reload"); it.isComment {
			seen++
		}
	}
	req, _ := http.NewRequest("GET", base+"/proxy/config", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var inForce Config
	err = json.NewDecoder(resp.Body).Decode(&inForce)
	resp.Body.Close()
	if err != nil || inForce.SSE.HeartbeatSeconds != 0.2 || inForce.PollFrequency != 1 {
		t.Errorf("GET /proxy/config: %v, heartbeat %v, poll frequency %v; want the running 0.2 and 1", err, inForce.SSE.HeartbeatSeconds, inForce.PollFrequency)
	}
	for _, line := range p.stderr() {
		if strings.Contains(line, "panic") {
			t.Errorf("edge-proxy logged a panic: %s", line)
		}
	}
}

// TestLogsMaskURLs: an upstream that cannot be reached is logged without
// the credentials of its URL: net/http hides a password, and maskURL a
// lone user name (a token) as well.
func TestLogsMaskURLs(t *testing.T) {
	const apiToken, realtimeToken, password = "api-token-in-url-0001", "realtime-token-0002", "api-password-0003"
	for _, apiURL := range []string{
		"http://" + apiToken + "@127.0.0.1:1/api/v1",
		"http://user:" + password + "@127.0.0.1:1/api/v1",
	} {
		s := newTestServer(t, withPairs(pairA), func(c *Config) {
			c.APIURL = apiURL
			c.RealtimeAPIURL = "http://" + realtimeToken + "@127.0.0.1:1"
		})
		s.poll(t, pollClient(t))
		s.logs.waitFor(t, logRecord{level: "WARN", msg: "poll failed", env: clientKeyA, err: "connection refused"})
		s.logs.waitFor(t, logRecord{level: "WARN", msg: "upstream stream lost", env: clientKeyA, err: "connection refused"})
		for _, secret := range []string{apiToken, realtimeToken, password} {
			if strings.Contains(s.logs.String(), secret) {
				t.Errorf("the log shows %q:\n%s", secret, s.logs)
			}
		}
	}
}
