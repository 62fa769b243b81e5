package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"
)

// This file is the upstream realtime stream (realtime_api_url): one
// Server-Sent Events connection per environment whose events ask the poller
// for an immediate poll.

// Upstream realtime stream limits.
const (
	// upstreamStreamIdle is how long an upstream stream may stay silent (no
	// event, no heartbeat) before it is presumed dead and reopened.
	upstreamStreamIdle = 2 * time.Minute
	// maxStreamBackoff caps the wait between reconnections; a stream that
	// stayed open this long starts its backoff again from a second.
	maxStreamBackoff = 30 * time.Second
	// maxStreamLine bounds one line of an upstream stream.
	maxStreamLine = 64 << 10
)

var errStreamSilent = errors.New("the upstream stream stayed silent past its limit")

// followUpstream holds one environment's upstream realtime stream
// ({realtime_api_url}/sse/environments/{client_key}/stream) until ctx ends,
// reconnecting with capped backoff. An event announcing a version newer
// than the held document asks the poller for a poll; polling goes on
// underneath at its own frequency, so a lost stream only costs speed.
func (s *server) followUpstream(ctx context.Context, env *environment, client *http.Client) {
	key := env.pair.ClientSideKey
	url := s.config().RealtimeAPIURL + streamPathPrefix + key + "/stream"
	failures := 0
	env.status.setStream(streamConnecting)
	for {
		opened := time.Now()
		err := s.readUpstreamStream(ctx, env, client, url)
		s.stats.observeStream(key, false)
		if ctx.Err() != nil {
			env.status.setStream(streamOff)
			return
		}
		env.status.setStream(streamReconnecting)
		if time.Since(opened) >= maxStreamBackoff {
			failures = 0
		}
		failures++
		wait := backoff(failures, maxStreamBackoff, key)
		s.log.Warn("upstream stream lost; polling continues", "env", key, "error", err.Error(),
			"attempt", failures, "retry_in", wait.String())
		if !sleepCtx(ctx, wait) {
			return
		}
	}
}

// readUpstreamStream reads one connection of the upstream stream until it
// ends, and says why.
func (s *server) readUpstreamStream(ctx context.Context, env *environment, client *http.Client, url string) error {
	key := env.pair.ClientSideKey
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Until the answer's headers, the poll timeout bounds the wait; then
	// each line must come within upstreamStreamIdle.
	watchdog := time.AfterFunc(s.config().pollTimeout(), func() { cancel(errStreamSilent) })
	defer watchdog.Stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	req.Header.Set("User-Agent", "flagsmith-edge-proxy/"+version)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("connect: %w", maskURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("upstream stream status %d", resp.StatusCode)
	}
	watchdog.Reset(upstreamStreamIdle)
	s.stats.observeStream(key, true)
	env.status.setStream(streamConnected)
	s.log.Info("upstream stream connected", "env", key)

	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxStreamLine)
	eventType, data := "", ""
	for sc.Scan() {
		watchdog.Reset(upstreamStreamIdle)
		line := sc.Text()
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch {
		case line == "":
			if data != "" && (eventType == "" || eventType == "message" || eventType == "environment_updated") {
				s.upstreamEvent(env, data)
			}
			eventType, data = "", ""
		case field == "event":
			eventType = value
		case field == "data":
			if data != "" {
				data += "\n"
			}
			data += value
		}
	}
	if err := sc.Err(); err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errStreamSilent) {
			return cause
		}
		return fmt.Errorf("read: %w", err)
	}
	return errors.New("the upstream ended the stream")
}

// upstreamEvent polls when an event announces a version newer than the held
// document's. Versions are compared in microseconds, the resolution of the
// events.
func (s *server) upstreamEvent(env *environment, data string) {
	var event struct {
		UpdatedAt *float64 `json:"updated_at"`
	}
	if err := json.Unmarshal([]byte(data), &event); err != nil || event.UpdatedAt == nil {
		s.log.Debug("upstream event ignored", "env", env.pair.ClientSideKey, "data", data)
		return
	}
	announced := int64(math.Round(*event.UpdatedAt * 1e6))
	held := env.snap.Load()
	newer := held == nil || held.served.IsZero() || announced > held.served.UnixMicro()
	s.stats.observeStreamEvent(env.pair.ClientSideKey, newer)
	if newer {
		env.triggerRefresh()
	}
}
