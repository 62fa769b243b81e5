package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"
)

// Defaults, as documented in the README's configuration reference.
const (
	defaultConfigPath           = "config.json"
	defaultAPIURL               = "https://edge.api.flagsmith.com/api/v1"
	defaultPollFrequencySeconds = 10
	defaultPollTimeoutSeconds   = 5
	defaultHost                 = "0.0.0.0"
	defaultPort                 = 8000
	defaultKeepAliveSeconds     = 5
	defaultLogLevel             = "INFO"
	defaultLogFormat            = "generic"
	defaultLogMessageField      = "message"
	defaultGracePeriodSeconds   = 30
	defaultSSEHeartbeatSeconds  = 15
	// defaultSSEMaxSubscribers fits the default pod (64 MiB, GOMEMLIMIT
	// 54MiB): an idle stream costs about 25 KiB (its goroutine's stack and
	// net/http's buffers and connection state), so 1,000 open streams take
	// 25 MiB beside the proxy's own 10 MiB and the 8 MiB of
	// analytics.max_pending_bytes; see bench/RESULTS.md.
	defaultSSEMaxSubscribers  = 1000
	defaultMaxBodyBytes       = 1 << 20
	defaultMaxTraits          = 1000
	defaultMaxTraitKeyLength  = 200
	defaultReadHeaderTimeout  = 5
	defaultWriteTimeout       = 15
	defaultMaxHeaderBytes     = 16 << 10
	defaultShutdownSeconds    = 20
	defaultDrainSeconds       = 5
	defaultFullRefreshSeconds = 300
	// Flagsmith's Edge API paginates a large document; a thousand pages
	// is far beyond the largest seen, and bounds an upstream whose pages
	// never end.
	defaultMaxDocumentPages = 1000
	maxDocumentPagesLimit   = 100_000
	// Flag analytics: SDKs post every ~10 s, so the proxy
	// forwards at the same pace.
	defaultAnalyticsFlushSeconds   = 10
	defaultAnalyticsMaxPendingKeys = 100_000
	// The bytes held for the upstream (analytics sums and events, pending
	// or in flight), per process: with the default pod's 64 MiB this leaves
	// room for the snapshots, the streams and the requests being read.
	defaultAnalyticsMaxPendingBytes  = 8 << 20
	defaultAnalyticsMaxPendingEvents = 100_000
	// Flagsmith SDKs post events to {events_api_url}v1/events.
	defaultEventsAPIURL = "https://events.api.flagsmith.com/"
	serverKeyPrefix     = "ser."
	// A fleet: at most this many peer URLs (each may resolve to many
	// replicas).
	maxPeers = 64
	// Shadow verification is off unless asked for: each check is an API
	// call on the customer's Flagsmith quota. The ranges bound that cost.
	defaultVerifySampleRate   = 0
	defaultVerifyMaxPerSecond = 1
	minVerifyMaxPerSecond     = 0.01
	maxVerifyMaxPerSecond     = 100
	// Trait write-back is off unless asked for; each write is an API call.
	defaultWriteBackMaxPerSecond = 10
	minWriteBackMaxPerSecond     = 0.1
	maxWriteBackMaxPerSecond     = 1000
)

// The ranges of the analytics bounds (configTable says why).
const (
	minPendingBytes  = 64 << 10
	maxPendingBytes  = 1 << 30
	maxPendingEvents = 10_000_000
)

// Config is the proxy's configuration: config.json, then environment
// variables, then defaults. The zero value is not valid; use loadConfig.
type Config struct {
	EnvironmentKeyPairs []KeyPair         `json:"environment_key_pairs"`
	APIURL              string            `json:"api_url"`
	PollFrequency       float64           `json:"api_poll_frequency_seconds"`
	PollTimeout         float64           `json:"api_poll_timeout_seconds"`
	AllowOrigins        []string          `json:"allow_origins"`
	AllowCredentials    bool              `json:"allow_credentials"`
	EndpointCaches      json.RawMessage   `json:"endpoint_caches,omitempty"`
	Server              ServerConfig      `json:"server"`
	Logging             LoggingConfig     `json:"logging"`
	HealthCheck         HealthCheckConfig `json:"health_check"`
	CacheDir            string            `json:"cache_dir,omitempty"`
	AdminToken          secret            `json:"admin_token,omitempty"`
	SSE                 SSEConfig         `json:"sse"`
	Limits              LimitsConfig      `json:"limits"`
	Analytics           AnalyticsConfig   `json:"analytics"`
	// FullRefresh is how often a poll carries no conditions, so that an
	// upstream's wrong 304 cannot pin an old document for longer.
	FullRefresh float64 `json:"full_refresh_seconds"`
	// MaxDocumentPages bounds the pages one environment document may come
	// in (pages.go).
	MaxDocumentPages int `json:"max_document_pages"`
	// RealtimeAPIURL, when set, is followed for realtime events of every
	// polled environment: Flagsmith's realtime service, or another proxy.
	RealtimeAPIURL string `json:"realtime_api_url,omitempty"`
	// WebhookSecret enables POST /proxy/webhook for Flagsmith's webhooks.
	WebhookSecret secret `json:"webhook_secret,omitempty"`
	// Peers are base URLs of the fleet's replicas, a host resolving to
	// several addresses meaning each of them: a push this replica receives
	// is relayed to every other one (peers.go).
	Peers []string `json:"peers,omitempty"`
	// PeerSecret signs the relays sent to peers and must sign those
	// received (POST /proxy/peer-refresh).
	PeerSecret secret `json:"peer_secret,omitempty"`
	// Verify and WriteBack keep Flagsmith the source of truth (verify.go,
	// writeback.go).
	Verify    VerifyConfig    `json:"verify"`
	WriteBack WriteBackConfig `json:"write_back"`
}

// VerifyConfig is shadow verification: a share of identity requests asked
// again of the upstream and the answers compared.
type VerifyConfig struct {
	// SampleRate is the share of identity requests checked, 0 to 1.
	SampleRate float64 `json:"sample_rate"`
	// MaxPerSecond caps the checks of the whole process.
	MaxPerSecond float64 `json:"max_per_second"`
}

// WriteBackConfig is trait write-back: identities and traits SDKs send,
// written to the upstream.
type WriteBackConfig struct {
	Enabled bool `json:"enabled"`
	// MaxPerSecond caps the writes of the whole process.
	MaxPerSecond float64 `json:"max_per_second"`
}

// KeyPair is one Flagsmith environment the proxy serves.
type KeyPair struct {
	ServerSideKey secret `json:"server_side_key"`
	// ServerSideKeys lists the keys of a rotation, preferred first; SDKs
	// may use any of them. After validation ServerSideKey is the first
	// key, and ServerSideKeys is nil unless there are several (serverKeys).
	ServerSideKeys []secret `json:"server_side_keys,omitempty"`
	ClientSideKey  string   `json:"client_side_key"`
	// DocumentPath, when set, loads the document from this file instead of
	// the API, and reloads it when the file changes.
	DocumentPath string `json:"environment_document_path,omitempty"`
}

type ServerConfig struct {
	Host             string `json:"host"`
	Port             int    `json:"port"`
	ProxyHeaders     bool   `json:"proxy_headers"`
	TimeoutKeepAlive int    `json:"timeout_keep_alive"`
	// ReadHeaderTimeout bounds slow-loris clients; WriteTimeout bounds a whole
	// non-streaming response.
	ReadHeaderTimeout float64 `json:"read_header_timeout_seconds"`
	WriteTimeout      float64 `json:"write_timeout_seconds"`
	MaxHeaderBytes    int     `json:"max_header_bytes"`
	ShutdownTimeout   float64 `json:"shutdown_timeout_seconds"`
	// DrainSeconds is how long the proxy keeps serving after SIGTERM with
	// readiness 503, so load balancers stop sending before the port closes.
	DrainSeconds float64 `json:"drain_seconds"`
	// TLS, when both files are set, serves HTTPS (and HTTP/2) instead of HTTP.
	TLS ServerTLSConfig `json:"tls"`
}

// ServerTLSConfig names the PEM files of the certificate chain and its
// private key. They are re-read when they change (certificate rotation).
type ServerTLSConfig struct {
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
}

// serverKeys is every server key of the pair, preferred first.
func (p KeyPair) serverKeys() []secret {
	if len(p.ServerSideKeys) > 0 {
		return p.ServerSideKeys
	}
	return []secret{p.ServerSideKey}
}

// collectServerKeys gathers the pair's server keys, server_side_keys first,
// trimmed and without repeats, each with the field it came from (for
// errors). Empty entries are kept, to be reported.
func (p *KeyPair) collectServerKeys(i int) (keys []secret, fields []string) {
	add := func(k secret, field string) {
		k = secret(strings.TrimSpace(string(k)))
		if k != "" && slices.Contains(keys, k) {
			return
		}
		keys, fields = append(keys, k), append(fields, field)
	}
	for j, k := range p.ServerSideKeys {
		add(k, fmt.Sprintf("environment_key_pairs[%d].server_side_keys[%d]", i, j))
	}
	if p.ServerSideKey != "" || len(p.ServerSideKeys) == 0 {
		add(p.ServerSideKey, fmt.Sprintf("environment_key_pairs[%d].server_side_key", i))
	}
	return keys, fields
}

// enabled reports whether HTTPS is configured.
func (t ServerTLSConfig) enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

type LoggingConfig struct {
	LogLevel        string `json:"log_level"`
	LogFormat       string `json:"log_format"`
	EnableAccessLog bool   `json:"enable_access_log"`
	// MessageField names the log message's field, as in Flagsmith's proxy.
	MessageField string `json:"log_event_field_name"`
}

type HealthCheckConfig struct {
	// GracePeriod is nil when the staleness check is disabled (JSON null).
	GracePeriod *float64 `json:"environment_update_grace_period_seconds"`
}

type SSEConfig struct {
	Enabled          bool    `json:"enabled"`
	HeartbeatSeconds float64 `json:"heartbeat_seconds"`
	MaxSubscribers   int     `json:"max_subscribers"`
	// AuthenticationToken enables POST /sse/environments/{key}/queue-change,
	// the push self-hosted Flagsmith sends to its SSE_SERVER_BASE_URL.
	AuthenticationToken secret `json:"authentication_token,omitempty"`
}

type LimitsConfig struct {
	MaxBodyBytes      int64 `json:"max_body_bytes"`
	MaxTraits         int   `json:"max_traits"`
	MaxTraitKeyLength int   `json:"max_trait_key_length"`
}

// AnalyticsConfig is flag analytics: counts posted by SDKs, summed and
// forwarded upstream.
type AnalyticsConfig struct {
	Enabled              bool    `json:"enabled"`
	FlushIntervalSeconds float64 `json:"flush_interval_seconds"`
	// MaxPendingKeys bounds each environment's counts waiting to be
	// forwarded; past it new keys are dropped and counted.
	MaxPendingKeys int `json:"max_pending_keys"`
	// MaxPendingBytes bounds, per process, the bytes held for the upstream:
	// analytics sums and events waiting to be forwarded or on their way.
	// Past it new ones are dropped and counted.
	MaxPendingBytes int64 `json:"max_pending_bytes"`
	// MaxPendingEvents bounds each environment's events waiting to be
	// forwarded or on their way; past it new ones are dropped and counted.
	MaxPendingEvents int `json:"max_pending_events"`
	// EventsAPIURL is where events posted to the relay go: Flagsmith's
	// events API, which SDKs post to at {events_api_url}v1/events.
	EventsAPIURL string `json:"events_api_url"`
}

// maskedKey shortens a key that is not a known secret (an unknown key sent by
// a client) so that logs and errors never echo it whole.
func maskedKey(k string) string {
	if strings.HasPrefix(k, serverKeyPrefix) {
		return secret(k).String() // a server key that is not configured is a secret still
	}
	if len(k) > 6 {
		return k[:6] + "…"
	}
	return k
}

func defaultConfig() Config {
	grace := float64(defaultGracePeriodSeconds)
	return Config{
		APIURL:        defaultAPIURL,
		PollFrequency: defaultPollFrequencySeconds,
		PollTimeout:   defaultPollTimeoutSeconds,
		AllowOrigins:  []string{"*"},
		Server: ServerConfig{
			Host: defaultHost, Port: defaultPort, TimeoutKeepAlive: defaultKeepAliveSeconds,
			ReadHeaderTimeout: defaultReadHeaderTimeout, WriteTimeout: defaultWriteTimeout,
			MaxHeaderBytes: defaultMaxHeaderBytes, ShutdownTimeout: defaultShutdownSeconds,
			DrainSeconds: defaultDrainSeconds,
		},
		Logging:     LoggingConfig{LogLevel: defaultLogLevel, LogFormat: defaultLogFormat, MessageField: defaultLogMessageField},
		HealthCheck: HealthCheckConfig{GracePeriod: &grace},
		SSE:         SSEConfig{Enabled: true, HeartbeatSeconds: defaultSSEHeartbeatSeconds, MaxSubscribers: defaultSSEMaxSubscribers},
		Limits:      LimitsConfig{MaxBodyBytes: defaultMaxBodyBytes, MaxTraits: defaultMaxTraits, MaxTraitKeyLength: defaultMaxTraitKeyLength},
		Analytics: AnalyticsConfig{
			Enabled: true, FlushIntervalSeconds: defaultAnalyticsFlushSeconds, MaxPendingKeys: defaultAnalyticsMaxPendingKeys,
			MaxPendingBytes: defaultAnalyticsMaxPendingBytes, MaxPendingEvents: defaultAnalyticsMaxPendingEvents,
			EventsAPIURL: defaultEventsAPIURL,
		},
		FullRefresh: defaultFullRefreshSeconds,

		MaxDocumentPages: defaultMaxDocumentPages,
		Verify:           VerifyConfig{SampleRate: defaultVerifySampleRate, MaxPerSecond: defaultVerifyMaxPerSecond},
		WriteBack:        WriteBackConfig{MaxPerSecond: defaultWriteBackMaxPerSecond},
	}
}

// The json tags of Config are the one list of configuration keys. Each
// top-level key is read from the config file under its tag and from the
// environment under its tag in upper case (API_URL), decoded onto its
// field's default, and printed by printable. A new setting is a new field
// with its tag, here or in a nested struct, and its row in configTable
// (configkeys.go: its range and meaning, from which the README's table is
// generated; TestConfigTable holds the fields and the rows together).
// configAliases only adds older spellings of a key.
var configAliases = map[string]string{
	"api_poll_frequency": "api_poll_frequency_seconds",
	"api_poll_timeout":   "api_poll_timeout_seconds",
}

// configKeys returns the top-level keys in the order of Config's fields,
// which is also the order problems with them are reported in.
func configKeys() []string {
	t := reflect.TypeFor[Config]()
	keys := make([]string, t.NumField())
	for i := range keys {
		keys[i] = configTag(t.Field(i))
	}
	return keys
}

func configTag(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// canonicalConfigKey returns the key an accepted spelling stands for.
func canonicalConfigKey(k string) (string, bool) {
	if canonical, ok := configAliases[k]; ok {
		return canonical, true
	}
	return k, slices.Contains(configKeys(), k)
}

// loadConfig reads the config file (a missing file is fine when the
// environment supplies what is required), applies environment variables and
// validates. Warnings (unknown keys, ignored settings) are returned for the
// caller to log once logging is configured. It is also how a reload reads
// the configuration, so it never blocks on the file (see readRegularFile).
func loadConfig(path string, explicit bool, getenv func(string) string) (Config, []string, error) {
	cfg, _, warnings, err := loadConfigPaths(path, explicit, getenv)
	return cfg, warnings, err
}

// writtenPaths maps each file path resolved from the config file's folder
// to the path as the file wrote it, so that an error about a file can say
// how its path was found.
type writtenPaths map[string]string

// loadConfigPaths is loadConfig, also returning how the file's relative
// paths were resolved.
func loadConfigPaths(path string, explicit bool, getenv func(string) string) (Config, writtenPaths, []string, error) {
	var warnings []string
	merged := map[string]any{}
	fileMissing := false
	var written writtenPaths
	data, err := readRegularFile(path, maxConfigBytes)
	switch {
	case err == nil:
		var fromFile map[string]any
		if err := unmarshalNumbers(data, &fromFile); err != nil {
			return Config{}, nil, nil, fmt.Errorf("config %s: %s", path, describeJSONError(data, err))
		}
		keys := make([]string, 0, len(fromFile))
		for k := range fromFile {
			keys = append(keys, k)
		}
		// Aliases first, so that a canonical key given alongside its alias wins.
		sort.Slice(keys, func(i, j int) bool {
			_, ai := configAliases[keys[i]]
			_, aj := configAliases[keys[j]]
			if ai != aj {
				return ai
			}
			return keys[i] < keys[j]
		})
		for _, k := range keys {
			canonical, ok := canonicalConfigKey(k)
			if !ok {
				warnings = append(warnings, fmt.Sprintf("unknown config key %q ignored", k))
				continue
			}
			merged[canonical] = fromFile[k]
		}
		written = resolveFilePaths(merged, filepath.Dir(path))
	case errors.Is(err, os.ErrNotExist) && !explicit:
		fileMissing = true
		warnings = append(warnings, fmt.Sprintf("config file %s not found; using environment variables and defaults", path))
	default:
		return Config{}, nil, nil, fmt.Errorf("config %s: %w", path, err)
	}

	// The environment wins over the file: an object merges into the file's
	// object key by key (SERVER='{"port": 9000}' keeps the file's host),
	// anything else replaces it. A value that is not JSON is taken as a
	// string, so API_URL=https://… needs no quotes; a key that holds a
	// string (a secret, a path, a URL) always takes the variable verbatim,
	// so ADMIN_TOKEN=12345678901234567890 stays a string.
	// Aliases first here too, so that the canonical variable wins.
	aliases := slices.Sorted(maps.Keys(configAliases))
	for _, k := range append(aliases, configKeys()...) {
		v := getenv(strings.ToUpper(k))
		if v == "" {
			continue
		}
		canonical, _ := canonicalConfigKey(k)
		var value any = v
		if !takesString(canonical) {
			var parsed any
			if unmarshalNumbers([]byte(v), &parsed) == nil {
				value = parsed
			}
		}
		merged[canonical] = mergeJSON(merged[canonical], value)
	}

	// Values of the wrong type are reported first, each once; the keys
	// they leave at their defaults are checked with the rest, so one
	// wrong type hides no other problem.
	cfg := defaultConfig()
	dec := configDecoder{}
	dec.decode(reflect.ValueOf(&cfg).Elem(), merged, "", "")
	warnings = append(warnings, dec.warnings...)
	errs := dec.problems
	if err := cfg.validate(); err != nil {
		for _, e := range problemList(err) {
			if !dec.failedAt(e) {
				errs = append(errs, e)
			}
		}
	}
	sortProblems(errs)
	if len(errs) > 0 {
		if fileMissing {
			// "environment_key_pairs is required" alone would hide the cause.
			abs, _ := filepath.Abs(path)
			errs = slices.Insert(errs, 0, error(fmt.Errorf("config file %s not found (give -config or CONFIG_PATH, or set the keys as environment variables)", abs)))
		}
		return Config{}, nil, warnings, errors.Join(errs...)
	}
	return cfg, written, warnings, nil
}

// maxConfigBytes bounds the config file read: a config is kilobytes.
const maxConfigBytes = 4 << 20

// unmarshalNumbers decodes JSON keeping numbers as written (json.Number), so
// that a value re-encoded after merging is the value the user wrote.
func unmarshalNumbers(data []byte, v any) error {
	if !json.Valid(data) {
		return json.Unmarshal(data, v) // the syntax error, with its offset
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}

// mergeJSON lays over on base: objects merge key by key, recursively;
// anything else in over replaces base.
func mergeJSON(base, over any) any {
	b, bok := base.(map[string]any)
	o, ook := over.(map[string]any)
	if !bok || !ook {
		return over
	}
	out := make(map[string]any, len(b)+len(o))
	maps.Copy(out, b)
	for k, v := range o {
		out[k] = mergeJSON(b[k], v)
	}
	return out
}

// filePaths are where config.json holds file paths, as object keys ("*"
// walks an array's elements). Relative ones are relative to the file's
// folder, so a config works from whatever directory the proxy starts in.
var filePaths = [][]string{
	{"cache_dir"},
	{"environment_key_pairs", "*", "environment_document_path"},
	{"server", "tls", "cert_file"},
	{"server", "tls", "key_file"},
}

// It returns each resolved path with the path as written.
func resolveFilePaths(fromFile map[string]any, dir string) writtenPaths {
	written := writtenPaths{}
	var walk func(v any, at []string) any
	walk = func(v any, at []string) any {
		if len(at) == 0 {
			if p, ok := v.(string); ok && p != "" && !filepath.IsAbs(p) {
				resolved := filepath.Join(dir, p)
				written[resolved] = p
				return resolved
			}
			return v
		}
		switch v := v.(type) {
		case map[string]any:
			if child, ok := v[at[0]]; ok {
				v[at[0]] = walk(child, at[1:])
			}
		case []any:
			if at[0] == "*" {
				for i := range v {
					v[i] = walk(v[i], at[1:])
				}
			}
		}
		return v
	}
	for _, at := range filePaths {
		walk(fromFile, at)
	}
	return written
}

// checkDocumentFiles reports every environment_document_path of cfg that
// does not exist, saying how the path was found (written, how the config
// file at configPath wrote the paths it resolved): a proxy started without
// its document would otherwise answer 503 to every request with only a log
// line to say why. A file that exists but does not load is the file
// watcher's to report (it is retried when it changes).
func checkDocumentFiles(cfg *Config, configPath string, written writtenPaths) error {
	var errs []error
	for i, p := range cfg.EnvironmentKeyPairs {
		if p.DocumentPath == "" {
			continue
		}
		_, err := os.Stat(p.DocumentPath)
		if !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		how := "an absolute path"
		if w, ok := written[p.DocumentPath]; ok {
			dir := filepath.Dir(configPath)
			if abs, err := filepath.Abs(dir); err == nil {
				dir = abs
			}
			how = fmt.Sprintf("%q as written, relative to the config file's folder %s", w, dir)
		} else if !filepath.IsAbs(p.DocumentPath) {
			wd, _ := os.Getwd()
			how = fmt.Sprintf("relative to the working directory %s (not from the config file)", wd)
		}
		errs = append(errs, fmt.Errorf("environment_key_pairs[%d].environment_document_path: %s does not exist (%s)", i, p.DocumentPath, how))
	}
	return errors.Join(errs...)
}

// configDecoder lays the merged file and environment onto the defaults,
// value by value, so that every value of the wrong type is reported, each
// with its key, and the other values are still decoded and checked.
type configDecoder struct {
	problems []error
	warnings []string
	failed   []string // keys whose value was of the wrong type
}

// decode lays raw, a JSON value decoded with json.Number, onto v, which
// holds its default. An object merges field by field, so that
// {"server": {"port": 9000}} keeps the other defaults; anything else
// replaces v, and a list of objects decodes entry by entry. JSON null
// leaves an object as it is, as encoding/json does.
func (d *configDecoder) decode(v reflect.Value, raw any, key, spec string) {
	switch t := v.Type(); {
	case t.Kind() == reflect.Struct:
		if raw == nil {
			return
		}
		obj, ok := raw.(map[string]any)
		if !ok {
			d.wrongType(key, spec, raw)
			return
		}
		known := map[string]bool{}
		for i := range t.NumField() {
			tag := configTag(t.Field(i))
			known[tag] = true
			if child, ok := obj[tag]; ok {
				d.decode(v.Field(i), child, joinKey(key, tag), joinKey(spec, tag))
			}
		}
		for _, name := range slices.Sorted(maps.Keys(obj)) {
			if !known[name] && key != "" { // top-level keys were sorted out already
				d.warnings = append(d.warnings, fmt.Sprintf("unknown config key %q ignored", joinKey(key, name)))
			}
		}
	case isObjectList(t):
		if raw == nil {
			v.SetZero()
			return
		}
		list, ok := raw.([]any)
		if !ok {
			d.wrongType(key, spec, raw)
			return
		}
		out := reflect.MakeSlice(t, len(list), len(list))
		for i, entry := range list {
			d.decode(out.Index(i), entry, fmt.Sprintf("%s[%d]", key, i), spec+"[]")
		}
		v.Set(out)
	default:
		// Decoded into a fresh value, so a failure leaves the default whole.
		fresh := reflect.New(t)
		data, err := json.Marshal(raw)
		if err == nil {
			err = json.Unmarshal(data, fresh.Interface())
		}
		if err != nil {
			d.wrongType(key, spec, raw)
			return
		}
		v.Set(fresh.Elem())
	}
}

// wrongType reports raw, which does not fit the key, and what would.
func (d *configDecoder) wrongType(key, spec string, raw any) {
	d.failed = append(d.failed, key)
	want := "an object"
	shown := true
	if k := configSpecs()[spec]; k != nil {
		want, shown = k.valid(), !k.hidden()
	}
	if !shown {
		d.problems = append(d.problems, fmt.Errorf("%s: %s (not shown: it may hold a secret) is not valid; want %s", key, jsonType(raw), want))
		return
	}
	text, _ := json.Marshal(raw)
	if s, ok := raw.(string); ok {
		text = []byte(maskURL(s))
	}
	d.problems = append(d.problems, fmt.Errorf("%s: %s (%s) is not valid; want %s", key, quoteShort(string(text)), jsonType(raw), want))
}

// failedAt reports whether problem is about a key whose value was of the
// wrong type, or a part of it: that key was reported once already.
func (d *configDecoder) failedAt(problem error) bool {
	key, _, _ := strings.Cut(problem.Error(), ": ")
	for _, f := range d.failed {
		if key == f || strings.HasPrefix(key, f+".") || strings.HasPrefix(key, f+"[") {
			return true
		}
	}
	return false
}

// jsonType names the type of a JSON value decoded with json.Number.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	}
	return "an object"
}

// takesString reports whether the top-level key holds a string (a URL, a
// path, a secret).
func takesString(key string) bool {
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		if configTag(t.Field(i)) == key {
			return t.Field(i).Type.Kind() == reflect.String
		}
	}
	return false
}

// describeJSONError turns a syntax error's offset into a line and column.
func describeJSONError(data []byte, err error) string {
	var syn *json.SyntaxError
	if !errors.As(err, &syn) {
		return err.Error()
	}
	line, col := 1, 1
	// Offset counts the offending byte itself.
	for _, c := range data[:min(max(int(syn.Offset)-1, 0), len(data))] {
		if c == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return fmt.Sprintf("invalid JSON at line %d, column %d: %v", line, col, err)
}

func (c *Config) pollFrequency() time.Duration { return seconds(c.PollFrequency) }
func (c *Config) pollTimeout() time.Duration   { return seconds(c.PollTimeout) }
func (c *Config) fullRefresh() time.Duration   { return seconds(c.FullRefresh) }

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// addr is the listen address.
func (c *Config) addr() string {
	host := c.Server.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("%s:%d", host, c.Server.Port)
}

// printable is the effective configuration with secrets and the passwords
// of URLs masked (masked).
func (c *Config) printable() ([]byte, error) {
	out, err := c.masked()
	if err != nil {
		return nil, err
	}
	return json.MarshalIndent(out, "", "  ")
}
