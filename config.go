package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
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
	defaultSSEMaxSubscribers    = 10000
	defaultMaxBodyBytes         = 1 << 20
	defaultMaxTraits            = 1000
	defaultMaxTraitKeyLength    = 200
	defaultReadHeaderTimeout    = 5
	defaultWriteTimeout         = 15
	defaultMaxHeaderBytes       = 16 << 10
	defaultShutdownSeconds      = 20
	defaultFullRefreshSeconds   = 300
	serverKeyPrefix             = "ser."
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
	// FullRefresh is how often a poll carries no conditions, so that an
	// upstream's wrong 304 cannot pin an old document for longer.
	FullRefresh float64 `json:"full_refresh_seconds"`
	// RealtimeAPIURL, when set, is followed for realtime events of every
	// polled environment: Flagsmith's realtime service, or another proxy.
	RealtimeAPIURL string `json:"realtime_api_url,omitempty"`
	// WebhookSecret enables POST /proxy/webhook for Flagsmith's webhooks.
	WebhookSecret secret `json:"webhook_secret,omitempty"`
}

// KeyPair is one Flagsmith environment the proxy serves.
type KeyPair struct {
	ServerSideKey secret `json:"server_side_key"`
	ClientSideKey string `json:"client_side_key"`
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
	// TLS, when both files are set, serves HTTPS (and HTTP/2) instead of HTTP.
	TLS ServerTLSConfig `json:"tls"`
}

// ServerTLSConfig names the PEM files of the certificate chain and its
// private key. They are re-read when they change (certificate rotation).
type ServerTLSConfig struct {
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
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

// secret is a credential. It prints masked, so it cannot reach a log, an
// error or the printed configuration in clear by accident.
type secret string

func (s secret) String() string {
	if len(s) <= 8 {
		return "****"
	}
	prefix := ""
	if strings.HasPrefix(string(s), serverKeyPrefix) {
		prefix = serverKeyPrefix
	}
	return prefix + "****" + string(s[len(s)-4:])
}

func (s secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// maskedKey shortens a key that is not a known secret (an unknown key sent by
// a client) so that logs and errors never echo it whole.
func maskedKey(k string) string {
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
		},
		Logging:     LoggingConfig{LogLevel: defaultLogLevel, LogFormat: defaultLogFormat, MessageField: defaultLogMessageField},
		HealthCheck: HealthCheckConfig{GracePeriod: &grace},
		SSE:         SSEConfig{Enabled: true, HeartbeatSeconds: defaultSSEHeartbeatSeconds, MaxSubscribers: defaultSSEMaxSubscribers},
		Limits:      LimitsConfig{MaxBodyBytes: defaultMaxBodyBytes, MaxTraits: defaultMaxTraits, MaxTraitKeyLength: defaultMaxTraitKeyLength},
		FullRefresh: defaultFullRefreshSeconds,
	}
}

// configKeys are the accepted top-level keys; aliases map to their key.
var configKeys = map[string]string{
	"environment_key_pairs":      "environment_key_pairs",
	"api_url":                    "api_url",
	"api_poll_frequency_seconds": "api_poll_frequency_seconds",
	"api_poll_frequency":         "api_poll_frequency_seconds",
	"api_poll_timeout_seconds":   "api_poll_timeout_seconds",
	"api_poll_timeout":           "api_poll_timeout_seconds",
	"allow_origins":              "allow_origins",
	"allow_credentials":          "allow_credentials",
	"endpoint_caches":            "endpoint_caches",
	"server":                     "server",
	"logging":                    "logging",
	"health_check":               "health_check",
	"cache_dir":                  "cache_dir",
	"admin_token":                "admin_token",
	"sse":                        "sse",
	"limits":                     "limits",
	"full_refresh_seconds":       "full_refresh_seconds",
	"realtime_api_url":           "realtime_api_url",
	"webhook_secret":             "webhook_secret",
}

// loadConfig reads the config file (a missing file is fine when the
// environment supplies what is required), applies environment variables and
// validates. Warnings (unknown keys, ignored settings) are returned for the
// caller to log once logging is configured.
func loadConfig(path string, explicit bool, getenv func(string) string) (Config, []string, error) {
	var warnings []string
	merged := map[string]json.RawMessage{}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		var fromFile map[string]json.RawMessage
		if err := json.Unmarshal(data, &fromFile); err != nil {
			return Config{}, nil, fmt.Errorf("config %s: %s", path, describeJSONError(data, err))
		}
		keys := make([]string, 0, len(fromFile))
		for k := range fromFile {
			keys = append(keys, k)
		}
		// Aliases first, so that a canonical key given alongside its alias wins.
		sort.Slice(keys, func(i, j int) bool {
			ai, aj := configKeys[keys[i]] != keys[i], configKeys[keys[j]] != keys[j]
			if ai != aj {
				return ai
			}
			return keys[i] < keys[j]
		})
		for _, k := range keys {
			canonical, ok := configKeys[k]
			if !ok {
				warnings = append(warnings, fmt.Sprintf("unknown config key %q ignored", k))
				continue
			}
			merged[canonical] = fromFile[k]
		}
	case errors.Is(err, os.ErrNotExist) && !explicit:
		warnings = append(warnings, fmt.Sprintf("config file %s not found; using environment variables and defaults", path))
	default:
		return Config{}, nil, fmt.Errorf("config %s: %w", path, err)
	}

	// The environment wins over the file. A value that is not JSON is taken
	// as a string, so API_URL=https://… needs no quotes.
	names := make([]string, 0, len(configKeys))
	for k := range configKeys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := getenv(strings.ToUpper(k))
		if v == "" {
			continue
		}
		raw := json.RawMessage(v)
		if !json.Valid(raw) {
			raw, _ = json.Marshal(v)
		}
		merged[configKeys[k]] = raw
	}

	cfg := defaultConfig()
	var errs []error
	for k, raw := range merged {
		if err := decodeConfigKey(&cfg, k, raw); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return Config{}, warnings, errors.Join(errs...)
	}
	return cfg, warnings, cfg.validate()
}

// decodeConfigKey decodes one top-level key onto the defaults, so a partial
// object such as {"server": {"port": 9000}} keeps the other defaults.
func decodeConfigKey(cfg *Config, key string, raw json.RawMessage) error {
	var target any
	switch key {
	case "environment_key_pairs":
		target = &cfg.EnvironmentKeyPairs
	case "api_url":
		target = &cfg.APIURL
	case "api_poll_frequency_seconds":
		target = &cfg.PollFrequency
	case "api_poll_timeout_seconds":
		target = &cfg.PollTimeout
	case "allow_origins":
		target = &cfg.AllowOrigins
	case "allow_credentials":
		target = &cfg.AllowCredentials
	case "endpoint_caches":
		cfg.EndpointCaches = raw
		return nil
	case "server":
		target = &cfg.Server
	case "logging":
		target = &cfg.Logging
	case "health_check":
		target = &cfg.HealthCheck
	case "cache_dir":
		target = &cfg.CacheDir
	case "admin_token":
		target = &cfg.AdminToken
	case "sse":
		target = &cfg.SSE
	case "limits":
		target = &cfg.Limits
	case "full_refresh_seconds":
		target = &cfg.FullRefresh
	case "realtime_api_url":
		target = &cfg.RealtimeAPIURL
	case "webhook_secret":
		target = &cfg.WebhookSecret
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(target); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			field := key
			if typeErr.Field != "" {
				field += "." + typeErr.Field
			}
			return fmt.Errorf("%s: %s is not a valid %s", field, typeErr.Value, typeErr.Type)
		}
		return fmt.Errorf("%s: %s", key, describeJSONError(raw, err))
	}
	return nil
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

// validate reports every problem at once, each naming its key.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.EnvironmentKeyPairs) == 0 {
		bad("environment_key_pairs: at least one {\"server_side_key\": \"ser.…\", \"client_side_key\": \"…\"} is required")
	}
	clientKeys := map[string]bool{}
	for i, p := range c.EnvironmentKeyPairs {
		c.EnvironmentKeyPairs[i].ServerSideKey = secret(strings.TrimSpace(string(p.ServerSideKey)))
		c.EnvironmentKeyPairs[i].ClientSideKey = strings.TrimSpace(p.ClientSideKey)
		p = c.EnvironmentKeyPairs[i]
		if !strings.HasPrefix(string(p.ServerSideKey), serverKeyPrefix) {
			bad("environment_key_pairs[%d].server_side_key: %q must start with %q", i, p.ServerSideKey.String(), serverKeyPrefix)
		}
		if p.ClientSideKey == "" {
			bad("environment_key_pairs[%d].client_side_key: must not be empty", i)
		} else if strings.HasPrefix(p.ClientSideKey, serverKeyPrefix) {
			bad("environment_key_pairs[%d].client_side_key: %q is a server key; give the environment's client-side key", i, maskedKey(p.ClientSideKey))
		} else if clientKeys[p.ClientSideKey] {
			bad("environment_key_pairs[%d].client_side_key: %q is listed twice", i, p.ClientSideKey)
		}
		clientKeys[p.ClientSideKey] = true
	}
	if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("api_url: %q is not an http(s) URL", c.APIURL)
	}
	c.APIURL = strings.TrimRight(c.APIURL, "/")
	if c.PollFrequency <= 0 {
		bad("api_poll_frequency_seconds: %v must be a positive number of seconds", c.PollFrequency)
	}
	if c.PollTimeout <= 0 {
		bad("api_poll_timeout_seconds: %v must be a positive number of seconds", c.PollTimeout)
	}
	if c.Server.Port < 0 || c.Server.Port > 65535 {
		bad("server.port: %d must be between 0 and 65535", c.Server.Port)
	}
	if c.Server.TimeoutKeepAlive <= 0 {
		bad("server.timeout_keep_alive: %d must be a positive number of seconds", c.Server.TimeoutKeepAlive)
	}
	if c.Server.ReadHeaderTimeout <= 0 || c.Server.WriteTimeout <= 0 || c.Server.ShutdownTimeout <= 0 {
		bad("server: read_header_timeout_seconds, write_timeout_seconds and shutdown_timeout_seconds must be positive")
	}
	if c.Server.MaxHeaderBytes < 1024 {
		bad("server.max_header_bytes: %d must be at least 1024", c.Server.MaxHeaderBytes)
	}
	switch strings.ToUpper(c.Logging.LogLevel) {
	case "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL":
	default:
		bad("logging.log_level: %q must be one of DEBUG, INFO, WARNING, ERROR", c.Logging.LogLevel)
	}
	if c.Logging.LogFormat != "generic" && c.Logging.LogFormat != "json" {
		bad("logging.log_format: %q must be \"generic\" or \"json\"", c.Logging.LogFormat)
	}
	if c.Logging.MessageField == "" {
		bad("logging.log_event_field_name: must not be empty")
	}
	if g := c.HealthCheck.GracePeriod; g != nil && *g < 0 {
		bad("health_check.environment_update_grace_period_seconds: %v must not be negative (null disables the check)", *g)
	}
	if len(c.AllowOrigins) == 0 {
		bad("allow_origins: must list at least one origin, or \"*\"")
	}
	if c.AllowCredentials && slices.Contains(c.AllowOrigins, "*") {
		bad("allow_credentials: browsers refuse credentials for the origin \"*\"; list the origins in allow_origins")
	}
	if t := c.Server.TLS; t.enabled() && (t.CertFile == "" || t.KeyFile == "") {
		bad("server.tls: cert_file and key_file must be given together (got cert_file %q, key_file %q)", t.CertFile, t.KeyFile)
	}
	if c.SSE.HeartbeatSeconds <= 0 {
		bad("sse.heartbeat_seconds: %v must be positive", c.SSE.HeartbeatSeconds)
	}
	if c.SSE.MaxSubscribers <= 0 {
		bad("sse.max_subscribers: %d must be positive", c.SSE.MaxSubscribers)
	}
	if c.Limits.MaxBodyBytes <= 0 || c.Limits.MaxTraits <= 0 || c.Limits.MaxTraitKeyLength <= 0 {
		bad("limits: max_body_bytes, max_traits and max_trait_key_length must be positive")
	}
	if c.FullRefresh <= 0 {
		bad("full_refresh_seconds: %v must be a positive number of seconds", c.FullRefresh)
	}
	if c.RealtimeAPIURL != "" {
		if u, err := url.Parse(c.RealtimeAPIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("realtime_api_url: %q is not an http(s) URL (Flagsmith's realtime service, or another proxy's base URL)", c.RealtimeAPIURL)
		}
		c.RealtimeAPIURL = strings.TrimRight(c.RealtimeAPIURL, "/")
	}
	return errors.Join(errs...)
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

// printable is the effective configuration with secrets masked.
func (c *Config) printable() ([]byte, error) {
	out := *c
	out.EnvironmentKeyPairs = make([]KeyPair, len(c.EnvironmentKeyPairs))
	for i, p := range c.EnvironmentKeyPairs {
		p.ServerSideKey = secret(p.ServerSideKey.String())
		out.EnvironmentKeyPairs[i] = p
	}
	for _, s := range []*secret{&out.AdminToken, &out.WebhookSecret, &out.SSE.AuthenticationToken} {
		if *s != "" {
			*s = secret(s.String())
		}
	}
	return json.MarshalIndent(out, "", "  ")
}
