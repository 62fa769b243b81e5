package main

import (
	"fmt"
	"net/http"
	"time"
)

// This file is the environment's own answers: GET /api/v1/flags/ and
// GET /api/v1/environment-document/, both served from bytes encoded once
// per document (snapshot.go).

// handleFlags is GET /api/v1/flags/: the environment's flags, as encoded
// when the document arrived, or with ?feature= one of them.
func (s *server) handleFlags(w http.ResponseWriter, r *http.Request) {
	ref, snap, err := s.resolve(r, environmentKeyHeader)
	if err != nil {
		writeRequestError(w, err)
		return
	}
	setVersionHeader(w, snap)
	if r.URL.RawQuery != "" {
		if q := r.URL.Query(); q.Has("feature") {
			name := q.Get("feature")
			body, found := snap.flag(name, ref.kind)
			if !found {
				writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("feature '%s' not found", name))
				return
			}
			replyTo(w, r).writeBody(body)
			return
		}
	}
	snap.views[ref.kind].flags.serve(w, r)
}

// handleEnvironmentDocument serves the document as received, to server keys
// only: it holds segment rules, identity overrides and server-only features.
func (s *server) handleEnvironmentDocument(w http.ResponseWriter, r *http.Request) {
	ref, snap, err := s.resolve(r, environmentKeyHeader)
	if err == nil && ref.kind != serverKey {
		err = errServerKeyOnly
	}
	if err != nil {
		writeRequestError(w, err)
		return
	}
	setVersionHeader(w, snap)
	// Conditional as Flagsmith's API answers it, so that a proxy polling
	// this one downloads nothing while nothing changed. If-None-Match, when
	// sent, decides alone (RFC 9110 13.2.2); serve answers it.
	if !snap.served.IsZero() {
		// Never later than now: a document dated in the future would
		// otherwise make every later change look old to If-Modified-Since.
		modified := min(snap.served.Unix(), s.now().Unix())
		w.Header().Set("Last-Modified", time.Unix(modified, 0).UTC().Format(http.TimeFormat))
		if r.Header.Get("If-None-Match") == "" {
			if since, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && since.Unix() >= modified {
				w.Header()["Etag"] = snap.document.etagHeader
				w.WriteHeader(http.StatusNotModified)
				return
			}
		}
	}
	snap.document.serve(w, r)
}

// flag is the pre-encoded flag object of the named feature (?feature=NAME),
// false when there is none or this kind of key does not see it.
func (s *snapshot) flag(name string, kind keyKind) ([]byte, bool) {
	fi, ok := s.engine.featureIndex[name]
	if !ok {
		return nil, false
	}
	v := &s.views[kind]
	if v.base == nil {
		// A large document's flags list is held gzipped only (newSnapshot):
		// the flag object is the identities view's, without its variant,
		// which is always null without an identity.
		sp := s.identities.spans[kind][fi]
		if sp.start < 0 {
			return nil, false
		}
		obj := s.identities.base[sp.start : sp.end-int32(len(nullVariantEnd))]
		return append(append(make([]byte, 0, len(obj)+1), obj...), '}'), true
	}
	sp := v.spans[fi]
	if sp.start < 0 {
		return nil, false
	}
	return v.base[sp.start:sp.end:sp.end], true
}
