package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Shadow verification (verify.sample_rate): a sample of identity requests
// is asked again of the upstream, off the request path, with "transient":
// true so that Flagsmith stores nothing, and the two answers are compared
// flag by flag. The request path only decides (one random number), takes a
// place under the rate (one atomic), copies the body and offers it to a
// bounded queue; one worker does the rest, one check at a time.

const (
	// verifyQueueLen and verifyQueueBytes bound the checks waiting for the
	// worker: the rate admits about one a second, so a few suffice.
	verifyQueueLen   = 16
	verifyQueueBytes = 1 << 20
	// recentMismatchesKept is how many mismatches the status page shows.
	recentMismatchesKept = 20
)

// Why a check was not a match or a mismatch (verifySkipReasons), or why a
// sampled request was never checked (verifyDropReasons), as /metrics names
// them.
const (
	skipDocumentChanged = iota
	skipStoredTraits
	skipUpstreamError
)

var verifySkipReasons = [...]string{"document_changed", "stored_traits", "upstream_error"}

const (
	dropRateLimited = iota
	dropQueueFull
)

var verifyDropReasons = [...]string{"rate_limited", "queue_full"}

// verifyStats are one environment's verification counters.
type verifyStats struct {
	checks, matches, mismatches, mismatchedFlags, rechecks atomic.Uint64
	skipped                                                [len(verifySkipReasons)]atomic.Uint64
	dropped                                                [len(verifyDropReasons)]atomic.Uint64
}

// verifier is the queue of sampled requests and what checking them left
// for the status page. Safe for concurrent use.
type verifier struct {
	queue   chan verifyJob
	pending atomic.Int64 // bytes of the bodies in queue
	// next is the earliest time (Unix nanoseconds) the next sample may be
	// taken: verify.max_per_second, without a lock.
	next atomic.Int64

	mu     sync.Mutex
	recent []verifyMismatch // oldest first, at most recentMismatchesKept
}

func newVerifier() *verifier {
	return &verifier{queue: make(chan verifyJob, verifyQueueLen)}
}

// verifyJob is a sampled identity request.
type verifyJob struct {
	env        *environment
	kind       keyKind
	identifier string
	body       []byte // as the SDK posted it; nil for GET
}

// sampleIdentity is called by the identity handlers once they have
// answered: it decides whether the request is checked and queues it. It
// never blocks, and copies the body only for a request it queues.
func (s *server) sampleIdentity(cfg *Config, ref keyRef, identifier string, body []byte) {
	rate := cfg.Verify.SampleRate
	if rate <= 0 || ref.env.pair.DocumentPath != "" || rand.Float64() >= rate {
		return
	}
	v, st := s.verify, &ref.env.verify
	if !v.admit(time.Now(), cfg.Verify.MaxPerSecond) {
		st.dropped[dropRateLimited].Add(1)
		return
	}
	n := int64(len(body))
	if v.pending.Add(n) > verifyQueueBytes {
		v.pending.Add(-n)
		st.dropped[dropQueueFull].Add(1)
		return
	}
	select {
	case v.queue <- verifyJob{ref.env, ref.kind, strings.Clone(identifier), bytes.Clone(body)}:
	default:
		v.pending.Add(-n)
		st.dropped[dropQueueFull].Add(1)
	}
}

// admit takes the next place under a rate of perSecond, false when it is
// not yet due.
func (v *verifier) admit(now time.Time, perSecond float64) bool {
	interval := int64(float64(time.Second) / perSecond)
	t := now.UnixNano()
	for {
		next := v.next.Load()
		if t < next {
			return false
		}
		if v.next.CompareAndSwap(next, t+interval) {
			return true
		}
	}
}

// maxPendingRechecks bounds the mismatches waiting for their re-check.
const maxPendingRechecks = 4

// runVerifier checks queued samples, one at a time, until ctx ends.
func (s *server) runVerifier(ctx context.Context, client *http.Client) {
	w := &verifyWorker{s: s, client: client, logged: map[*environment]*loggedMismatches{}}
	for ctx.Err() == nil {
		var due <-chan time.Time
		var timer *time.Timer
		if len(w.rechecks) > 0 {
			timer = time.NewTimer(time.Until(w.rechecks[0].due))
			due = timer.C
		}
		select {
		case <-ctx.Done():
		case job := <-s.verify.queue:
			s.verify.pending.Add(-int64(len(job.body)))
			w.check(ctx, job, false)
		case <-due:
			r := w.rechecks[0]
			w.rechecks = w.rechecks[1:]
			w.check(ctx, r.job, true)
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// verifyWorker is the state of runVerifier's one goroutine.
type verifyWorker struct {
	s      *server
	client *http.Client
	// rechecks are mismatches found against an upstream that did not say
	// which document answered, asked again once the proxy has had time to
	// poll; oldest first.
	rechecks []recheck
	logged   map[*environment]*loggedMismatches
}

type recheck struct {
	job verifyJob
	due time.Time
}

// loggedMismatches is what was logged of one environment's current
// document: a mismatch is logged once per flag and document version.
type loggedMismatches struct {
	version string
	flags   map[string]bool
}

// check asks the upstream the sampled question and compares the answers.
// again says this is the re-check of a mismatch.
func (w *verifyWorker) check(ctx context.Context, job verifyJob, again bool) {
	s, env, st := w.s, job.env, &job.env.verify
	skip := func(reason int, attrs ...any) {
		st.checks.Add(1)
		st.skipped[reason].Add(1)
		s.log.Debug("shadow verification skipped", append([]any{"env", env.pair.ClientSideKey, "reason", verifySkipReasons[reason]}, attrs...)...)
	}
	shadow, sent, err := shadowRequest(job)
	if err != nil {
		return // the handler accepted this body, so this does not happen
	}
	ans, err := s.postIdentities(ctx, w.client, env, shadow, true)
	var theirs identitiesAnswer
	if err == nil {
		if err = json.Unmarshal(ans.body, &theirs); err != nil {
			err = fmt.Errorf("decode identities answer: %w", err)
		}
	}
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		skip(skipUpstreamError)
		s.log.Warn("shadow verification: upstream failed", "env", env.pair.ClientSideKey, "error", err.Error())
		return
	}
	for _, t := range theirs.Traits {
		if !sent[t.Key] {
			// Flagsmith evaluated traits it holds for the identity:
			// another question than the proxy answered.
			skip(skipStoredTraits)
			return
		}
	}
	snap := env.snap.Load()
	if snap == nil {
		skip(skipDocumentChanged)
		return
	}
	if ans.version != "" && !snap.isVersion(ans.version) {
		skip(skipDocumentChanged, "upstream_version", ans.version, "proxy_version", snap.updatedAtUnix)
		return
	}
	ours, err := s.proxyAnswer(snap, job)
	if err != nil {
		return // as above: the handler answered this body
	}
	diffs := diffAnswers(snap, job.kind, ours, theirs)
	switch {
	case len(diffs) > 0 && ans.version == "" && !again && len(w.rechecks) < maxPendingRechecks:
		// The upstream did not say which document answered, and the
		// proxy may not have polled its change yet: asked again once it
		// has had the time to.
		st.rechecks.Add(1)
		w.rechecks = append(w.rechecks, recheck{job, time.Now().Add(s.config().pollFrequency() + time.Second)})
	case len(diffs) == 0 && again:
		skip(skipDocumentChanged)
	case len(diffs) == 0:
		st.checks.Add(1)
		st.matches.Add(1)
	default:
		st.checks.Add(1)
		st.mismatches.Add(1)
		st.mismatchedFlags.Add(uint64(len(diffs)))
		w.report(env, snap, job, diffs)
	}
}

// shadowRequest is the body of the shadow request, the SDK's with
// "transient": true, and the trait keys the SDK sent.
func shadowRequest(job verifyJob) ([]byte, map[string]bool, error) {
	fields := map[string]json.RawMessage{}
	sent := map[string]bool{}
	if job.body == nil {
		id, _ := json.Marshal(job.identifier)
		fields["identifier"] = id
	} else {
		if err := json.Unmarshal(job.body, &fields); err != nil {
			return nil, nil, fmt.Errorf("decode identities body: %w", err)
		}
		var traits []struct {
			Key string `json:"trait_key"`
		}
		if raw := fields["traits"]; raw != nil {
			_ = json.Unmarshal(raw, &traits) // the handler accepted it
		}
		for _, t := range traits {
			sent[t.Key] = true
		}
	}
	fields["transient"] = json.RawMessage("true")
	body, err := json.Marshal(fields)
	return body, sent, err
}

// identitiesAnswer is what verification reads of an identities answer.
type identitiesAnswer struct {
	Traits []struct {
		Key string `json:"trait_key"`
	} `json:"traits"`
	Flags []struct {
		Feature struct {
			Name string `json:"name"`
		} `json:"feature"`
		flagAnswer
	} `json:"flags"`
}

// flagAnswer is one flag as compared. Variant is nil when the answer has
// no variant field (JSON null is "null").
type flagAnswer struct {
	Enabled bool            `json:"enabled"`
	Value   json.RawMessage `json:"feature_state_value"`
	Variant json.RawMessage `json:"variant,omitempty"`
}

// flagDiff is a flag the two answers disagree on; nil is a flag missing
// from that answer.
type flagDiff struct {
	feature         string
	proxy, upstream *flagAnswer
}

// diffAnswers lists the flags the requesting kind of key may see on which
// the proxy's answer (on snap) and the upstream's disagree.
func diffAnswers(snap *snapshot, kind keyKind, ours, theirs identitiesAnswer) []flagDiff {
	upstream := make(map[string]*flagAnswer, len(theirs.Flags))
	for i := range theirs.Flags {
		upstream[theirs.Flags[i].Feature.Name] = &theirs.Flags[i].flagAnswer
	}
	var diffs []flagDiff
	for i := range ours.Flags {
		name := ours.Flags[i].Feature.Name
		p, u := &ours.Flags[i].flagAnswer, upstream[name]
		delete(upstream, name)
		if snap.mayVerify(name, kind, p, u) && (u == nil || !p.same(u)) {
			diffs = append(diffs, flagDiff{name, p, u})
		}
	}
	for i := range theirs.Flags {
		name := theirs.Flags[i].Feature.Name
		if u := upstream[name]; u != nil && snap.mayVerify(name, kind, nil, u) {
			diffs = append(diffs, flagDiff{name, nil, u})
		}
	}
	return diffs
}

// proxyAnswer is the proxy's answer to the sampled question on snap, made
// by the identities handler's own writer into memory, as a server key sees
// it (every flag: mayVerify leaves out what the requesting key does not
// see).
func (s *server) proxyAnswer(snap *snapshot, job verifyJob) (identitiesAnswer, error) {
	buf := getBuffers()
	defer putBuffers(buf)
	buf.traits, buf.sent = buf.traits[:0], buf.sent[:0]
	if job.body != nil {
		// The handler checked the body against the limits then in force.
		_, err := decodeIdentityBody(job.body, &buf.decodedTraits, identityLimits{
			maxTraits: math.MaxInt, maxTraitKeyLength: math.MaxInt, traitNames: snap.engine.traitNames,
		})
		if err != nil {
			return identitiesAnswer{}, err
		}
	}
	var out memoryResponse
	s.writeIdentity(reply{w: &out}, serverKey, snap, buf,
		identity{identifier: job.identifier, traits: buf.traits, scratch: buf.slots})
	var ans identitiesAnswer
	err := json.Unmarshal(out.body.Bytes(), &ans)
	return ans, err
}

// memoryResponse is a ResponseWriter that keeps the body in memory.
type memoryResponse struct {
	header http.Header
	body   bytes.Buffer
}

func (m *memoryResponse) Header() http.Header {
	if m.header == nil {
		m.header = http.Header{}
	}
	return m.header
}
func (m *memoryResponse) Write(b []byte) (int, error) { return m.body.Write(b) }
func (m *memoryResponse) WriteHeader(int)             {}

// mayVerify reports whether the flag is one the requesting kind of key may
// see: client keys never see server-only features, nor, when the project
// hides them, flags that both answers have disabled.
func (snap *snapshot) mayVerify(name string, kind keyKind, proxy, upstream *flagAnswer) bool {
	if kind == serverKey {
		return true
	}
	if snap.serverOnlyFeature(name) {
		return false
	}
	enabled := (proxy != nil && proxy.Enabled) || (upstream != nil && upstream.Enabled)
	return enabled || !snap.hideDisabled
}

// same compares enabled, value and, where the upstream sends one, variant.
func (p *flagAnswer) same(u *flagAnswer) bool {
	if p.Enabled != u.Enabled || !sameJSON(p.Value, u.Value) {
		return false
	}
	return u.Variant == nil || sameJSON(p.Variant, u.Variant)
}

// sameJSON compares two JSON values; nil is null, and numbers compare by
// value (10 and 10.0 are the same number).
func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 {
		a = json.RawMessage("null")
	}
	if len(b) == 0 {
		b = json.RawMessage("null")
	}
	if bytes.Equal(a, b) {
		return true
	}
	x, errA := decodeJSONValue(a)
	y, errB := decodeJSONValue(b)
	if errA != nil || errB != nil {
		return false
	}
	nx, okx := x.(json.Number)
	ny, oky := y.(json.Number)
	if okx && oky {
		fx, errx := nx.Float64()
		fy, erry := ny.Float64()
		return errx == nil && erry == nil && fx == fy
	}
	return reflect.DeepEqual(x, y)
}

func decodeJSONValue(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// verifyMismatch is one flag on which the proxy and the upstream disagreed,
// as the status page shows it.
type verifyMismatch struct {
	At              time.Time   `json:"at"`
	Environment     string      `json:"environment"` // the client key
	Feature         string      `json:"feature"`
	Identity        string      `json:"identity_hash"`
	DocumentVersion string      `json:"document_version"`
	Proxy           *flagAnswer `json:"proxy"`    // null: the proxy has no such flag
	Upstream        *flagAnswer `json:"upstream"` // null: the upstream has no such flag
}

// verifyMismatches is what the status page shows of shadow verification:
// the last mismatches found (at most recentMismatchesKept), oldest first,
// each flag with both answers and the identity by its hash. Safe for
// concurrent use.
func (s *server) verifyMismatches() []verifyMismatch { return s.verify.recentMismatches() }

// recentMismatches returns the last mismatches found, oldest first.
func (v *verifier) recentMismatches() []verifyMismatch {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]verifyMismatch(nil), v.recent...)
}

// report logs each flag once per document version and keeps the last
// mismatches for the status page. The identity is named by a hash, never by
// its identifier, and no trait is logged.
func (w *verifyWorker) report(env *environment, snap *snapshot, job verifyJob, diffs []flagDiff) {
	s := w.s
	lm := w.logged[env]
	if lm == nil || lm.version != snap.updatedAtUnix {
		if lm == nil && len(w.logged) > 2*len(s.environments()) {
			// Environments a reload removed are forgotten.
			clear(w.logged)
		}
		lm = &loggedMismatches{version: snap.updatedAtUnix, flags: map[string]bool{}}
		w.logged[env] = lm
	}
	id := identityHash(env, job.identifier)
	now := time.Now()
	for _, d := range diffs {
		s.verify.remember(verifyMismatch{At: now, Environment: env.pair.ClientSideKey, Feature: d.feature,
			Identity: id, DocumentVersion: snap.updatedAtUnix, Proxy: d.proxy, Upstream: d.upstream})
		if lm.flags[d.feature] {
			continue
		}
		lm.flags[d.feature] = true
		s.log.Warn("shadow verification mismatch", "env", env.pair.ClientSideKey, "feature", d.feature,
			"identity_hash", id, "document_version", snap.updatedAtUnix,
			slog.Group("proxy", d.proxy.logAttrs()...), slog.Group("upstream", d.upstream.logAttrs()...))
	}
}

func (v *verifier) remember(m verifyMismatch) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.recent) == recentMismatchesKept {
		v.recent = append(v.recent[:0], v.recent[1:]...)
	}
	v.recent = append(v.recent, m)
}

// logAttrs are a flag's attributes for a log record; values as JSON text.
func (f *flagAnswer) logAttrs() []any {
	if f == nil {
		return []any{"present", false}
	}
	attrs := []any{"enabled", f.Enabled, "value", string(orNull(f.Value))}
	if f.Variant != nil {
		attrs = append(attrs, "variant", string(f.Variant))
	}
	return attrs
}

func orNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("null")
	}
	return raw
}

// identityHash names an identity in logs without its identifier: the first
// 8 bytes of HMAC-SHA256 of the identifier keyed with the environment's
// first server key, so that whoever reads the log cannot test guesses but
// an operator holding the key can find a user's hash.
func identityHash(env *environment, identifier string) string {
	mac := hmac.New(sha256.New, []byte(env.pair.ServerSideKey))
	mac.Write([]byte(identifier))
	return hex.EncodeToString(mac.Sum(nil)[:8])
}
