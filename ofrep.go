package main

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file is OpenFeature's remote evaluation protocol (OFREP):
// any OpenFeature SDK with an OFREP provider evaluates flags through the same
// snapshots and the same engine evaluation as the Flagsmith endpoints. The
// request reads top to bottom: key → body → context → evaluate → encode.
//
// As of 2026-12 the protocol is open-feature/protocol service/openapi.yaml
// 0.3.0 with ADR-0008 (eventStreams, refetchEvaluation events).

// handleOFREPFlag is POST /ofrep/v1/evaluate/flags/{key}: one flag, for
// server-side providers that evaluate per call.
func (s *server) handleOFREPFlag(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	buf := getBuffers()
	defer putBuffers(buf)
	ref, snap, ok := s.evaluateOFREP(w, r, buf, ofrepFlag(key))
	if !ok {
		return
	}
	// An empty key (a path ending in "/") names no flag rather than all.
	if out := appendOFREPFlags(buf.out[:0], snap, ref.kind, buf.flags, key); key != "" && len(out) > 0 {
		buf.out = out
		replyTo(w, r).writeBody(out)
		return
	}
	writeOFREPError(w, http.StatusNotFound, ofrepFlag(key), "FLAG_NOT_FOUND",
		fmt.Sprintf("flag '%s' not found", key))
}

// handleOFREPBulk is POST /ofrep/v1/evaluate/flags: every flag the key may
// see, for client-side providers that cache them. The ETag is a hash of the
// body, so a provider re-asking with If-None-Match gets 304 until its own
// flags change; eventStreams tells it where to hear about changes.
func (s *server) handleOFREPBulk(w http.ResponseWriter, r *http.Request) {
	buf := getBuffers()
	defer putBuffers(buf)
	ref, snap, ok := s.evaluateOFREP(w, r, buf, ofrepBulk)
	if !ok {
		return
	}
	out := append(buf.out[:0], `{"flags":[`...)
	out = appendOFREPFlags(out, snap, ref.kind, buf.flags, "")
	out = append(out, ']')
	if s.config().SSE.Enabled {
		// An endpoint without an origin: the provider connects to the origin
		// it already reaches the proxy at, which a Host header behind a load
		// balancer would not reliably tell us.
		out = append(out, `,"eventStreams":[{"type":"sse","endpoint":{"requestUri":"`...)
		out = appendOFREPStreamURI(out, ref.env.pair.ClientSideKey, snap.updatedAtUnix)
		out = append(out, `"}}]`...)
	}
	// updatedAt is the content version (snapshot.served), not the
	// document's own updated_at: the value X-Flagsmith-Document-Updated-At
	// and the streams carry, so a provider can compare it with an event's.
	if snap.updatedAtUnix != "" {
		out = append(out, `,"metadata":{"updatedAt":`...)
		out = append(out, snap.updatedAtUnix...)
		out = append(out, '}')
	}
	out = append(out, '}')
	buf.out = out

	etag := ofrepETag(out)
	w.Header()["Etag"] = []string{etag}
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	replyTo(w, r).writeBody(out)
}

// ofrepETag is the bulk answer's ETag: a hash of the body. Unlike the flags
// list's ETag it is computed per request, on a body of several KB, so it is
// two hardware CRCs (64 bits) rather than SHA-256, which cost a fifth of the
// request: a collision could only ever give one client a stale 304.
func ofrepETag(body []byte) string {
	var sum [8]byte
	binary.BigEndian.PutUint32(sum[:4], crc32.Checksum(body, castagnoli))
	binary.BigEndian.PutUint32(sum[4:], crc32.ChecksumIEEE(body))
	var b [18]byte
	b[0], b[17] = '"', '"'
	hex.Encode(b[1:17], sum[:])
	return string(b[:])
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// handleOFREPMethodNotAllowed answers the OFREP paths for any method but
// POST, in OFREP's error shape rather than the Flagsmith one.
func (s *server) handleOFREPMethodNotAllowed(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", "POST, OPTIONS")
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeOFREPError(w, http.StatusMethodNotAllowed, ofrepBulk, "GENERAL",
		fmt.Sprintf("method %s is not allowed here; use POST", r.Method))
}

// ofrepTarget says which endpoint a request is for, so errors take that
// endpoint's shape: a single flag's errors carry its key, bulk errors none.
type ofrepTarget struct {
	key    string
	single bool
}

var ofrepBulk = ofrepTarget{}

func ofrepFlag(key string) ofrepTarget { return ofrepTarget{key: key, single: true} }

// evaluateOFREP authenticates the request, decodes its context and evaluates
// it into buf.flags. It writes the error response and returns ok false when
// it cannot.
func (s *server) evaluateOFREP(w http.ResponseWriter, r *http.Request, buf *requestBuffers, target ofrepTarget) (keyRef, *snapshot, bool) {
	ref, snap, err := s.resolve(r, anyKeyHeader)
	if err == nil {
		buf.body, err = readRequestBody(w, r, s.config().Limits.MaxBodyBytes, buf.body[:0])
	}
	var targetingKey string
	if err == nil {
		targetingKey, err = decodeOFREPRequest(buf.body, buf, identityLimitsOf(s.config(), snap))
	}
	if err != nil {
		writeOFREPRequestError(w, target, err)
		return keyRef{}, nil, false
	}
	if targetingKey == "" {
		// No targeting key: the environment's flags, whatever
		// else the context holds.
		buf.flags = snap.engine.evaluate(buf.flags[:0], nil, nil)
		return ref, snap, true
	}
	id := identity{identifier: targetingKey, traits: buf.traits, scratch: buf.slots}
	buf.flags = snap.engine.evaluate(buf.flags[:0], &id, nil)
	buf.slots = id.scratch
	return ref, snap, true
}

// writeOFREPRequestError answers a request that could not be read in
// OFREP's error shape: a body or context that will not decode is
// INVALID_CONTEXT, anything else GENERAL.
func writeOFREPRequestError(w http.ResponseWriter, target ofrepTarget, err error) {
	code, message := requestStatus(err)
	errorCode := "GENERAL"
	if code == http.StatusBadRequest {
		errorCode = "INVALID_CONTEXT"
	}
	writeOFREPError(w, code, target, errorCode, message)
}

// ofrepError is OFREP's error body: evaluationFailure / flagNotFound for a
// single flag (with its key), bulkEvaluationFailure for bulk.
type ofrepError struct {
	Key          *string `json:"key,omitempty"`
	ErrorCode    string  `json:"errorCode"`
	ErrorDetails string  `json:"errorDetails"`
}

func writeOFREPError(w http.ResponseWriter, code int, target ofrepTarget, errorCode, details string) {
	e := ofrepError{ErrorCode: errorCode, ErrorDetails: details}
	if target.single {
		e.Key = &target.key
	}
	body, _ := json.Marshal(e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// decodeOFREPRequest parses {"context": {"targetingKey": …, "<trait>": …}}
// into buf.traits and returns the targeting key ("" when there is none).
// Trait values are coerced exactly as identity traits are (decode.go), and
// only traits some condition reads are kept. A missing or null context is
// an empty one: OFREP providers send {} when the application set none.
func decodeOFREPRequest(body []byte, buf *requestBuffers, lim identityLimits) (string, error) {
	d, err := objectBody(body, `a JSON object {"context": {…}}`)
	if err != nil {
		return "", err
	}
	var targetingKey string
	buf.traits = buf.traits[:0]
	err = d.object(func(key []byte) error {
		if string(key) != "context" {
			return d.skipValue(0)
		}
		targetingKey = ""
		buf.traits = buf.traits[:0]
		if d.isNull() {
			return d.skipValue(0)
		}
		if d.peek() != '{' {
			return fieldError{"context: must be an object", d.skipValue(0)}
		}
		return d.ofrepContext(&targetingKey, buf, lim)
	})
	if err := d.finish(err); err != nil {
		return "", err
	}
	return targetingKey, nil
}

// ofrepContext reads the members of an evaluation context: targetingKey, and
// every other member as a trait. Repeated members keep their last value, as
// repeated identity traits do.
func (d *jsonDecoder) ofrepContext(targetingKey *string, buf *requestBuffers, lim identityLimits) error {
	traits := 0
	return d.object(func(key []byte) error {
		if string(key) == "targetingKey" {
			switch {
			case d.isNull():
				*targetingKey = ""
				return d.skipValue(1)
			case d.peek() != '"':
				return fieldError{"context.targetingKey: must be a string", d.skipValue(1)}
			}
			s, err := d.str()
			*targetingKey = s
			return err
		}
		start, c := d.pos, d.peek()
		if err := d.skipValue(1); err != nil {
			return err
		}
		raw := d.data[start:d.pos]
		traits++
		switch {
		case traits > lim.maxTraits:
			return fieldError{msg: fmt.Sprintf("context: more than %d traits is over the limit", lim.maxTraits)}
		case c == '{' || c == '[':
			return fieldError{msg: fmt.Sprintf("context[%q]: must be a string, number, boolean or null, not an object or array", key)}
		case utf8.RuneCount(key) > lim.maxTraitKeyLength:
			return fieldError{msg: fmt.Sprintf("context: a trait key is longer than %d characters", lim.maxTraitKeyLength)}
		case c == '"' && stringChars(raw) > maxTraitValueChars:
			return fieldError{msg: fmt.Sprintf("context[%q]: longer than %d characters", key, maxTraitValueChars)}
		}
		if name, ok := lim.traitNames[string(key)]; ok {
			return buf.add(name, raw)
		}
		return nil // no condition reads this trait
	})
}

// ofrepSource is the part of one flag source's OFREP answer that does not
// depend on the request: head is {"key":…,"value": (without "value" when
// the flag is disabled), meta the start of its metadata.
type ofrepSource struct {
	head, meta []byte
}

// newOFREPSources encodes every flag source of e (engine.sources).
func newOFREPSources(e *engine) []ofrepSource {
	out := make([]ofrepSource, len(e.sources))
	shared := map[string]ofrepSource{}
	for i, f := range e.sources {
		shape := sourceShape(f)
		if src, ok := shared[shape]; ok {
			out[i] = src
			continue
		}
		head := appendJSONString([]byte(`{"key":`), f.name)
		if f.enabled {
			head = append(head, `,"value":`...)
		}
		meta := strconv.AppendBool([]byte(`,"metadata":{"enabled":`), f.enabled)
		meta = append(meta, `,"featureId":`...)
		if f.apiID == "" {
			meta = append(meta, "null"...)
		} else {
			meta = append(meta, f.apiID...)
		}
		out[i] = ofrepSource{head: head, meta: meta}
		shared[shape] = out[i]
	}
	return out
}

// appendOFREPFlags appends the flags the key may see (only the one named
// only, when it is not empty) as OFREP's evaluationSuccess objects,
// comma-separated. The reasons are the engine's own (engine.reason, as
// `edge-proxy evaluate` prints them) in OFREP's words. The variant is the
// identities answer's, left out where that is null.
func appendOFREPFlags(dst []byte, snap *snapshot, kind keyKind, flags []evalFlag, only string) []byte {
	e := snap.engine
	sources := snap.ofrepSources()
	first := true
	for _, fl := range flags {
		f := fl.source
		if only != "" && f.name != only || !snap.visible(f, kind) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		src := &sources[f.index]
		dst = append(dst, src.head...)
		// A flag without a value is a plain on/off flag: its value is
		// whether it is on, so one switched off is false, as Flagsmith's
		// OpenFeature providers resolve it. A switched-off flag with a
		// value has none here: the caller's default applies (OFREP ADR
		// 0006).
		switch v := fl.value(); {
		case f.enabled && string(v) != "null":
			dst = append(dst, v...)
		case f.enabled:
			dst = append(dst, "true"...)
		case string(v) == "null":
			dst = append(dst, `,"value":false`...)
		}
		dst = append(dst, `,"reason":"`...)
		dst = append(dst, ofrepReason(e, fl)...)
		dst = append(dst, '"')
		if f.enabled {
			switch {
			case fl.variant >= 0 && string(f.variants[fl.variant].key) != "null":
				dst = append(dst, `,"variant":`...)
				dst = append(dst, f.variants[fl.variant].key...)
			case fl.control():
				dst = append(dst, `,"variant":"control"`...)
			}
		}
		dst = append(dst, src.meta...)
		// The segment whose override was served; identity overrides are the
		// segment "identity_overrides", as in the engine's reasons.
		if seg := e.segmentOf(fl); seg != nil {
			dst = append(dst, `,"segment":`...)
			dst = appendJSONString(dst, seg.name)
		}
		if snap.updatedAtUnix != "" { // the content version, as in the bulk metadata
			dst = append(dst, `,"updatedAt":`...)
			dst = append(dst, snap.updatedAtUnix...)
		}
		dst = append(dst, "}}"...)
	}
	return dst
}

// The engine's reasons, as Flagsmith's Python engine words them and
// engine.reason writes them.
const (
	engineReasonSplit  = "SPLIT; "
	engineReasonTarget = "TARGETING_MATCH; segment="
)

// ofrepReason maps the engine's reason for a flag to OFREP's.
func ofrepReason(e *engine, fl evalFlag) string {
	if !fl.source.enabled {
		return "DISABLED"
	}
	switch why := e.reason(fl); {
	case strings.HasPrefix(why, engineReasonSplit):
		return "SPLIT"
	case strings.HasPrefix(why, engineReasonTarget):
		return "TARGETING_MATCH"
	}
	return "STATIC"
}

// appendOFREPStreamURI appends the path of the realtime stream in OFREP's
// event format for an environment. since is the content version the bulk
// answer was made from: the stream asks for a refetch at once when the
// environment has moved on since, closing the gap between the answer and
// the connection. Escaped for a URL, the text needs no JSON escaping.
func appendOFREPStreamURI(dst []byte, clientKey, since string) []byte {
	dst = append(dst, "/sse/environments/"...)
	dst = append(dst, url.PathEscape(clientKey)...)
	dst = append(dst, "/stream?format=ofrep"...)
	if since != "" {
		dst = append(dst, "&since="...)
		dst = append(dst, url.QueryEscape(since)...)
	}
	return dst
}

// ofrepEvent is the realtime event of an OFREP stream (ADR-0008): a
// notification to re-fetch, whose id is the content version, so a
// reconnecting EventSource tells the stream which version it last heard of.
func ofrepEvent(updatedAt string) string {
	lastModified, _, _ := strings.Cut(updatedAt, ".")
	return "id: " + updatedAt + "\nevent: message\ndata: {\"type\":\"refetchEvaluation\",\"lastModified\":" + lastModified + "}\n\n"
}

// ofrepClientVersion is the content version an OFREP stream's client already
// has: the last event id it heard (Last-Event-ID on a reconnect), else the
// version its bulk answer was made from.
func ofrepClientVersion(r *http.Request) string {
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		return id
	}
	return r.URL.Query().Get("since")
}
