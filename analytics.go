package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Flag analytics. SDKs with analytics on post how often each flag
// was evaluated; the proxy sums the counts per environment and label set in
// memory and a flusher per environment forwards the sums to Flagsmith every
// analytics.flush_interval_seconds. Nothing is lost while the upstream is
// down (failed sums go back and are retried) until a bound is reached: the
// keys an environment holds (analytics.max_pending_keys) and the bytes the
// process holds for the upstream (analytics.max_pending_bytes, shared with
// the events relay). Past either, new keys are dropped and counted in
// /metrics. A client key is public, so everything kept is capped: names and
// identifiers in characters, labels in bytes, and a feature the
// environment's document does not have is counted and not kept at all.

const (
	// analyticsStripes spreads an environment's pending counts over that
	// many independently locked maps. A post takes one lock, of a stripe
	// chosen at random, so concurrent posts rarely wait for each other even
	// when they count the same features (they all do: an application's SDKs
	// evaluate the same flags); a flush merges the stripes.
	analyticsStripes = 32
	// maxAnalyticsNameChars is Flagsmith's column length for feature names
	// and identity identifiers in its analytics tables.
	maxAnalyticsNameChars = 2000
	// maxAnalyticsCount is the largest count Flagsmith stores (a 32-bit
	// integer column). Larger posts are refused; larger sums are sent in
	// pieces.
	maxAnalyticsCount = math.MaxInt32
	// maxFlushBodyBytes splits a large flush into several requests: below
	// Django's default 2.5 MB request limit (Flagsmith) and below the 1 MiB
	// this proxy accepts (a chain of proxies).
	maxFlushBodyBytes = 512 << 10
	// maxFlushGroups bounds the label sets (times API versions) one flush
	// sends; SDKs of one application share a handful.
	maxFlushGroups = 100
	// maxUpstreamAnswerBytes bounds how much of an upstream answer is read.
	maxUpstreamAnswerBytes = 64 << 10
	// maxAnalyticsLabelBytes caps each label header kept with the sums: an
	// SDK's name, version or user agent is a few dozen bytes, and a client
	// sending more gets its label cut there rather than held whole.
	maxAnalyticsLabelBytes = 256
	// analyticsKeyOverhead is what a pending sum holds besides its strings:
	// the key in its map slot (about 110 bytes), the slack of a map that
	// doubles as it grows, and the sum it points at. An estimate on the
	// safe side, so that max_pending_bytes bounds what is really held.
	analyticsKeyOverhead = 256
	// maxDecodingBytes bounds the request bodies that analytics and events
	// read and decode at once, per process: decoding holds a few times a
	// body's size, and a public key may post 1 MiB bodies on as many
	// connections as it likes. Posts past it wait their turn; SDKs post a
	// few kilobytes every ten seconds, so theirs rarely wait.
	maxDecodingBytes = 1 << 20
)

// analyticsLabels are the SDK headers Flagsmith keeps apart in its
// analytics: they are part of every pending key and forwarded as received.
// The plain User-Agent is kept only when the SDK sent no
// Flagsmith-SDK-User-Agent (the JS client sends both, and a browser's
// User-Agent would split the sums by browser version for nothing).
type analyticsLabels struct {
	appName, appVersion, sdkUserAgent, userAgent string
}

func analyticsLabelsOf(r *http.Request) analyticsLabels {
	l := analyticsLabels{
		appName:      capLabel(r.Header.Get("Flagsmith-Application-Name")),
		appVersion:   capLabel(r.Header.Get("Flagsmith-Application-Version")),
		sdkUserAgent: capLabel(r.Header.Get("Flagsmith-SDK-User-Agent")),
	}
	if l.sdkUserAgent == "" {
		l.userAgent = capLabel(r.UserAgent())
	}
	return l
}

// capLabel cuts a label to maxAnalyticsLabelBytes on a character boundary.
// The cut is a copy: a substring would keep the whole header alive.
func capLabel(v string) string {
	if len(v) <= maxAnalyticsLabelBytes {
		return v
	}
	cut := maxAnalyticsLabelBytes
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return strings.Clone(v[:cut])
}

// analyticsKey is one pending sum: a v1 feature count, or a v2 evaluation
// (feature, identifier, enabled_when_evaluated), under one label set.
type analyticsKey struct {
	labels     analyticsLabels
	feature    string
	identifier string // v2 only; "" when the SDK sent none
	v2         bool
	enabled    bool // v2 only
}

// bytes is what k holds, for analytics.max_pending_bytes.
func (k *analyticsKey) bytes() int64 {
	l := &k.labels
	return analyticsKeyOverhead + int64(len(k.feature)+len(k.identifier)+
		len(l.appName)+len(l.appVersion)+len(l.sdkUserAgent)+len(l.userAgent))
}

type analyticsEntry struct {
	key   analyticsKey
	count int64
}

// analyticsStripe is one lock, its map and its share of the received
// counter; padded to two cache lines so that posts on neighbouring stripes
// do not share one.
type analyticsStripe struct {
	mu sync.Mutex
	// counts point at the sums, so that adding to an existing key hashes
	// the key once.
	counts   map[analyticsKey]*int64
	received atomic.Uint64
	_        [104]byte
}

// envAnalytics is one environment's pending counts and its counters. It is
// safe for concurrent use.
type envAnalytics struct {
	// env is the environment counted for. A reload that replaces the
	// environment (rotated keys) hands the counts to its successor while
	// no flusher runs (takeOver).
	env *environment
	// forward is false for an environment served from a file: there is no
	// upstream, so its counts are only counted.
	forward bool
	maxKeys int64
	// budget is the process's bound on bytes held for the upstream. The
	// bytes of a key are taken when it enters a stripe and given back when
	// it leaves memory: forwarded, refused, dropped, or merged into a sum
	// pending already. A sum in flight keeps its bytes, so a failed
	// request can always put it back, and what is pending and in flight
	// together stays under the bound.
	budget  *byteBudget
	stripes [analyticsStripes]analyticsStripe

	// pendingKeys counts the sums held in all stripes (a key posted by
	// concurrent requests may hold one in several stripes until the flush).
	pendingKeys atomic.Int64
	// Counters in evaluations (the sum of the counts), for /metrics; what
	// was received is counted in the stripes.
	relayCounters
}

// newEnvAnalytics is the analytics state of one environment.
func newEnvAnalytics(env *environment, cfg *Config, budget *byteBudget) *envAnalytics {
	ea := &envAnalytics{
		env:     env,
		forward: env.pair.DocumentPath == "",
		maxKeys: int64(cfg.Analytics.MaxPendingKeys),
		budget:  budget,
	}
	for i := range ea.stripes {
		ea.stripes[i].counts = map[analyticsKey]*int64{}
	}
	return ea
}

// analyticsV2URL is {api_url}/../v2/analytics/flags/, where Flagsmith's API
// serves v2 analytics next to its /api/v1.
func analyticsV2URL(apiURL string) string {
	base, err := url.Parse(apiURL + "/")
	if err != nil {
		return apiURL + "/../v2/analytics/flags/"
	}
	return base.ResolveReference(&url.URL{Path: "../v2/analytics/flags/"}).String()
}

// analyticsHandler answers one version of the analytics API: v1 takes
// {"<feature name>": <count>, …} and answers 200 with an empty body; v2 takes
// {"evaluations": [{"feature_name", "count", "enabled_when_evaluated",
// "identity_identifier"?}, …]} and answers 204.
func (s *server) analyticsHandler(decode func([]byte, analyticsLabels) ([]analyticsEntry, error), accepted int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		env, body, done, err := s.analyticsRequest(w, r)
		defer done()
		var entries []analyticsEntry
		if err == nil {
			entries, err = decode(body, analyticsLabelsOf(r))
		}
		if err != nil {
			writeRequestError(w, err)
			return
		}
		env.analytics.record(entries, env.snap.Load())
		w.WriteHeader(accepted)
	}
}

// analyticsRequest finds the environment of the request's key and reads the
// body, within maxDecodingBytes: the caller calls done once it has decoded
// and recorded the body. The events relay reads its requests the same way.
// Unlike the flag endpoints it needs no document: counts posted before the
// first poll are as good as any.
func (s *server) analyticsRequest(w http.ResponseWriter, r *http.Request) (env *environment, body []byte, done func(), err error) {
	done = func() {}
	ref, err := s.resolveKey(r, environmentKeyHeader)
	if err != nil {
		return nil, nil, done, err
	}
	limit := s.config().Limits.MaxBodyBytes
	weight := limit
	if r.ContentLength >= 0 && r.ContentLength < limit {
		weight = r.ContentLength
	}
	weight = min(weight, maxDecodingBytes)
	if err := s.decoding.Acquire(r.Context(), weight); err != nil {
		return nil, nil, done, fmt.Errorf("body: could not be read: %w", err)
	}
	done = func() { s.decoding.Release(weight) }
	var buf []byte
	if r.ContentLength >= 0 && r.ContentLength <= limit {
		buf = make([]byte, 0, r.ContentLength+1) // read without growing: no copies left to collect
	}
	body, err = readRequestBody(w, r, limit, buf)
	return ref.env, body, done, err
}

// decodeAnalyticsV1 reads a v1 body: one object of feature names to counts.
// A name given twice counts once, with its last count, as Flagsmith's API
// reads it.
func decodeAnalyticsV1(body []byte, labels analyticsLabels) ([]analyticsEntry, error) {
	var counts map[string]json.RawMessage
	if err := json.Unmarshal(body, &counts); err != nil || counts == nil {
		return nil, errors.New(`body: must be a JSON object of feature names to evaluation counts, {"<feature name>": <count>, …}`)
	}
	entries := make([]analyticsEntry, 0, len(counts))
	for name, raw := range counts {
		if err := checkAnalyticsName(name); err != nil {
			return nil, fmt.Errorf("feature name %q: %w", truncateForError(name), err)
		}
		n, err := analyticsCount(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", truncateForError(name), err)
		}
		if n > 0 {
			entries = append(entries, analyticsEntry{analyticsKey{labels: labels, feature: name}, n})
		}
	}
	return entries, nil
}

// v2Evaluation keeps each field raw, so that a wrong type is reported
// with the field's name and place.
type v2Evaluation struct {
	FeatureName          json.RawMessage `json:"feature_name"`
	IdentityIdentifier   json.RawMessage `json:"identity_identifier"`
	EnabledWhenEvaluated json.RawMessage `json:"enabled_when_evaluated"`
	Count                json.RawMessage `json:"count"`
}

// decodeAnalyticsV2 reads a v2 body. An empty or null identity_identifier
// is an evaluation without an identity.
func decodeAnalyticsV2(body []byte, labels analyticsLabels) ([]analyticsEntry, error) {
	list, err := decodeArrayField(body, "evaluations")
	if err != nil {
		return nil, err
	}
	entries := make([]analyticsEntry, 0, len(list))
	for i, item := range list {
		var ev v2Evaluation
		if err := json.Unmarshal(item, &ev); err != nil || bytes.Equal(item, []byte("null")) {
			return nil, fmt.Errorf("evaluations[%d]: must be an object", i)
		}
		var name string
		if err := json.Unmarshal(ev.FeatureName, &name); err != nil || isJSONNull(ev.FeatureName) {
			return nil, fmt.Errorf("evaluations[%d].feature_name: required, a string", i)
		}
		if err := checkAnalyticsName(name); err != nil {
			return nil, fmt.Errorf("evaluations[%d].feature_name: %w", i, err)
		}
		identifier, err := decodeIdentifier(ev.IdentityIdentifier)
		if err != nil {
			return nil, fmt.Errorf("evaluations[%d].identity_identifier: %w", i, err)
		}
		var enabled bool
		if err := json.Unmarshal(ev.EnabledWhenEvaluated, &enabled); err != nil || isJSONNull(ev.EnabledWhenEvaluated) {
			return nil, fmt.Errorf("evaluations[%d].enabled_when_evaluated: required, true or false", i)
		}
		if ev.Count == nil {
			return nil, fmt.Errorf("evaluations[%d].count: required", i)
		}
		n, err := analyticsCount(ev.Count)
		if err != nil {
			return nil, fmt.Errorf("evaluations[%d].count: %w", i, err)
		}
		if n > 0 {
			key := analyticsKey{labels: labels, feature: name, identifier: identifier, v2: true, enabled: enabled}
			entries = append(entries, analyticsEntry{key, n})
		}
	}
	return entries, nil
}

func isJSONNull(raw json.RawMessage) bool { return bytes.Equal(raw, []byte("null")) }

// decodeArrayField reads a body that is an object whose field holds an
// array, as v2 analytics and events bodies are, and returns the array's
// elements raw.
func decodeArrayField(body []byte, field string) ([]json.RawMessage, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return nil, fmt.Errorf(`body: must be a JSON object {"%s": [...]}`, field)
	}
	raw, ok := top[field]
	if !ok {
		return nil, fmt.Errorf("%s: required", field)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil || list == nil {
		return nil, fmt.Errorf("%s: must be an array", field)
	}
	return list, nil
}

// decodeIdentifier reads an optional identity identifier: "" when absent
// or null.
func decodeIdentifier(raw json.RawMessage) (string, error) {
	var identifier string
	if absent(raw) {
		return "", nil
	}
	if err := json.Unmarshal(raw, &identifier); err != nil {
		return "", errors.New("must be a string or null")
	}
	if utf8.RuneCountInString(identifier) > maxAnalyticsNameChars {
		return "", fmt.Errorf("longer than %d characters", maxAnalyticsNameChars)
	}
	return identifier, nil
}

func checkAnalyticsName(name string) error {
	switch {
	case name == "":
		return errors.New("must not be empty")
	case utf8.RuneCountInString(name) > maxAnalyticsNameChars:
		return fmt.Errorf("longer than %d characters", maxAnalyticsNameChars)
	}
	return nil
}

// analyticsCount reads a count: a JSON integer from 0 to maxAnalyticsCount
// (no fraction, no exponent, no string).
func analyticsCount(raw json.RawMessage) (int64, error) {
	bad := func() (int64, error) {
		return 0, fmt.Errorf("count must be a non-negative integer, not %s", truncateForError(string(raw)))
	}
	if len(raw) == 0 || raw[0] < '0' || raw[0] > '9' {
		return bad()
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		var numErr *strconv.NumError
		if errors.As(err, &numErr) && errors.Is(numErr.Err, strconv.ErrRange) {
			return 0, fmt.Errorf("count must be at most %d", maxAnalyticsCount)
		}
		return bad()
	}
	if n > maxAnalyticsCount {
		return 0, fmt.Errorf("count must be at most %d", maxAnalyticsCount)
	}
	return n, nil
}

// truncateForError keeps error messages short when a client sends a huge
// name or value.
func truncateForError(s string) string {
	const limit = 60
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// record adds a post's counts. A feature the environment's document does
// not have is counted as unknown and not kept: Flagsmith keys analytics by
// feature, so its sums would only take room (and any name up to 2,000
// characters could be invented). Before the first document every name is
// kept, within the bounds. An environment served from a file has no
// upstream: its counts are only counted.
func (ea *envAnalytics) record(entries []analyticsEntry, snap *snapshot) {
	var total, unknown uint64
	known := entries[:0]
	for _, e := range entries {
		total += uint64(e.count)
		if snap != nil && !snap.hasFeature(e.key.feature) {
			unknown += uint64(e.count)
			continue
		}
		known = append(known, e)
	}
	st := &ea.stripes[rand.IntN(analyticsStripes)]
	st.received.Add(total)
	ea.dropped[dropUnknown].Add(unknown)
	if !ea.forward {
		return
	}
	ea.addAll(st, known, false)
}

// addAll adds entries to the stripe st (a random one when nil) under one
// lock, counts what it had to drop by reason, and returns the sum of those
// counts. held says whether the entries' bytes are held already (sums put
// back after a failed request): then a sum merged into one pending, or
// dropped, gives its bytes back. Past the bounds, a key new to st is
// looked for in the other stripes, so that a key already pending keeps
// adding up; only a key pending nowhere is dropped.
func (ea *envAnalytics) addAll(st *analyticsStripe, entries []analyticsEntry, held bool) (dropped uint64) {
	if st == nil {
		st = &ea.stripes[rand.IntN(analyticsStripes)]
	}
	var over []analyticsEntry
	st.mu.Lock()
	for _, e := range entries {
		if ea.addLocked(st, &e.key, e.count, held) != added {
			over = append(over, e)
		}
	}
	st.mu.Unlock()
	for _, e := range over {
		if why := ea.addToPending(&e.key, e.count, held); why != added {
			ea.dropped[why].Add(uint64(e.count))
			dropped += uint64(e.count)
			if held {
				ea.budget.give(e.key.bytes())
			}
		}
	}
	return dropped
}

// added is what addLocked returns when it added the count.
const added = dropReason(-1)

// addLocked adds n to k's sum in st, whose lock the caller holds. Adding
// nothing, it returns why: k is new to st and the environment holds
// maxKeys sums (dropBound), or the process holds max_pending_bytes
// (dropBytes), or, absurdly, the sum would overflow (dropBound).
func (ea *envAnalytics) addLocked(st *analyticsStripe, k *analyticsKey, n int64, held bool) dropReason {
	if sum := st.counts[*k]; sum != nil {
		if *sum > math.MaxInt64-n {
			return dropBound
		}
		*sum += n
		if held {
			ea.budget.give(k.bytes())
		}
		return added
	}
	if ea.pendingKeys.Add(1) > ea.maxKeys {
		ea.pendingKeys.Add(-1)
		return dropBound
	}
	if !held && !ea.budget.take(k.bytes()) {
		ea.pendingKeys.Add(-1)
		return dropBytes
	}
	sum := new(int64)
	*sum = n
	st.counts[*k] = sum
	return added
}

// addToPending adds n to k's sum in whichever stripe holds it, one lock at
// a time (only when a bound is reached, so its cost does not matter).
func (ea *envAnalytics) addToPending(k *analyticsKey, n int64, held bool) dropReason {
	for i := range ea.stripes {
		st := &ea.stripes[i]
		st.mu.Lock()
		sum := st.counts[*k]
		ok := sum != nil && *sum <= math.MaxInt64-n
		if ok {
			*sum += n
		}
		st.mu.Unlock()
		if ok {
			if held {
				ea.budget.give(k.bytes())
			}
			return added
		}
	}
	// A flush may have made room meanwhile.
	st := &ea.stripes[0]
	st.mu.Lock()
	defer st.mu.Unlock()
	return ea.addLocked(st, k, n, held)
}

// take removes and returns every pending sum, merged across stripes. Posts
// recorded while it runs land either in what it returns or in what the next
// take returns, never in both and never in neither: each stripe's map is
// swapped under its lock. The sums returned keep their bytes held until the
// caller settles them (forwarded, dropped, or put back).
func (ea *envAnalytics) take() []analyticsEntry {
	merged := map[analyticsKey]int64{}
	for i := range ea.stripes {
		st := &ea.stripes[i]
		st.mu.Lock()
		m := st.counts
		if len(m) == 0 {
			// Still the live map: not to be read after the unlock.
			st.mu.Unlock()
			continue
		}
		// A new map, not one sized like the old: a map keeps the room it
		// grew to, and after a burst that room would stay for good.
		st.counts = map[analyticsKey]*int64{}
		st.mu.Unlock()
		ea.pendingKeys.Add(-int64(len(m)))
		for k, n := range m {
			if _, twice := merged[k]; twice {
				ea.budget.give(k.bytes())
			}
			merged[k] += *n
		}
	}
	out := make([]analyticsEntry, 0, len(merged))
	for k, n := range merged {
		out = append(out, analyticsEntry{k, n})
	}
	return out
}

// addBack returns the sums of a failed request, their bytes still held;
// what no longer fits under the key bound is dropped and counted.
func (ea *envAnalytics) addBack(entries []analyticsEntry) {
	var total uint64
	for _, e := range entries {
		total += uint64(e.count)
	}
	dropped := ea.addAll(nil, entries, true)
	ea.retried.Add(total - dropped)
}

// settle gives back the bytes of sums that left memory: forwarded or
// dropped.
func (ea *envAnalytics) settle(entries []analyticsEntry) {
	var n int64
	for i := range entries {
		n += entries[i].key.bytes()
	}
	ea.budget.give(n)
}

// receivedTotal is the sum of the stripes' received counts.
func (ea *envAnalytics) receivedTotal() uint64 {
	var n uint64
	for i := range ea.stripes {
		n += ea.stripes[i].received.Load()
	}
	return n
}
