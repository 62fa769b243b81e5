package main

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// This file checks a loaded configuration: every problem at once, each
// naming its key.

// validate reports every problem at once, each naming its key.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.EnvironmentKeyPairs) == 0 {
		bad("environment_key_pairs: at least one {\"server_side_key\": \"ser.…\", \"client_side_key\": \"…\"} is required")
	}
	clientKeys := map[string]int{} // pair index by client key
	serverKeys := map[secret]int{} // pair index by server key
	cacheFiles := map[string]int{} // pair index by cache file
	for i := range c.EnvironmentKeyPairs {
		p := &c.EnvironmentKeyPairs[i]
		p.ClientSideKey = strings.TrimSpace(p.ClientSideKey)
		keys, fields := p.collectServerKeys(i)
		for j, k := range keys {
			if !strings.HasPrefix(string(k), serverKeyPrefix) {
				bad("%s: %q must start with %q", fields[j], k.String(), serverKeyPrefix)
			} else if other, dup := serverKeys[k]; dup {
				bad("%s: %q is also a key of environment_key_pairs[%d]; a server key names one environment", fields[j], k.String(), other)
			} else {
				serverKeys[k] = i
			}
		}
		if len(keys) > 0 {
			p.ServerSideKey, p.ServerSideKeys = keys[0], nil
			if len(keys) > 1 {
				p.ServerSideKeys = keys
			}
		}
		switch other, dup := clientKeys[p.ClientSideKey]; {
		case p.ClientSideKey == "":
			bad("environment_key_pairs[%d].client_side_key: must not be empty", i)
		case strings.HasPrefix(p.ClientSideKey, serverKeyPrefix):
			bad("environment_key_pairs[%d].client_side_key: %q is a server key; give the environment's client-side key", i, maskedKey(p.ClientSideKey))
		case dup:
			bad("environment_key_pairs[%d].client_side_key: %q is also the key of environment_key_pairs[%d]", i, p.ClientSideKey, other)
		default:
			clientKeys[p.ClientSideKey] = i
			if c.CacheDir == "" || p.DocumentPath != "" {
				break
			}
			file := cachePath(c.CacheDir, p.ClientSideKey)
			if other, dup := cacheFiles[file]; dup {
				bad("environment_key_pairs[%d].client_side_key: %q would share the cache file %s with environment_key_pairs[%d]", i, p.ClientSideKey, file, other)
			}
			cacheFiles[file] = i
		}
	}
	if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("api_url: %q is not an http(s) URL", c.APIURL)
	} else if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		// Paths are appended to it: a query or fragment would swallow them.
		bad("api_url: %q must not have a query or fragment; give the API's base URL, e.g. %q", c.APIURL, defaultAPIURL)
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
	if c.Server.DrainSeconds < 0 {
		bad("server.drain_seconds: %v must not be negative (0 shuts down at once)", c.Server.DrainSeconds)
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
	if c.Analytics.FlushIntervalSeconds <= 0 {
		bad("analytics.flush_interval_seconds: %v must be a positive number of seconds", c.Analytics.FlushIntervalSeconds)
	}
	if c.Analytics.MaxPendingKeys <= 0 {
		bad("analytics.max_pending_keys: %d must be positive", c.Analytics.MaxPendingKeys)
	}
	if c.FullRefresh <= 0 {
		bad("full_refresh_seconds: %v must be a positive number of seconds", c.FullRefresh)
	}
	if c.MaxDocumentPages < 1 || c.MaxDocumentPages > maxDocumentPagesLimit {
		bad("max_document_pages: %d must be between 1 and %d", c.MaxDocumentPages, maxDocumentPagesLimit)
	}
	if c.RealtimeAPIURL != "" {
		if u, err := url.Parse(c.RealtimeAPIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("realtime_api_url: %q is not an http(s) URL (Flagsmith's realtime service, or another proxy's base URL)", c.RealtimeAPIURL)
		}
		c.RealtimeAPIURL = strings.TrimRight(c.RealtimeAPIURL, "/")
	}
	if len(c.Peers) > maxPeers {
		bad("peers: %d URLs; at most %d (one name, such as a headless Service's, stands for every replica behind it)", len(c.Peers), maxPeers)
	}
	for i, p := range c.Peers {
		u, err := url.Parse(p)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "":
			bad("peers[%d]: %q is not an http(s) base URL, e.g. \"http://edge-proxy-peers:8000\"", i, p)
		case u.User != nil:
			bad("peers[%d]: %q must not hold credentials; relays are signed with peer_secret", i, u.Redacted())
		case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
			bad("peers[%d]: %q must not have a query or fragment", i, p)
		case u.Port() != "" && !validPort(u.Port()):
			bad("peers[%d]: %q has no valid port", i, p)
		}
	}
	switch {
	case len(c.Peers) > 0 && c.PeerSecret == "":
		bad("peer_secret: required with peers: relays are signed with it (e.g. openssl rand -hex 32)")
	case c.PeerSecret != "" && len(c.PeerSecret) < minPeerSecretLength:
		bad("peer_secret: %d characters; at least %d (e.g. openssl rand -hex 32)", len(c.PeerSecret), minPeerSecretLength)
	}
	return errors.Join(errs...)
}

// validPort reports whether p is a TCP port number, 1 to 65535.
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}
