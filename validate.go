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

// validate reports every problem at once, each naming its key: first
// every value outside its key's range (configTable), then what ties keys
// together.
func (c *Config) validate() error {
	for i := range c.EnvironmentKeyPairs {
		p := &c.EnvironmentKeyPairs[i]
		p.ClientSideKey = strings.TrimSpace(p.ClientSideKey)
	}
	errs := checkRanges(c)
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	clientKeys := map[string]int{} // pair index by client key
	serverKeys := map[secret]int{} // pair index by server key
	cacheFiles := map[string]int{} // pair index by cache file
	for i := range c.EnvironmentKeyPairs {
		p := &c.EnvironmentKeyPairs[i]
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
			// Out of range, reported as such.
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
	if u, err := url.Parse(c.APIURL); err == nil && (u.RawQuery != "" || u.ForceQuery || u.Fragment != "") {
		// Paths are appended to it: a query or fragment would swallow them.
		bad("api_url: %q must not have a query or fragment; give the API's base URL, e.g. %q", maskURL(c.APIURL), defaultAPIURL)
	}
	c.APIURL = strings.TrimRight(c.APIURL, "/")
	c.RealtimeAPIURL = strings.TrimRight(c.RealtimeAPIURL, "/")
	if u, err := url.Parse(c.Analytics.EventsAPIURL); err == nil && (u.RawQuery != "" || u.ForceQuery || u.Fragment != "") {
		// v1/events is appended to it, as SDKs do: a query or fragment
		// would swallow it.
		bad("analytics.events_api_url: %q must not have a query or fragment; give the events API's base URL, e.g. %q", maskURL(c.Analytics.EventsAPIURL), defaultEventsAPIURL)
	}
	if !strings.HasSuffix(c.Analytics.EventsAPIURL, "/") {
		c.Analytics.EventsAPIURL += "/"
	}
	if c.AllowCredentials && slices.Contains(c.AllowOrigins, "*") {
		bad("allow_credentials: browsers refuse credentials for the origin \"*\"; list the origins in allow_origins")
	}
	if t := c.Server.TLS; t.enabled() && (t.CertFile == "" || t.KeyFile == "") {
		bad("server.tls: cert_file and key_file must be given together (got cert_file %q, key_file %q)", t.CertFile, t.KeyFile)
	}
	for i, p := range c.Peers {
		u, err := url.Parse(p)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "":
			bad("peers[%d]: %q is not an http(s) base URL, e.g. \"http://edge-proxy-peers:8000\"", i, maskURL(p))
		case u.User != nil:
			bad("peers[%d]: %q must not hold credentials; relays are signed with peer_secret", i, maskURL(p))
		case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
			bad("peers[%d]: %q must not have a query or fragment", i, maskURL(p))
		case u.Port() != "" && !validPort(u.Port()):
			bad("peers[%d]: %q has no valid port", i, maskURL(p))
		}
	}
	if len(c.Peers) > 0 && c.PeerSecret == "" {
		bad("peer_secret: required with peers: relays are signed with it (e.g. openssl rand -hex 32)")
	}
	sortProblems(errs)
	return errors.Join(errs...)
}

// validPort reports whether p is a TCP port number, 1 to 65535.
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// isHTTPURL reports whether s is an absolute http or https URL.
func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
