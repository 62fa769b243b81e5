package main

import (
	"bufio"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"slices"
	"sync"
)

// This file is GET and POST /api/v1/identities/, top to bottom: resolve the
// key, decode the body (decode.go), evaluate (engine.go), assemble the
// answer from the environment's pre-encoded flag objects and the flags this
// identity changes (responseParts), and write it.

// handleIdentitiesGet is GET /api/v1/identities/?identifier=ID: the
// identity's flags, with no traits.
func (s *server) handleIdentitiesGet(w http.ResponseWriter, r *http.Request) {
	ref, snap, err := s.resolve(r, environmentKeyHeader)
	if err == nil {
		err = identifierParam(r)
	}
	if err != nil {
		writeRequestError(w, err)
		return
	}
	buf := getBuffers()
	defer putBuffers(buf)
	identifier := r.URL.Query().Get("identifier")
	s.writeIdentity(w, r, ref.kind, snap, buf, identity{identifier: identifier, scratch: buf.slots})
	s.handUpstream(ref, identifier, nil, nil)
}

// readIdentity reads a POST whose body is an identities body: the key
// (refused by keyCheck when it returns an error), then the body, decoded
// into buf. When it cannot, it answers the error and returns ok false.
func (s *server) readIdentity(w http.ResponseWriter, r *http.Request, buf *requestBuffers, keyCheck func(keyRef) error) (ref keyRef, snap *snapshot, identifier string, ok bool) {
	ref, snap, err := s.resolve(r, environmentKeyHeader)
	if err == nil && keyCheck != nil {
		err = keyCheck(ref)
	}
	if err == nil {
		buf.body, err = readRequestBody(w, r, s.config().Limits.MaxBodyBytes, buf.body[:0])
	}
	if err == nil {
		identifier, err = decodeIdentityBody(buf.body, &buf.decodedTraits, identityLimitsOf(s.config(), snap))
	}
	if err != nil {
		writeRequestError(w, err)
		return keyRef{}, nil, "", false
	}
	return ref, snap, identifier, true
}

// identifierParam checks the identifier query parameter of a GET.
func identifierParam(r *http.Request) error {
	q := r.URL.Query()
	switch {
	case !q.Has("identifier"):
		return errors.New("identifier: the query parameter is required")
	case q.Get("identifier") == "":
		return errors.New("identifier: must not be empty")
	}
	return nil
}

// handleIdentitiesPost is POST /api/v1/identities/: the flags of the
// identity and traits in the body. Traits are coerced once, as they are
// decoded, not per condition.
func (s *server) handleIdentitiesPost(w http.ResponseWriter, r *http.Request) {
	buf := getBuffers()
	defer putBuffers(buf)
	ref, snap, identifier, ok := s.readIdentity(w, r, buf, nil)
	if !ok {
		return
	}
	s.writeIdentity(w, r, ref.kind, snap, buf, identity{identifier: identifier, traits: buf.traits, scratch: buf.slots})
	s.handUpstream(ref, identifier, buf.body, &buf.decodedTraits)
}

// handUpstream offers an answered identity request to shadow verification
// and trait write-back, which do their work off the request path. body and
// traits are nil for GET.
func (s *server) handUpstream(ref keyRef, identifier string, body []byte, traits *decodedTraits) {
	cfg := s.config()
	s.sampleIdentity(cfg, ref, identifier, body)
	s.offerWriteBack(cfg, ref.env, identifier, body, traits)
}

// writeIdentity evaluates the identity and appends the response by hand:
// flags the identity leaves as in the environment are copied from the
// environment's pre-encoded identities body, the others are encoded from
// their value and variant. The traits shown are those buf decoded (none for
// a GET); id's scratch space is buf's.
func (s *server) writeIdentity(w http.ResponseWriter, r *http.Request, kind keyKind, snap *snapshot, buf *requestBuffers, id identity) {
	if v := snap.updatedAtHeader; v != nil {
		w.Header()[updatedAtHeader] = v
	}
	env := snap.identities.base
	p := &buf.parts
	p.reset(buf.own[:0], env)
	p.own = append(p.own, `{"identifier":`...)
	p.own = appendJSONString(p.own, id.identifier)
	p.own = append(p.own, `,"traits":[`...)
	sent := buf.sent
	if snap.hideTraits {
		// Flagsmith's HideSensitiveFieldsSerializerMixin: the answer shows
		// no traits, though they were used to evaluate.
		sent = nil
	}
	for i, t := range sent {
		if i > 0 {
			p.own = append(p.own, ',')
		}
		p.own = append(p.own, `{"trait_key":`...)
		p.own = append(p.own, t.key...)
		p.own = append(p.own, `,"trait_value":`...)
		p.own = append(p.own, t.value...)
		p.own = append(p.own, '}')
	}
	p.own = append(p.own, `],"flags":[`...)
	if len(env) > streamedBodyBytes {
		streamIdentityFlags(w, r, snap, kind, buf, &id)
		return
	}
	buf.flags = snap.engine.evaluate(buf.flags[:0], &id, nil)
	buf.slots = id.scratch
	snap.flagParts(p, buf.flags, 0, kind, true)
	p.own = append(p.own, "]}"...)
	buf.own = p.own
	if p.size() <= maxAssembledBytes {
		// One contiguous write is cheapest for an ordinary response.
		buf.out = p.assemble(buf.out[:0])
		writeBody(w, r, buf.out)
		return
	}
	writeParts(w, r, p)
}

// maxAssembledBytes is the response size up to which an identity response
// is copied into one buffer; a larger one (thousands of features) is written
// in its parts, most of them straight from the environment's body.
const maxAssembledBytes = 64 << 10

// An identity response for an environment whose flags body is over
// streamedBodyBytes (thousands of features) is evaluated and written
// streamChunk features at a time, without a Content-Length (chunked in
// HTTP/1.1): what a request holds then stays the same however large the
// document, where it would otherwise hold an evaluated flag per feature and
// every changed flag encoded, for as long as a slow client takes to read.
const (
	streamedBodyBytes = 512 << 10
	streamChunk       = 256
)

// streamWriters gather a streamed response into writes of 16 KiB: few
// enough system calls for a body of megabytes (at 32 KiB the 10,000-feature
// document's identities were within the noise: 438-679 against 451-564
// requests/s over three runs each), while a hundred streams in flight hold
// under 2 MiB.
var streamWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// streamIdentityFlags writes the response whose start is in buf.parts:
// the identity's flags, then its end.
func streamIdentityFlags(w http.ResponseWriter, r *http.Request, snap *snapshot, kind keyKind, buf *requestBuffers, id *identity) {
	ev := snap.engine.begin(id)
	buf.slots = id.scratch
	h := w.Header()
	h["Content-Type"] = jsonContentType
	var out io.Writer = w
	if acceptsGzip(r) {
		h["Content-Encoding"] = gzipEncoding
		setVary(h)
		zw := gzipWriters.Get().(*gzip.Writer)
		zw.Reset(w)
		defer func() {
			_ = zw.Close()
			gzipWriters.Put(zw)
		}()
		out = zw
	}
	bw := streamWriters.Get().(*bufio.Writer)
	bw.Reset(out)
	defer func() {
		bw.Reset(nil)
		streamWriters.Put(bw)
	}()
	write := func(b []byte) error { _, err := bw.Write(b); return err }
	p := &buf.parts
	first := true
	n := len(snap.engine.features)
	for from := 0; from < n || from == 0; from += streamChunk {
		to := min(from+streamChunk, n)
		buf.flags = ev.flags(buf.flags[:0], from, to)
		first = snap.flagParts(p, buf.flags, from, kind, first)
		if to == n {
			p.own = append(p.own, "]}"...)
		}
		if p.each(write) != nil {
			return // the client is gone
		}
		buf.own = p.own
		p.reset(p.own[:0], p.env)
	}
	_ = bw.Flush()
}

// flagParts adds an identity's flags as kind sees them to p, comma
// separated. A flag the identity's segments, overrides and splits leave as
// in the environment is a reference into the environment's pre-encoded
// identities body, in runs as long as possible; only the flags that differ
// are encoded. A split always differs: even the control value carries a
// variant the environment's flag does not.
//
// flags are those of features [from, from+len(flags)), so that a response
// can be built a range of features at a time; first says no flag was added
// before this range, and the result whether that still holds.
func (s *snapshot) flagParts(p *responseParts, flags []evalFlag, from int, kind keyKind, first bool) bool {
	spans := s.identities.spans[kind]
	runStart, runEnd := int32(-1), int32(-1)
	closeRun := func() {
		if runStart >= 0 {
			if !first {
				p.own = append(p.own, ',')
			}
			p.addEnv(runStart, runEnd)
			first, runStart = false, -1
		}
	}
	for i := range flags {
		fl, fi := &flags[i], from+i
		if fl.source == s.envFlags[fi].source && fl.variant == noVariant {
			if sp := spans[fi]; sp.start >= 0 {
				if sp.start != runEnd+1 {
					// Not next in the body (the body holds flags this
					// key does not see): a new run.
					closeRun()
				}
				if runStart < 0 {
					runStart = sp.start
				}
				runEnd = sp.end
			}
			continue
		}
		closeRun()
		if !s.visible(fl.source, kind) {
			continue
		}
		if !first {
			p.own = append(p.own, ',')
		}
		p.own, first = s.appendIdentityFlag(p.own, *fl), false
	}
	closeRun()
	return first
}

// identityView is the environment's flags as identities answers show them,
// each with its "variant" (null: there is no split without an identity).
// base holds every flag, comma separated; spans locates each feature's flag
// object in it by feature index, per kind of key, start -1 for a flag that
// kind does not see.
type identityView struct {
	base  []byte
	spans [2][]span
}

// encodeIdentityView pre-encodes the flags identities answers copy, once
// for both kinds of key: a client key's answer skips the flags it does not
// see.
func (s *snapshot) encodeIdentityView() identityView {
	size := 0
	for _, fl := range s.envFlags {
		size += len(s.flagPrefix[fl.source.index]) + len(fl.value()) + len(nullVariantEnd) + 1
	}
	v := identityView{base: make([]byte, 0, size)}
	server := make([]span, len(s.envFlags))
	for fi, fl := range s.envFlags {
		if fi > 0 {
			v.base = append(v.base, ',')
		}
		from := len(v.base)
		v.base = s.appendIdentityFlag(v.base, fl)
		server[fi] = span{int32(from), int32(len(v.base))}
	}
	v.spans[serverKey], v.spans[clientKey] = server, server
	if !s.hidesNothing() {
		client := slices.Clone(server)
		for fi, fl := range s.envFlags {
			if !s.visible(fl.source, clientKey) {
				client[fi] = span{-1, -1}
			}
		}
		v.spans[clientKey] = client
	}
	return v
}

// appendIdentityFlag appends the flag's object as identities answers show
// it: the API flag object and, after its value, the variant the split
// chose: the option's key (null when it has none), "control" for the
// control value, null when the flag was not split (Flagsmith's API since
// 2026-06).
func (s *snapshot) appendIdentityFlag(dst []byte, fl evalFlag) []byte {
	dst = append(dst, s.flagPrefix[fl.source.index]...)
	dst = append(dst, fl.value()...)
	switch {
	case fl.variant >= 0:
		dst = append(dst, `,"variant":`...)
		dst = append(dst, fl.source.variants[fl.variant].key...)
		return append(dst, '}')
	case fl.control():
		return append(dst, `,"variant":"control"}`...)
	}
	return append(dst, nullVariantEnd...)
}

// responseParts is a response body in parts: bytes the request encoded
// (own) and runs of the environment's pre-encoded flags body (env), so that
// a large response copies nothing it can point at. The zero value is
// ready once reset.
type responseParts struct {
	own   []byte
	env   []byte
	parts []part // in body order; own bytes not yet in a part come last
	mark  int    // own bytes before this are in parts
}

type part struct {
	env        bool
	start, end int32
}

func (p *responseParts) reset(own, env []byte) {
	p.own, p.env, p.parts, p.mark = own, env, p.parts[:0], 0
}

// addEnv adds env[start:end], closing the own bytes appended since the last
// part into a part of their own.
func (p *responseParts) addEnv(start, end int32) {
	p.closeOwn()
	p.parts = append(p.parts, part{env: true, start: start, end: end})
}

func (p *responseParts) closeOwn() {
	if len(p.own) > p.mark {
		p.parts = append(p.parts, part{start: int32(p.mark), end: int32(len(p.own))})
		p.mark = len(p.own)
	}
}

// size is the body's length in bytes.
func (p *responseParts) size() int {
	n := len(p.own) - p.mark
	for _, pt := range p.parts {
		n += int(pt.end - pt.start)
	}
	return n
}

// each calls write with the body's parts in order, until one fails.
func (p *responseParts) each(write func([]byte) error) error {
	p.closeOwn()
	for _, pt := range p.parts {
		src := p.own
		if pt.env {
			src = p.env
		}
		if err := write(src[pt.start:pt.end]); err != nil {
			return err
		}
	}
	return nil
}

// assemble appends the whole body to dst.
func (p *responseParts) assemble(dst []byte) []byte {
	_ = p.each(func(b []byte) error { dst = append(dst, b...); return nil })
	return dst
}

// nullVariantEnd ends the identities object of a flag that was not split.
const nullVariantEnd = `,"variant":null}`
