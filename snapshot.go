package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
)

// snapshot is everything the request path needs for one environment
// document, built once when the document arrives and never modified after it
// is published: handlers Load it once per request and take no lock.
type snapshot struct {
	engine        *engine
	clientKey     string // the document's api_key
	name          string
	updatedAt     time.Time // zero when the document has none or it does not parse
	updatedAtText string    // as the document spells it
	environmentID string    // the document's id; "" when it has none
	hideDisabled  bool      // client keys do not see disabled flags
	hideTraits    bool      // identities answers carry no traits (hide_sensitive_data)
	// served is the content version shown to SDKs: the document's
	// updatedAt, moved forward when the content changed without it (see
	// setServedVersion); zero when unknown. updatedAtUnix is served as Unix
	// seconds with microseconds, as Flagsmith writes it in
	// X-Flagsmith-Document-Updated-At and realtime events; empty when
	// unknown. updatedAtHeader is the same as a ready header value, assigned
	// to responses without allocating.
	served          time.Time
	updatedAtUnix   string
	updatedAtHeader []string

	// flagPrefix holds, per flag source (engine.sources), the pre-encoded
	// start of its API flag object, so a response only appends the value;
	// serverOnly says which sources client keys never see.
	flagPrefix [][]byte
	serverOnly []bool
	// envFlags is the environment's own evaluation (no identity). An
	// identity's flag that equals it is copied from identities.
	envFlags   []evalFlag
	views      [2]view
	identities identityView
	document   preEncoded // GET /api/v1/environment-document/: the document as received
	compile    time.Duration

	// Where the document came from (upstream, file, cache) and when it was
	// published, for /proxy/status; set before it is published. cachedAt
	// is when a document loaded from cache_dir was written there.
	source      string
	publishedAt time.Time
	cachedAt    time.Time

	// ofrep holds, per flag source, the parts of its OFREP answer that do
	// not depend on the request (ofrep.go). Many deployments never use
	// OFREP, so they are encoded by the first OFREP request.
	ofrep     []ofrepSource
	ofrepOnce sync.Once
}

// hasFeature reports whether the document has a feature of that name.
func (s *snapshot) hasFeature(name string) bool {
	_, ok := s.engine.featureIndex[name]
	return ok
}

// ofrepSources returns the OFREP parts of every flag source.
func (s *snapshot) ofrepSources() []ofrepSource {
	s.ofrepOnce.Do(func() { s.ofrep = newOFREPSources(s.engine) })
	return s.ofrep
}

type keyKind uint8

const (
	clientKey keyKind = iota
	serverKey
)

// view is the pre-encoded answer to GET /api/v1/flags/ for one kind of key.
type view struct {
	flags preEncoded
	// spans locates each feature's flag object in base, by feature index;
	// start is -1 for a flag this kind of key does not see. base is
	// flags.body; nil for a large document, held gzipped only (newSnapshot).
	spans []span
	base  []byte
}

type span struct{ start, end int32 }

// newSnapshot compiles a document and pre-encodes what the API serves from
// it. It is the only place a document is compiled.
func newSnapshot(raw []byte) (*snapshot, error) {
	start := time.Now()
	// Preparing the document's own body (a digest and a gzip of it) needs
	// nothing from the compile: on a large document it takes a good part
	// of the time, so it runs beside it.
	document := make(chan preEncoded, 1)
	go func() {
		body := newPreEncoded(raw)
		if len(raw) > largeDocumentBytes {
			body.keepGzipOnly()
		}
		document <- body // buffered: never blocks, even if the compile fails
	}()
	doc, err := parseDocument(raw)
	if err != nil {
		return nil, err
	}
	ctx, groups, err := doc.evalContext()
	if err != nil {
		return nil, err
	}
	e, err := compileContext(ctx, groups)
	if err != nil {
		return nil, fmt.Errorf("environment document: %w", err)
	}
	s := &snapshot{
		engine:        e,
		clientKey:     *doc.APIKey,
		name:          doc.Name,
		updatedAtText: doc.UpdatedAt,
		environmentID: strings.Trim(strings.TrimPrefix(string(doc.ID), "null"), `"`),
		hideDisabled:  doc.hidesDisabled(),
		hideTraits:    doc.HideSensitiveData,
	}
	if doc.UpdatedAt != "" {
		s.updatedAt, _ = parseUpdatedAt(doc.UpdatedAt)
	}
	s.setServedVersion(nil)
	serverOnlyIDs := make(map[string]bool, len(doc.Project.ServerKeyOnlyFeatureIDs))
	for _, id := range doc.Project.ServerKeyOnlyFeatureIDs {
		serverOnlyIDs[id.String()] = true
	}
	s.encodeSources(serverOnlyIDs)
	s.envFlags = e.evaluate(nil, nil, nil)
	s.views[serverKey] = s.encodeView(serverKey)
	if s.hidesNothing() {
		// Most environments hide nothing from client keys: both kinds of
		// key share one body, its gzip and its spans.
		s.views[clientKey] = s.views[serverKey]
	} else {
		s.views[clientKey] = s.encodeView(clientKey)
	}
	s.identities = s.encodeIdentityView()
	s.sharePrefixes()
	if len(s.views[serverKey].base) > largeDocumentBytes {
		// A flags list of megabytes is held gzipped only, as SDKs take it
		// (a client that does not is sent it decompressed on the fly);
		// ?feature= answers come from the identities view, which holds
		// every flag object anyway. Holding the plain list too would take
		// a document over 7 MB past 4x its size in RSS (bench/RESULTS.md).
		for k := range s.views {
			s.views[k].flags.keepGzipOnly()
			s.views[k].base = nil
		}
	}
	s.document = <-document
	s.compile = time.Since(start)
	return s, nil
}

// setServedVersion sets the content version SDKs are shown, given the
// snapshot this one replaces (nil for the first). Realtime SDKs refetch only
// on a newer updated_at, so every change of content must show a newer one,
// even when the document's own updated_at did not move (an edited offline
// file, an upstream that forgot to bump it): the later of the document's
// updated_at and the previous version plus a microsecond, the resolution
// SDKs read. Identical content keeps the previous version, so that SDKs do
// not refetch what they hold. It is called before the snapshot is published.
func (s *snapshot) setServedVersion(prev *snapshot) {
	v := s.updatedAt.Truncate(time.Microsecond)
	if prev != nil && !prev.served.IsZero() {
		if prev.document.digest == s.document.digest {
			v = prev.served
		} else if next := prev.served.Add(time.Microsecond); next.After(v) {
			v = next
		}
	}
	s.served = v
	s.updatedAtUnix, s.updatedAtHeader = "", nil
	if !v.IsZero() {
		s.updatedAtUnix = unixSeconds(v)
		s.updatedAtHeader = []string{s.updatedAtUnix}
	}
}

// encodeSources pre-encodes every flag source's API object up to its value,
// all in one buffer. Sources of one feature in the same state share their
// bytes: thousands of identity overrides of a feature need one prefix.
func (s *snapshot) encodeSources(serverOnlyIDs map[string]bool) {
	sources := s.engine.sources
	s.serverOnly = make([]bool, len(sources))
	s.flagPrefix = make([][]byte, len(sources))
	type span struct{ from, to int }
	shared := map[string]span{}
	var buf []byte
	spans := make([]span, len(sources))
	for i, f := range sources {
		s.serverOnly[i] = serverOnlyIDs[f.apiID]
		key := sourceShape(f)
		if sp, ok := shared[key]; ok {
			spans[i] = sp
			continue
		}
		from := len(buf)
		id := f.apiID
		if id == "" {
			id = "null"
		}
		buf = append(buf, `{"feature":{"id":`...)
		buf = append(buf, id...)
		buf = append(buf, `,"name":`...)
		buf = appendJSONString(buf, f.name)
		buf = append(buf, `,"type":`...)
		buf = appendJSONString(buf, f.apiType)
		buf = append(buf, `},"enabled":`...)
		buf = strconv.AppendBool(buf, f.enabled)
		buf = append(buf, `,"feature_state_value":`...)
		spans[i] = span{from, len(buf)}
		shared[key] = spans[i]
	}
	for i, sp := range spans {
		s.flagPrefix[i] = buf[sp.from:sp.to:sp.to]
	}
}

// sharePrefixes points each flag source's prefix at the same bytes in the
// identities view's body, where every feature's flag object starts with its
// default's prefix; the few prefixes found nowhere there (an override that
// differs from its feature's default) are packed apart (see pack). The buffer
// encodeSources built is garbage then: an environment holds its flags' bytes
// once.
func (s *snapshot) sharePrefixes() {
	body, spans := s.identities.base, s.identities.spans[serverKey]
	inBody := make(map[*byte][]byte, len(s.envFlags))
	for fi, fl := range s.envFlags {
		p := s.flagPrefix[fl.source.index]
		start := int(spans[fi].start)
		inBody[&p[0]] = body[start : start+len(p) : start+len(p)]
	}
	var rest packer
	for i, p := range s.flagPrefix {
		if shared, ok := inBody[&p[0]]; ok {
			s.flagPrefix[i] = shared
			continue
		}
		rest.raw((*json.RawMessage)(&s.flagPrefix[i]))
	}
	rest.finish()
}

// sourceShape identifies what a flag object shows of a source before its
// value: the feature and whether it is enabled.
func sourceShape(f *flagSource) string {
	enabled := "0"
	if f.enabled {
		enabled = "1"
	}
	return f.apiID + "\x00" + f.name + "\x00" + f.apiType + "\x00" + enabled
}

// hidesNothing reports whether client keys see every flag source, so that
// their answers are the server keys' answers.
func (s *snapshot) hidesNothing() bool {
	for _, f := range s.engine.sources {
		if !s.visible(f, clientKey) {
			return false
		}
	}
	return true
}

// encodeView pre-encodes the environment's flags as one kind of key sees them.
func (s *snapshot) encodeView(kind keyKind) view {
	v := view{spans: make([]span, len(s.envFlags))}
	size := 2
	for _, fl := range s.envFlags {
		size += len(s.flagPrefix[fl.source.index]) + len(fl.value()) + 2
	}
	body := append(make([]byte, 0, size), '[')
	for fi, fl := range s.envFlags {
		if !s.visible(fl.source, kind) {
			v.spans[fi] = span{-1, -1}
			continue
		}
		if len(body) > 1 {
			body = append(body, ',')
		}
		from := len(body)
		body = s.appendFlag(body, fl)
		v.spans[fi] = span{int32(from), int32(len(body))}
	}
	v.flags = newPreEncoded(append(body, ']'))
	v.base = v.flags.body
	return v
}

// visible applies the client-key rules: server-only features and, when the
// environment hides them, disabled flags are left out.
func (s *snapshot) visible(f *flagSource, kind keyKind) bool {
	if kind == serverKey {
		return true
	}
	return !s.serverOnly[f.index] && (f.enabled || !s.hideDisabled)
}

// appendFlag appends the flag's API object.
func (s *snapshot) appendFlag(dst []byte, fl evalFlag) []byte {
	dst = append(dst, s.flagPrefix[fl.source.index]...)
	dst = append(dst, fl.value()...)
	return append(dst, '}')
}

// largeDocumentBytes is the document size from which a publish returns the
// compile's garbage to the OS: a forced collection costs milliseconds, which
// only a document this large makes worth it.
const largeDocumentBytes = 1 << 20

// publish compiles a document and swaps it in with one atomic store, and
// returns the snapshot now served. An identical document changes nothing
// and sends no realtime event: the snapshot held is returned.
func (s *server) publish(env *environment, raw []byte, source string) (*snapshot, error) {
	if cur := env.snap.Load(); cur != nil && sha256.Sum256(raw) == cur.document.digest {
		s.markSuccess(env)
		return cur, nil
	}
	env.compiling.Store(true)
	snap, err := newSnapshot(raw)
	env.compiling.Store(false)
	if err == nil {
		err = s.publishSnapshot(env, snap, source)
	}
	if err != nil {
		return nil, err
	}
	if dir := s.config().CacheDir; source == "upstream" && dir != "" {
		if err := writeCache(dir, env.pair.ClientSideKey, raw); err != nil {
			s.log.Warn("cache write failed; serving continues", "env", env.pair.ClientSideKey, "error", err.Error())
		}
	}
	settleMemory(snap)
	return snap, nil
}

// settleMemory follows a publish, once the document's raw bytes are no
// longer referenced (callers must not hold them either). Compiling a large
// document leaves garbage several times its size, and the previous snapshot
// and the raw document are garbage now too: a large publish hands them back
// to the OS at once rather than holding them until the heap grows into
// them. Then the collector's room to grow is sized to what stays live.
func settleMemory(snap *snapshot) {
	if snap.document.size() > largeDocumentBytes {
		debug.FreeOSMemory()
	}
	tuneGC()
}

// publishSnapshot swaps in a compiled document and tells the realtime
// subscribers.
func (s *server) publishSnapshot(env *environment, snap *snapshot, source string) error {
	if snap.clientKey != env.pair.ClientSideKey {
		// The document's api_key is its environment's client-side key: a
		// mismatch means the key pair is misconfigured, and SDKs holding the
		// real client key would get 401 anyway. Refusing it keeps the cache
		// free of foreign documents and makes the mistake loud.
		return fmt.Errorf("document belongs to environment %s, not to the configured client key", maskedKey(snap.clientKey))
	}
	if snap.updatedAt.IsZero() {
		s.log.Warn("document updated_at missing or unparsable; If-Modified-Since not sent",
			"env", env.pair.ClientSideKey, "updated_at", snap.updatedAtText)
	}
	s.markSuccess(env)
	snap.source, snap.publishedAt = source, s.now()
	snap.setServedVersion(env.snap.Load())
	env.store(snap)
	s.log.Info("environment updated", "env", env.pair.ClientSideKey, "source", source,
		"updated_at", snap.updatedAtText, "version", snap.updatedAtUnix, "compile", snap.compile.String())
	if snap.updatedAtUnix != "" {
		s.hub.publish(env.pair.ClientSideKey, snap.updatedAtUnix)
	}
	return nil
}

func (s *server) markSuccess(env *environment) {
	env.lastSuccess.Store(s.now().UnixNano())
}

// serverOnlyFeature reports whether the named feature is one client keys
// never see (the project's server_key_only_feature_ids).
func (s *snapshot) serverOnlyFeature(name string) bool {
	fi, ok := s.engine.featureIndex[name]
	return ok && s.serverOnly[s.envFlags[fi].source.index]
}

// unixSeconds formats a time as Unix seconds with microseconds, the float
// Flagsmith puts in X-Flagsmith-Document-Updated-At and realtime events.
func unixSeconds(t time.Time) string {
	us := t.UnixMicro()
	sec, frac := us/1_000_000, us%1_000_000
	if frac < 0 {
		sec, frac = sec-1, frac+1_000_000
	}
	s := strconv.FormatInt(sec, 10) + "." + fmt.Sprintf("%06d", frac)
	s = strings.TrimRight(s, "0")
	if strings.HasSuffix(s, ".") {
		s += "0"
	}
	return s
}

// isVersion reports whether an X-Flagsmith-Document-Updated-At value names
// this snapshot's document: its updated_at, or the content version the
// proxy shows (an upstream that is another proxy sends that).
func (snap *snapshot) isVersion(header string) bool {
	f, err := strconv.ParseFloat(strings.TrimSpace(header), 64)
	if err != nil {
		return false
	}
	us := int64(math.Round(f * 1e6))
	near := func(t time.Time) bool {
		d := t.UnixMicro() - us
		return !t.IsZero() && d >= -1 && d <= 1 // the float's rounding
	}
	return near(snap.updatedAt) || near(snap.served)
}
