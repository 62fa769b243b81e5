package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// The events relay. Flagsmith's experimentation events (2026: Python SDK
// ≥ 5.4 enable_events, track_event, $flag_exposure; the JS client's
// experiment flags) are posted by SDKs to {events_api_url}v1/events with
// X-Environment-Key and {"events": [{"event", "feature_name", "identifier",
// "value", "traits", "metadata", "timestamp"}, …]}. Pointed at the proxy
// (events_api_url = its base URL), that is POST /v1/events here: each event
// is checked and queued per environment as the JSON it came in, and the
// queue goes to analytics.events_api_url in batches with the environment's
// server key (as a server-side SDK sends it), through the analytics
// machinery (analytics_flush.go): the same flush interval, backoff,
// add-back, final flush and byte budget. A gateway whose SDKs cannot reach
// Flagsmith loses no events, up to the bounds.

const (
	// maxEventsPerBatch is the most events one upstream request carries:
	// the most Flagsmith's SDKs send in one (their buffer of 1,000).
	maxEventsPerBatch = 1000
	// eventOverhead is what a queued event holds besides its JSON: its
	// place in the queue and its allocation's rounding up.
	eventOverhead = 64
	// maxEventValueChars caps an event's value and its string traits, as
	// Flagsmith caps trait values.
	maxEventValueChars = 2000
)

// envEvents is one environment's events waiting to be forwarded. It is safe
// for concurrent use.
type envEvents struct {
	// env is the environment the events are sent for; see envAnalytics.env.
	env     *environment
	forward bool
	// budget is the process's bound on bytes held for the upstream. An
	// event's bytes are taken when it is queued and given back when it
	// leaves memory (forwarded, refused, dropped): a batch in flight keeps
	// them, so a failed one always fits back.
	budget *byteBudget

	mu    sync.Mutex
	queue [][]byte // each event's JSON, oldest first
	// held counts the events queued or in flight, against
	// analytics.max_pending_events; in flight for the same reason as the
	// bytes.
	held atomic.Int64

	receivedN atomic.Uint64
	relayCounters
}

func newEnvEvents(env *environment, budget *byteBudget) *envEvents {
	return &envEvents{env: env, forward: env.pair.DocumentPath == "", budget: budget}
}

// postedEvent is one event of a post: its JSON, compacted, and the feature
// it names ("" for none).
type postedEvent struct {
	raw     []byte
	feature string
}

// handleEvents takes a batch of events: 202 with an empty body once they
// are queued (or counted as dropped past the bounds: the SDK could do no
// better by retrying).
func (s *server) handleEvents(w http.ResponseWriter, r *http.Request) {
	env, body, done, err := s.analyticsRequest(w, r)
	defer done()
	var events []postedEvent
	cfg := s.config()
	if err == nil {
		events, err = decodeEvents(body, &cfg.Limits)
	}
	if err != nil {
		writeRequestError(w, err)
		return
	}
	env.events.record(events, env.snap.Load(), int64(cfg.Analytics.MaxPendingEvents))
	w.WriteHeader(http.StatusAccepted)
}

// decodeEvents checks a body of events and returns each event's JSON.
// Fields are checked for what Flagsmith's SDKs send; fields it does not
// know are passed on as they came.
func decodeEvents(body []byte, limits *LimitsConfig) ([]postedEvent, error) {
	list, err := decodeArrayField(body, "events")
	if err != nil {
		return nil, err
	}
	out := make([]postedEvent, 0, len(list))
	for i, item := range list {
		feature, err := checkEvent(item, limits)
		if err != nil {
			return nil, fmt.Errorf("events[%d]%w", i, err)
		}
		var compact bytes.Buffer
		compact.Grow(len(item))
		if err := json.Compact(&compact, item); err != nil {
			return nil, fmt.Errorf("events[%d]: must be an object", i)
		}
		// A copy sized to the event: what is queued holds nothing else of
		// the body.
		out = append(out, postedEvent{raw: bytes.Clone(compact.Bytes()), feature: feature})
	}
	return out, nil
}

// checkEvent checks one event and returns the feature it names. Its errors
// start with the field (".event: …") for the caller to prefix the place.
func checkEvent(item json.RawMessage, limits *LimitsConfig) (feature string, err error) {
	// Each field raw, so that a wrong type is reported with its name; by
	// exact name, as Flagsmith reads them.
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(item, &ev); err != nil || ev == nil {
		return "", errors.New(": must be an object")
	}
	var name string
	if err := json.Unmarshal(ev["event"], &name); err != nil || isJSONNull(ev["event"]) {
		return "", errors.New(".event: required, a string")
	}
	if err := checkAnalyticsName(name); err != nil {
		return "", fmt.Errorf(".event: %w", err)
	}
	if !absent(ev["feature_name"]) {
		if err := json.Unmarshal(ev["feature_name"], &feature); err != nil {
			return "", errors.New(".feature_name: must be a string or null")
		}
		if err := checkAnalyticsName(feature); err != nil {
			return "", fmt.Errorf(".feature_name: %w", err)
		}
	}
	if _, err := decodeIdentifier(ev["identifier"]); err != nil {
		return "", fmt.Errorf(".identifier: %w", err)
	}
	if err := checkEventScalar(ev["value"]); err != nil {
		return "", fmt.Errorf(".value: %w", err)
	}
	if !absent(ev["traits"]) {
		var traits map[string]json.RawMessage
		if err := json.Unmarshal(ev["traits"], &traits); err != nil {
			return "", errors.New(".traits: must be an object or null")
		}
		if len(traits) > limits.MaxTraits {
			return "", fmt.Errorf(".traits: more than %d traits", limits.MaxTraits)
		}
		for k, v := range traits {
			if utf8.RuneCountInString(k) > limits.MaxTraitKeyLength {
				return "", fmt.Errorf(".traits: a key is longer than %d characters", limits.MaxTraitKeyLength)
			}
			if err := checkEventScalar(v); err != nil {
				return "", fmt.Errorf(".traits.%s: %w", truncateForError(k), err)
			}
		}
	}
	if !absent(ev["metadata"]) {
		var metadata map[string]json.RawMessage
		if err := json.Unmarshal(ev["metadata"], &metadata); err != nil {
			return "", errors.New(".metadata: must be an object or null")
		}
	}
	if ts, err := strconv.ParseInt(string(ev["timestamp"]), 10, 64); err != nil || ts < 0 {
		return "", errors.New(".timestamp: required, milliseconds since 1970 as a non-negative integer")
	}
	return feature, nil
}

// absent reports whether an optional field was left out or null.
func absent(raw json.RawMessage) bool { return raw == nil || isJSONNull(raw) }

// checkEventScalar checks a value or trait value: null, a boolean, a
// number, or a string of at most maxEventValueChars characters.
func checkEventScalar(raw json.RawMessage) error {
	if absent(raw) {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return errors.New("must be a string, a number, a boolean or null")
	}
	switch v := v.(type) {
	case bool, float64:
		return nil
	case string:
		if utf8.RuneCountInString(v) > maxEventValueChars {
			return fmt.Errorf("longer than %d characters", maxEventValueChars)
		}
		return nil
	}
	return errors.New("must be a string, a number, a boolean or null")
}

// record queues a post's events. An event naming a feature the
// environment's document does not have is counted as unknown and not kept
// (as analytics, see envAnalytics.record). Past analytics.max_pending_events
// (maxEvents) or max_pending_bytes, events are dropped and counted. An
// environment served from a file has no upstream: its events are only
// counted.
func (ev *envEvents) record(events []postedEvent, snap *snapshot, maxEvents int64) {
	ev.receivedN.Add(uint64(len(events)))
	if !ev.forward {
		return
	}
	var dropped [dropReasons]uint64
	keep := make([][]byte, 0, len(events))
	for _, e := range events {
		switch {
		case e.feature != "" && snap != nil && !snap.hasFeature(e.feature):
			dropped[dropUnknown]++
		case ev.held.Add(1) > maxEvents:
			ev.held.Add(-1)
			dropped[dropBound]++
		case !ev.budget.take(eventBytes(e.raw)):
			ev.held.Add(-1)
			dropped[dropBytes]++
		default:
			keep = append(keep, e.raw)
		}
	}
	for why, n := range dropped {
		ev.dropped[why].Add(n)
	}
	if len(keep) > 0 {
		ev.mu.Lock()
		ev.queue = append(ev.queue, keep...)
		ev.mu.Unlock()
	}
}

// eventBytes is what a queued event holds, for analytics.max_pending_bytes.
func eventBytes(raw []byte) int64 { return eventOverhead + int64(cap(raw)) }

// take removes and returns the queue; its events keep their bytes and
// places until settled.
func (ev *envEvents) take() [][]byte {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	q := ev.queue
	ev.queue = nil // the next post starts a new array: a burst's room goes with the flush
	return q
}

// putBack returns the events of a failed request to the head of the
// queue, ahead of those posted since, in the order they came.
func (ev *envEvents) putBack(events [][]byte) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	ev.queue = append(events[:len(events):len(events)], ev.queue...)
}

// settle gives back the bytes and places of events that left memory.
func (ev *envEvents) settle(events [][]byte) {
	var n int64
	for _, e := range events {
		n += eventBytes(e)
	}
	ev.budget.give(n)
	ev.held.Add(-int64(len(events)))
}

// flush sends the queue to the events API in batches of at most
// maxEventsPerBatch events and maxFlushBodyBytes. A failed batch goes back
// to the head of the queue with every batch after it (they are not tried
// this time: the events API is down or refusing, and order is kept); a
// refused one is dropped.
func (ev *envEvents) flush(ctx context.Context, s *server, client *http.Client) error {
	queue := ev.take()
	for len(queue) > 0 {
		n, body := eventsBatch(queue)
		rejected, err := s.sendEvents(ctx, client, ev, body)
		rejected = min(rejected, uint64(n))
		ev.dropped[dropRejected].Add(rejected)
		if ev.count(err, uint64(n)-rejected) {
			ev.retried.Add(uint64(len(queue)))
			ev.putBack(queue)
			return err
		}
		if err != nil {
			s.log.Error("refused by the upstream; dropped", "relay", "events", "env", ev.env.pair.ClientSideKey,
				"error", err.Error(), "items", n)
		}
		ev.settle(queue[:n])
		queue = queue[n:]
	}
	return nil
}

// eventsBatch encodes the first events of queue as one request body and
// returns how many it holds: at least one, whatever its size.
func eventsBatch(queue [][]byte) (int, []byte) {
	body := []byte(`{"events":[`)
	n := 0
	for ; n < len(queue) && n < maxEventsPerBatch; n++ {
		if n > 0 && len(body)+len(queue[n]) > maxFlushBodyBytes {
			break
		}
		if n > 0 {
			body = append(body, ',')
		}
		body = append(body, queue[n]...)
	}
	return n, append(body, "]}"...)
}

// sendEvents posts one batch to {analytics.events_api_url}v1/events with
// the environment's server key, and returns how many of its events the
// events API took the request for but rejected one by one (its 202 lists
// them: {"accepted": n, "rejected": [{"index", "error"}, …]}); those are
// not sent again.
func (s *server) sendEvents(ctx context.Context, client *http.Client, ev *envEvents, body []byte) (rejected uint64, err error) {
	h := http.Header{}
	h.Set("X-Environment-Key", string(ev.env.serverKey()))
	answer, err := s.postUpstream(ctx, client, s.config().Analytics.EventsAPIURL+"v1/events", h, body)
	if err != nil {
		return 0, err
	}
	var accepted struct {
		Rejected []json.RawMessage `json:"rejected"`
	}
	if json.Unmarshal(answer, &accepted) == nil {
		rejected = uint64(len(accepted.Rejected))
	}
	return rejected, nil
}

// discard empties the queue and gives back its bytes.
func (ev *envEvents) discard() uint64 {
	q := ev.take()
	ev.settle(q)
	return uint64(len(q))
}

func (ev *envEvents) received() uint64 { return ev.receivedN.Load() }
func (ev *envEvents) pending() int64   { return ev.held.Load() }
func (ev *envEvents) forwards() bool   { return ev.forward }
