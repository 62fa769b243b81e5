package main

import "slices"

// writeIdentity evaluates the identity and appends the response by hand:
// flags the identity leaves as in the environment are copied from the
// environment's pre-encoded identities body, the others are encoded from
// their value and variant. The traits shown are those buf decoded (none for
// a GET); id's scratch space is buf's.
func (s *server) writeIdentity(rep reply, kind keyKind, snap *snapshot, buf *requestBuffers, id identity) {
	if v := snap.updatedAtHeader; v != nil {
		rep.w.Header()[updatedAtHeader] = v
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
	var refill func() bool
	if len(env) > streamedBodyBytes {
		refill = streamFlags(p, kind, snap, buf, &id)
	} else {
		buf.flags = snap.engine.evaluate(buf.flags[:0], &id, nil)
		buf.slots = id.scratch
		snap.flagParts(p, buf.flags, 0, kind, true)
		p.own = append(p.own, "]}"...)
		buf.own = p.own
	}
	rep.writeParts(p, &buf.out, refill)
}

// streamFlags adds the first chunk of the identity's flags to p and returns
// what puts the next chunks in p, in turn, until it returns false.
func streamFlags(p *responseParts, kind keyKind, snap *snapshot, buf *requestBuffers, id *identity) func() bool {
	ev := snap.engine.begin(id)
	buf.slots = id.scratch
	n := len(snap.engine.features)
	next, first, done := 0, true, false
	fill := func() bool {
		if done {
			return false
		}
		to := min(next+streamChunk, n)
		buf.flags = ev.flags(buf.flags[:0], next, to)
		first = snap.flagParts(p, buf.flags, next, kind, first)
		if to == n {
			p.own = append(p.own, "]}"...)
			done = true
		}
		next = to
		return true
	}
	fill()
	return func() bool {
		buf.own = p.own
		p.reset(p.own[:0], p.env)
		return fill()
	}
}

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

// nullVariantEnd ends the identities object of a flag that was not split.
const nullVariantEnd = `,"variant":null}`
