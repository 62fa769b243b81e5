package main

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// This file is the one way a request is read: its environment key, then its
// body. Both return errors instead of answering, and each API family turns
// them into its own error shape in one small function (writeRequestError for
// Flagsmith's endpoints, writeOFREPRequestError for OFREP).

// Why a request's key or body could not be read.
var (
	errMissingKey = errors.New("unknown key: no environment key was sent")
	errUnknownKey = errors.New("unknown key")
	errNoDocument = errors.New("the environment document for this key has not been received yet")
	// errServerKeyOnly refuses a client key (public: it ships in browser
	// apps) where an answer holds segment rules, overrides or server-only
	// features.
	errServerKeyOnly = errors.New("unauthorized: this endpoint needs a server-side key")
)

// keyHeaders says where an API takes its environment key from.
type keyHeaders uint8

const (
	// environmentKeyHeader is X-Environment-Key, as every Flagsmith SDK sends it.
	environmentKeyHeader keyHeaders = iota
	// anyKeyHeader adds Authorization: Bearer and X-API-Key, the two
	// schemes OFREP providers are configured with.
	anyKeyHeader
)

func (h keyHeaders) key(r *http.Request) string {
	key := r.Header.Get("X-Environment-Key")
	if key != "" || h == environmentKeyHeader {
		return key
	}
	if scheme, token, found := strings.Cut(r.Header.Get("Authorization"), " "); found && strings.EqualFold(scheme, "Bearer") {
		key = strings.TrimSpace(token)
	}
	if key == "" {
		key = r.Header.Get("X-API-Key")
	}
	return key
}

func (h keyHeaders) String() string {
	if h == environmentKeyHeader {
		return "X-Environment-Key"
	}
	return "X-Environment-Key, Authorization: Bearer or X-API-Key"
}

// resolveKey finds the environment of the request's key.
func (s *server) resolveKey(r *http.Request, from keyHeaders) (keyRef, error) {
	key := from.key(r)
	if key == "" {
		return keyRef{}, fmt.Errorf("%w: send it in %s", errMissingKey, from)
	}
	ref, ok := s.lookup(key)
	if !ok {
		return keyRef{}, fmt.Errorf("%w %s", errUnknownKey, maskedKey(key))
	}
	return ref, nil
}

// resolve finds the environment of the request's key and its snapshot.
func (s *server) resolve(r *http.Request, from keyHeaders) (keyRef, *snapshot, error) {
	ref, err := s.resolveKey(r, from)
	if err != nil {
		return keyRef{}, nil, err
	}
	snap := ref.env.snap.Load()
	if snap == nil {
		return keyRef{}, nil, errNoDocument
	}
	return ref, snap, nil
}

// readRequestBody reads the request body into buf, at most limit bytes; a
// larger one is an *http.MaxBytesError. A Content-Length over the limit is
// refused before reading, so a client that sent "Expect: 100-continue" gets
// the 413 at once instead of "100 Continue" and then the 413.
func readRequestBody(w http.ResponseWriter, r *http.Request, limit int64, buf []byte) ([]byte, error) {
	if r.ContentLength > limit {
		return buf, &http.MaxBytesError{Limit: limit}
	}
	for body := http.MaxBytesReader(w, r.Body, limit); ; {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return buf, err
		}
		if err != nil {
			return buf, fmt.Errorf("body: could not be read: %w", err)
		}
	}
}

// replyTo reads how the request wants its answer: gzipped or not, on which
// connection (to cork).
func replyTo(w http.ResponseWriter, r *http.Request) reply {
	sock, _ := r.Context().Value(socketKey{}).(socket)
	return reply{w: w, gzip: acceptsGzip(r), sock: sock}
}

// socketKey holds a request's socket in its context (connContext).
type socketKey struct{}

// acceptsGzip reads Accept-Encoding without allocating: it is read on every
// request that gets a body.
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for v != "" {
			var part string
			part, v, _ = strings.Cut(v, ",")
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			// "gzip;q=0" refuses gzip; any other weight accepts it.
			q := 1.0
			if name, val, ok := strings.Cut(strings.TrimSpace(params), "="); ok && strings.EqualFold(strings.TrimSpace(name), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
					q = f
				}
			}
			return q > 0
		}
	}
	return false
}

// requestStatus is the HTTP status for an error from resolve,
// readRequestBody or a body's decoder, and its message.
func requestStatus(err error) (int, string) {
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, errMissingKey), errors.Is(err, errUnknownKey), errors.Is(err, errServerKeyOnly):
		return http.StatusUnauthorized, err.Error()
	case errors.Is(err, errNoDocument):
		return http.StatusServiceUnavailable, err.Error()
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is over %d bytes", tooBig.Limit)
	}
	return http.StatusBadRequest, err.Error()
}

// writeRequestError answers a request that could not be read in the
// Flagsmith API's error shape.
func writeRequestError(w http.ResponseWriter, err error) {
	code, message := requestStatus(err)
	writeError(w, code, statusWords[code], message)
}

// statusWords is the "status" of the Flagsmith-shaped error bodies.
var statusWords = map[int]string{
	http.StatusBadRequest:            "bad_request",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusNotFound:              "not_found",
	http.StatusRequestEntityTooLarge: "request_too_large",
	http.StatusServiceUnavailable:    "unavailable",
}

// requestBuffers is the per-request scratch space of the endpoints that
// evaluate an identity (Flagsmith's identities, OFREP), recycled through
// bufferPool so that a request allocates almost nothing.
type requestBuffers struct {
	decodedTraits
	body  []byte
	slots []value
	own   []byte // the response's own bytes (responseParts.own)
	parts responseParts
	out   []byte
	flags []evalFlag
}

var bufferPool = sync.Pool{New: func() any { return new(requestBuffers) }}

// maxPooledBytes keeps one huge request from pinning its buffers in the
// pool; it is well above the identity response of a 500-feature document.
const maxPooledBytes = 1 << 20

func getBuffers() *requestBuffers { return bufferPool.Get().(*requestBuffers) }

func putBuffers(buf *requestBuffers) {
	if cap(buf.body) > maxPooledBytes || cap(buf.out) > maxPooledBytes || cap(buf.own) > maxPooledBytes ||
		cap(buf.traits) > 256 || cap(buf.slots) > 256 {
		return
	}
	buf.traits, buf.sent = buf.traits[:0], buf.sent[:0]
	buf.parts.reset(nil, nil) // no reference to a snapshot's body
	bufferPool.Put(buf)
}

// authorizeAdmin checks the request's bearer token against admin_token. It
// writes the error response and returns false when the request may not
// use the admin feature named: 404 when admin_token is not set, 401 for a
// missing or wrong token.
func (s *server) authorizeAdmin(w http.ResponseWriter, r *http.Request, cfg *Config, feature string) bool {
	if cfg.AdminToken == "" {
		writeError(w, http.StatusNotFound, "not_found", feature+" is disabled: set admin_token to enable it")
		return false
	}
	if !authorized(r, "Bearer", cfg.AdminToken) {
		writeError(w, http.StatusUnauthorized, "unauthorized", "a valid Authorization: Bearer token is required")
		return false
	}
	return true
}

// secretEqual compares a token sent with a secret in constant time.
func secretEqual(sent string, token secret) bool {
	return subtle.ConstantTimeCompare([]byte(sent), []byte(token)) == 1
}

// authorized reports whether the request's Authorization header holds token
// under scheme. Schemes are case-insensitive (RFC 9110); the token is
// compared in constant time.
func authorized(r *http.Request, scheme string, token secret) bool {
	name, value, found := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !found || !strings.EqualFold(name, scheme) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(value)), []byte(token)) == 1
}
