package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"time"
)

// This file is how changes reach the proxy without waiting for a poll: the
// pushes it accepts (POST /proxy/refresh, Flagsmith's webhooks, self-hosted
// Flagsmith's queue-change) and the upstream realtime stream it follows.
// Every one of them only asks the environment's poller for a poll
// (environment.triggerRefresh): pushes coalesce per environment, and the
// poller makes at most one poll per pushInterval whatever their rate.

// handleRefresh polls now instead of at the next tick, so a change reaches
// SDKs in well under a second.
func (s *server) handleRefresh(w http.ResponseWriter, r *http.Request) {
	if !s.authorizeAdmin(w, r, s.config(), "push refresh") {
		return
	}
	target := r.URL.Query().Get("environment")
	var triggered []string
	for _, env := range s.environments() {
		if target == "" || target == env.pair.ClientSideKey {
			env.triggerRefresh()
			triggered = append(triggered, env.pair.ClientSideKey)
		}
	}
	if len(triggered) == 0 {
		writeError(w, http.StatusNotFound, "not_found", "no environment with client key "+maskedKey(target))
		return
	}
	s.stats.observePush("refresh")
	writeJSON(w, http.StatusAccepted, map[string]any{"status": "accepted", "environments": triggered})
}

// authorized reports whether the request's Authorization header holds token
// under scheme. Schemes are case-insensitive (RFC 9110); the token is
// compared in constant time.
func authorized(r *http.Request, scheme string, token secret) bool {
	name, value, found := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !found || !strings.EqualFold(name, scheme) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(value)), []byte(token)) == 1
}

// handleQueueChange takes the push self-hosted Flagsmith sends its realtime
// service (SSE_SERVER_BASE_URL) after every change of an environment:
// POST /sse/environments/{client_key}/queue-change with
// "Authorization: Token <sse.authentication_token>" and
// {"updated_at": "<ISO 8601>"}. It polls that environment now.
func (s *server) handleQueueChange(w http.ResponseWriter, r *http.Request) {
	if s.config().SSE.AuthenticationToken == "" {
		writeError(w, http.StatusNotFound, "not_found", "queue-change is disabled: set sse.authentication_token to enable it")
		return
	}
	if !authorized(r, "Token", s.config().SSE.AuthenticationToken) {
		writeError(w, http.StatusUnauthorized, "unauthorized", "a valid Authorization: Token <sse.authentication_token> is required")
		return
	}
	key := r.PathValue("client_key")
	ref, ok := s.lookup(key)
	if !ok || ref.kind != clientKey {
		writeError(w, http.StatusNotFound, "not_found", "no environment with client key "+maskedKey(key))
		return
	}
	body, ok := readPushBody(w, r, s.config().Limits.MaxBodyBytes)
	if !ok {
		return
	}
	var change struct {
		UpdatedAt *string `json:"updated_at"`
	}
	if err := json.Unmarshal(body, &change); err != nil || change.UpdatedAt == nil {
		writeError(w, http.StatusBadRequest, "bad_request", `the body must be {"updated_at": "<ISO 8601 time>"}`)
		return
	}
	if _, err := parseUpdatedAt(*change.UpdatedAt); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("updated_at: %q is not an ISO 8601 time", *change.UpdatedAt))
		return
	}
	// The poll decides what changed: a push's time says nothing about
	// content that changed within the same second.
	ref.env.triggerRefresh()
	s.stats.observePush("queue_change")
	writeJSON(w, http.StatusOK, map[string]any{"status": "accepted", "environments": []string{key}})
}

// readPushBody reads a push's body within the body limit; on failure it has
// answered.
func readPushBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "request_too_large", fmt.Sprintf("the request body is over %d bytes", limit))
		} else {
			writeError(w, http.StatusBadRequest, "bad_request", "the request body could not be read")
		}
		return nil, false
	}
	return body, true
}

// handleWebhook takes Flagsmith's environment webhooks (event_type
// FLAG_UPDATED), signed with X-Flagsmith-Signature: the hex HMAC-SHA256 of
// the raw body keyed with webhook_secret. It polls the environment the body
// names (data.new_state.environment, else data.previous_state.environment:
// the document's id, as a number or an object with an id) or, when it names
// none, every environment. Flagsmith counts any status but 200 as a failed
// delivery, so every signed webhook is answered 200, even one naming no
// environment served here.
func (s *server) handleWebhook(w http.ResponseWriter, r *http.Request) {
	if s.config().WebhookSecret == "" {
		writeError(w, http.StatusNotFound, "not_found", "webhooks are disabled: set webhook_secret to enable them")
		return
	}
	body, ok := readPushBody(w, r, s.config().Limits.MaxBodyBytes)
	if !ok {
		return
	}
	if !validSignature(body, r.Header.Get("X-Flagsmith-Signature"), s.config().WebhookSecret) {
		writeError(w, http.StatusUnauthorized, "unauthorized", "X-Flagsmith-Signature is missing or does not match the body")
		return
	}
	named := webhookEnvironment(body)
	triggered := []string{}
	for _, env := range s.environments() {
		// An environment whose document has not arrived, or has no id, may
		// be the one named.
		snap := env.snap.Load()
		if named == "" || snap == nil || snap.environmentID == "" || snap.environmentID == named {
			env.triggerRefresh()
			triggered = append(triggered, env.pair.ClientSideKey)
		}
	}
	s.stats.observePush("webhook")
	writeJSON(w, http.StatusOK, map[string]any{"status": "accepted", "environments": triggered})
}

// validSignature checks a hex HMAC-SHA256 of body in constant time.
func validSignature(body []byte, signature string, key secret) bool {
	got, err := hex.DecodeString(strings.TrimSpace(signature))
	if err != nil || len(got) != sha256.Size {
		return false
	}
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// webhookEnvironment is the environment id a webhook body names, "" for
// none. As of 2026-12 Flagsmith sends the id as a number in
// data.new_state.environment; older versions sent {"id": …, "name": …}.
func webhookEnvironment(body []byte) string {
	type state struct {
		Environment json.RawMessage `json:"environment"`
	}
	var payload struct {
		Data struct {
			NewState      *state `json:"new_state"`
			PreviousState *state `json:"previous_state"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &payload) != nil {
		return ""
	}
	for _, st := range []*state{payload.Data.NewState, payload.Data.PreviousState} {
		if st == nil || len(st.Environment) == 0 {
			continue
		}
		raw := bytes.TrimSpace(st.Environment)
		if len(raw) > 0 && raw[0] == '{' {
			var obj struct {
				ID json.RawMessage `json:"id"`
			}
			if json.Unmarshal(raw, &obj) != nil {
				continue
			}
			raw = obj.ID
		}
		if id := strings.Trim(string(raw), `"`); id != "" && id != "null" {
			return id
		}
	}
	return ""
}

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
	jitter := jitterFraction(key)
	failures := 0
	for {
		opened := time.Now()
		err := s.readUpstreamStream(ctx, env, client, url)
		s.stats.observeStream(key, false)
		if ctx.Err() != nil {
			return
		}
		if time.Since(opened) >= maxStreamBackoff {
			failures = 0
		}
		failures++
		wait := backoff(failures, maxStreamBackoff, jitter)
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
		return fmt.Errorf("connect: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("upstream stream status %d", resp.StatusCode)
	}
	watchdog.Reset(upstreamStreamIdle)
	s.stats.observeStream(key, true)
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
