package main

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
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

// maxConfigBytes bounds the config file read: a config is kilobytes.
const maxConfigBytes = 4 << 20

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
