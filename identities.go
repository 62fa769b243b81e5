package main

import (
	"errors"
	"net/http"
)

// This file is GET and POST /api/v1/identities/, top to bottom: resolve the
// key and read the body (request.go), decode it (decode.go), then answer
// (identities_answer.go: evaluate, assemble from the environment's
// pre-encoded flag objects, write through respond.go) and hand the request
// to the upstream checks (upstream_identities.go).

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
	s.writeIdentity(replyTo(w, r), ref.kind, snap, buf, identity{identifier: identifier, scratch: buf.slots})
	s.handUpstream(ref, identifier, nil, nil)
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
	if ref, snap, id, rep, ok := s.readIdentity(w, r, buf, nil); ok {
		s.writeIdentity(rep, ref.kind, snap, buf, id)
		s.handUpstream(ref, id.identifier, buf.body, &buf.decodedTraits)
	}
}

// readIdentity reads a POST whose body is an identities body: the key
// (refused by keyCheck when it returns an error), the body, decoded into buf
// (id's traits and scratch space are buf's), and how to answer. When it
// cannot, it answers the error and returns ok false.
func (s *server) readIdentity(w http.ResponseWriter, r *http.Request, buf *requestBuffers, keyCheck func(keyRef) error) (ref keyRef, snap *snapshot, id identity, rep reply, ok bool) {
	ref, snap, err := s.resolve(r, environmentKeyHeader)
	if err == nil && keyCheck != nil {
		err = keyCheck(ref)
	}
	if err == nil {
		buf.body, err = readRequestBody(w, r, s.config().Limits.MaxBodyBytes, buf.body[:0])
		rep = replyTo(w, r)
	}
	if err == nil {
		id.identifier, err = decodeIdentityBody(buf.body, &buf.decodedTraits, identityLimitsOf(s.config(), snap))
	}
	if err != nil {
		writeRequestError(w, err)
		return keyRef{}, nil, identity{}, reply{}, false
	}
	id.traits, id.scratch = buf.traits, buf.slots
	return ref, snap, id, rep, true
}
