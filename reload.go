package main

import (
	"context"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"
)

// This file is live configuration: the config file read again on SIGHUP
// or when it changes, checked whole, and swapped in like a snapshot.

// configCheckInterval is how often the config file is checked for a change:
// one stat, and quick enough for a person editing the file.
const configCheckInterval = time.Second

// configSource is where the configuration comes from: read at start, and
// again at each reload.
type configSource struct {
	path     string
	explicit bool // named by -config or CONFIG_PATH: it must exist
	getenv   func(string) string
}

func (c *configSource) load() (Config, []string, error) {
	return loadConfig(c.path, c.explicit, c.getenv)
}

// loadToServe is load, then checks that every document file exists: what
// starting or reloading needs, but not -print-config or -healthcheck.
func (c *configSource) loadToServe() (Config, []string, error) {
	cfg, written, warnings, err := loadConfigPaths(c.path, c.explicit, c.getenv)
	if err == nil {
		err = checkDocumentFiles(&cfg, c.path, written)
	}
	return cfg, warnings, err
}

// watchConfig reloads the configuration when asked (SIGHUP sends on
// requests) and when the config file changes (fileChange), until ctx ends.
func (s *server) watchConfig(ctx context.Context, src *configSource, requests <-chan struct{}) {
	var change fileChange
	change.changed(src.path)
	ticker := time.NewTicker(configCheckInterval)
	defer ticker.Stop()
	for {
		trigger := "signal"
		select {
		case <-ctx.Done():
			return
		case <-requests:
			change.changed(src.path) // looked at before reading, as a tick does
		case <-ticker.C:
			if !change.changed(src.path) {
				continue
			}
			trigger = "file"
		}
		s.reload(ctx, src, trigger)
	}
}

// reload reads the configuration and applies it. A configuration that does
// not load or validate is rejected whole, every problem logged, and the
// running one stays.
func (s *server) reload(ctx context.Context, src *configSource, trigger string) {
	cfg, warnings, err := src.loadToServe()
	if err != nil {
		s.stats.observeReload(false)
		s.log.Error("configuration rejected; the running configuration stays",
			"trigger", trigger, "path", src.path, "problems", problems(err))
		return
	}
	for _, w := range warnings {
		s.log.Warn("config", "warning", w)
	}
	change := s.applyConfig(ctx, cfg)
	s.stats.observeReload(true)
	s.log.Info("configuration reloaded", "trigger", trigger, "path", src.path,
		"environments", len(s.environments()), "added", change.added,
		"removed", change.removed, "changed", change.changed)
}

// problems lists the problems errors.Join gathered, one per entry.
func problems(err error) []string {
	var out []string
	for _, e := range problemList(err) {
		out = append(out, strings.Split(e.Error(), "\n")...)
	}
	return out
}

// problemList flattens the errors errors.Join gathered.
func problemList(err error) []error {
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range joined.Unwrap() {
		out = append(out, problemList(e)...)
	}
	return out
}

// configChange names the environments a reload added, removed and changed,
// by client key.
type configChange struct {
	added, removed, changed []string
}

// applyConfig makes cfg, a valid configuration, the one in force. An
// environment whose key pair is unchanged keeps its snapshot, poller and
// streams. A removed one stops polling and its streams end; requests
// already holding it finish normally. A changed one (same client key,
// other server keys or document file) keeps its document and streams and
// gets a new poller. An added one is served from the cache, if any, and
// its first poll is awaited (up to the poll timeout) before the swap, so
// that its keys answer with flags as soon as they are accepted.
//
// Settings that only a restart can apply (restartOnly) keep their running
// values, with a warning, so that the configuration in force is always the
// one the process runs with.
func (s *server) applyConfig(ctx context.Context, cfg Config) configChange {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	prev := s.live.Load()
	for _, key := range keepRestartOnly(&cfg, prev.cfg) {
		s.log.Warn("configuration change needs a restart; the running value stays", "key", key)
	}
	next := newLiveConfig(&cfg, prev, &s.pending)
	s.pending.max.Store(cfg.Analytics.MaxPendingBytes)

	var change configChange
	byClientKey := map[string]*environment{}
	for _, env := range prev.envs {
		if !slices.Contains(next.envs, env) {
			// Nothing may publish to it once its state has moved on.
			env.stopLoops()
			byClientKey[env.pair.ClientSideKey] = env
		}
	}
	var fresh []*environment
	for _, env := range next.envs {
		if slices.Contains(prev.envs, env) {
			continue
		}
		if old := byClientKey[env.pair.ClientSideKey]; old != nil {
			env.takeOver(old)
			delete(byClientKey, env.pair.ClientSideKey)
			change.changed = append(change.changed, env.pair.ClientSideKey)
		} else {
			s.loadCached(env)
			change.added = append(change.added, env.pair.ClientSideKey)
		}
		s.startLoops(env)
		fresh = append(fresh, env)
	}
	if s.polling != nil {
		s.awaitFirstDocuments(ctx, fresh, cfg.pollTimeout())
	}
	s.live.Store(next)
	for key, env := range byClientKey {
		s.hub.end(key)
		change.removed = append(change.removed, key)
		for kind, r := range env.relays() {
			if r.forwards() && s.polling != nil {
				// What was posted until the swap: sent once more, or
				// dropped and counted.
				flushCtx, cancel := context.WithTimeout(s.polling.ctx, cfg.pollTimeout())
				s.lastFlush(flushCtx, s.polling.client, key, kind, r)
				cancel()
			}
		}
	}
	slices.Sort(change.removed)
	return change
}

// takeOver carries a replaced environment's document, and its analytics
// counts and events not yet sent, into its successor. Neither has a running
// poller.
func (e *environment) takeOver(old *environment) {
	if snap := old.snap.Load(); snap != nil {
		e.store(snap)
	}
	e.lastSuccess.Store(old.lastSuccess.Load())
	if old.analytics != nil {
		e.analytics = old.analytics
		e.analytics.env = e // sends with the successor's keys from now on
	}
	if old.events != nil {
		e.events = old.events
		e.events.env = e
	}
}

// awaitFirstDocuments waits until each environment holds a document, for
// at most timeout: an upstream that is down must not hold a reload up.
func (s *server) awaitFirstDocuments(ctx context.Context, envs []*environment, timeout time.Duration) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, env := range envs {
		select {
		case <-env.arrived:
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		case <-s.polling.ctx.Done():
			return
		}
	}
}

// keepRestartOnly gives next the running values of the settings a reload
// cannot change, and returns the keys of those that differed: the listener
// (server: address, TLS, timeouts, drain), the log handler, the stream
// hub's size, and whether the analytics endpoints exist.
func keepRestartOnly(next, running *Config) []string {
	var kept []string
	if !reflect.DeepEqual(next.Server, running.Server) {
		kept = append(kept, "server")
		next.Server = running.Server
	}
	kept = keepRunning(kept, "logging.log_level", &next.Logging.LogLevel, running.Logging.LogLevel)
	kept = keepRunning(kept, "logging.log_format", &next.Logging.LogFormat, running.Logging.LogFormat)
	kept = keepRunning(kept, "logging.log_event_field_name", &next.Logging.MessageField, running.Logging.MessageField)
	kept = keepRunning(kept, "analytics.enabled", &next.Analytics.Enabled, running.Analytics.Enabled)
	kept = keepRunning(kept, "sse.max_subscribers", &next.SSE.MaxSubscribers, running.SSE.MaxSubscribers)
	return kept
}

// keepRunning sets *next to running and adds key to kept when they differ.
func keepRunning[T comparable](kept []string, key string, next *T, running T) []string {
	if *next != running {
		*next = running
		kept = append(kept, key)
	}
	return kept
}

// handleConfig answers the configuration in force, secrets masked, as
// -print-config prints it: after reloads, this is what the process runs
// with. It needs the admin token, as /proxy/refresh does.
func (s *server) handleConfig(w http.ResponseWriter, r *http.Request) {
	cfg := s.config()
	if !s.authorizeAdmin(w, r, cfg, "the configuration endpoint") {
		return
	}
	body, err := cfg.printable()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "error", "could not encode the configuration")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(append(body, '\n'))
}
