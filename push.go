package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// This file is how changes reach the proxy without waiting for a poll: the
// pushes it accepts (POST /proxy/refresh, Flagsmith's webhooks, self-hosted
// Flagsmith's queue-change) and the upstream realtime stream it follows.
// Every one of them only asks the environment's poller for a poll
// (environment.triggerRefresh): pushes coalesce per environment, and the
// poller makes at most one poll per pushInterval whatever their rate. Each
// push received is also relayed to the fleet's other replicas (peers.go).

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
	s.relayPush(peerRefresh{All: target == "", Environments: nonEmpty(target)})
	writeJSON(w, http.StatusAccepted, map[string]any{"status": "accepted", "environments": triggered})
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
	body, err := readRequestBody(w, r, s.config().Limits.MaxBodyBytes, nil)
	if err != nil {
		writeRequestError(w, err)
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
	s.relayPush(peerRefresh{Environments: []string{key}})
	writeJSON(w, http.StatusOK, map[string]any{"status": "accepted", "environments": []string{key}})
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
	body, err := readRequestBody(w, r, s.config().Limits.MaxBodyBytes, nil)
	if err != nil {
		writeRequestError(w, err)
		return
	}
	if !validSignature(body, r.Header.Get("X-Flagsmith-Signature"), s.config().WebhookSecret) {
		writeError(w, http.StatusUnauthorized, "unauthorized", "X-Flagsmith-Signature is missing or does not match the body")
		return
	}
	named := webhookEnvironment(body)
	triggered := []string{}
	for _, env := range s.environments() {
		if named == "" || env.mayHoldDocument(named) {
			env.triggerRefresh()
			triggered = append(triggered, env.pair.ClientSideKey)
		}
	}
	s.stats.observePush("webhook")
	// Named by document id: a peer may serve an environment this replica
	// does not (a configuration rolling out).
	s.relayPush(peerRefresh{All: named == "", DocumentIDs: nonEmpty(named)})
	writeJSON(w, http.StatusOK, map[string]any{"status": "accepted", "environments": triggered})
}

// mayHoldDocument reports whether id may be the id of env's document: it
// is, or the document has not arrived or has no id.
func (e *environment) mayHoldDocument(id string) bool {
	snap := e.snap.Load()
	return snap == nil || snap.environmentID == "" || snap.environmentID == id
}

// nonEmpty is s as a list of one, or nil when s is empty.
func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
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
