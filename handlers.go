package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

const updatedAtHeader = "X-Flagsmith-Document-Updated-At"

// Header values shared by every response. Handlers assign these slices
// instead of calling Header.Set, which allocates one per call on the hottest
// path; net/http never modifies a header value slice.
var (
	jsonContentType    = []string{"application/json"}
	gzipEncoding       = []string{"gzip"}
	varyAcceptEncoding = []string{"Accept-Encoding"}
	connectionClose    = []string{"close"}
)

// setVary adds Accept-Encoding to Vary, keeping what CORS put there.
func setVary(h http.Header) {
	if len(h["Vary"]) == 0 {
		h["Vary"] = varyAcceptEncoding
		return
	}
	h.Add("Vary", "Accept-Encoding")
}

// errorBody is the JSON body of every error response.
type errorBody struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, code int, status, message string) {
	body, _ := json.Marshal(errorBody{Status: status, Message: message})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "error", "could not encode the response")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// resolve finds the environment for the request's key and its snapshot. It
// writes the error response and returns ok false when there is none.
func (s *server) resolve(w http.ResponseWriter, r *http.Request) (keyRef, *snapshot, bool) {
	key := r.Header.Get("X-Environment-Key")
	if key == "" {
		writeError(w, http.StatusUnauthorized, "unauthorized", "unknown key: the X-Environment-Key header is missing")
		return keyRef{}, nil, false
	}
	ref, ok := s.lookup(key)
	if !ok {
		writeError(w, http.StatusUnauthorized, "unauthorized", "unknown key "+maskedKey(key))
		return keyRef{}, nil, false
	}
	snap := ref.env.snap.Load()
	if snap == nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable",
			"the environment document for this key has not been received yet")
		return keyRef{}, nil, false
	}
	if snap.updatedAtHeader != nil {
		w.Header()[updatedAtHeader] = snap.updatedAtHeader
	}
	return ref, snap, true
}

func (s *server) handleFlags(w http.ResponseWriter, r *http.Request) {
	ref, snap, ok := s.resolve(w, r)
	if !ok {
		return
	}
	if r.URL.RawQuery != "" {
		if q := r.URL.Query(); q.Has("feature") {
			name := q.Get("feature")
			body, found := snap.flag(name, ref.kind)
			if !found {
				writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("feature '%s' not found", name))
				return
			}
			writeBody(w, r, body)
			return
		}
	}
	snap.views[ref.kind].flags.serve(w, r)
}

// preEncoded is a JSON response body prepared once per document: its bytes,
// their gzip when large enough to gain from it, its ETag, and the header
// values, so serving it allocates nothing.
type preEncoded struct {
	// body is nil when only the gzip is kept (keepGzipOnly), or when the
	// body is pieces of another body (a view sharing the server view's).
	body, gzipped []byte
	pieces        [][]byte
	digest        [sha256.Size]byte
	etag          string
	etagHeader    []string
	// Content-Length values: a known length spares net/http the chunked
	// encoding of a body this size.
	length, gzipLength []string
	bodyLen            int // of the plain body, however it is held
}

func newPreEncoded(body []byte) preEncoded {
	p := preEncoded{body: body, digest: sha256.Sum256(body), length: []string{strconv.Itoa(len(body))}, bodyLen: len(body)}
	p.etag = `"` + base64.RawURLEncoding.EncodeToString(p.digest[:12]) + `"`
	p.etagHeader = []string{p.etag}
	if len(body) > gzipMinBytes {
		p.gzipped = gzipBytes(body)
		p.gzipLength = []string{strconv.Itoa(len(p.gzipped))}
	}
	return p
}

// keepGzipOnly drops the plain bytes of a large body that clients mostly
// take gzipped (an environment document of megabytes): the rare client that
// does not accept gzip gets it decompressed as it is sent.
func (p *preEncoded) keepGzipOnly() {
	if p.gzipped != nil {
		p.body = nil
	}
}

// size is the length of the plain body.
func (p *preEncoded) size() int { return p.bodyLen }

// serve writes a pre-encoded body: 304 when the client holds it, gzipped
// when the client accepts it.
func (p *preEncoded) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Etag"] = p.etagHeader
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, p.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h["Content-Type"] = jsonContentType
	setVary(h)
	defer corkFor(r, p.size()).release(w)
	if p.gzipped != nil && acceptsGzip(r) {
		h["Content-Encoding"] = gzipEncoding
		h["Content-Length"] = p.gzipLength
		_, _ = w.Write(p.gzipped)
		return
	}
	h["Content-Length"] = p.length
	switch {
	case p.pieces != nil:
		// Straight to the connection's own buffer: large pieces go out
		// without a copy, small ones are gathered there.
		for _, piece := range p.pieces {
			if _, err := w.Write(piece); err != nil {
				break
			}
		}
	case p.body == nil:
		if zr, err := gzip.NewReader(bytes.NewReader(p.gzipped)); err == nil {
			_, _ = io.Copy(w, zr)
		}
	default:
		_, _ = w.Write(p.body)
	}
}

// gzipBytes compresses a body prepared once per document: as small as gzip
// can make it, except for bodies so large (an environment document of
// thousands of features) that the best level would take seconds.
func gzipBytes(b []byte) []byte {
	level := gzip.BestCompression
	if len(b) > 1<<20 {
		level = gzip.BestSpeed
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, level)
	_, _ = zw.Write(b)
	_ = zw.Close()
	// Kept for the document's life: no spare capacity.
	return bytes.Clone(buf.Bytes())
}

func etagMatches(header, etag string) bool {
	for _, part := range strings.Split(header, ",") {
		part = strings.TrimSpace(part)
		if part == "*" || strings.TrimPrefix(part, "W/") == etag {
			return true
		}
	}
	return false
}

// gzipMinBytes is the body size from which responses are compressed, as in
// Flagsmith's proxy.
const gzipMinBytes = 1000

func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
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

var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return zw
}}

// writeBody writes a JSON body, gzipped when the client accepts it and the
// body is large enough to gain from it.
func writeBody(w http.ResponseWriter, r *http.Request, body []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	defer corkFor(r, len(body)).release(w)
	if len(body) > gzipMinBytes && acceptsGzip(r) {
		h["Content-Encoding"] = gzipEncoding
		setVary(h)
		zw := gzipWriters.Get().(*gzip.Writer)
		zw.Reset(w)
		_, _ = zw.Write(body)
		_ = zw.Close()
		gzipWriters.Put(zw)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// identityBuffers holds the per-request scratch space of identity requests.
type identityBuffers struct {
	decodedTraits
	body  []byte
	slots []value
	own   []byte // the response's own bytes (responseParts.own)
	parts responseParts
	out   []byte
	flags []evalFlag
}

var identityPool = sync.Pool{New: func() any { return new(identityBuffers) }}

// maxPooledBytes keeps one huge request from pinning its buffers in the
// pool; it is well above the identity response of a 500-feature document.
const maxPooledBytes = 1 << 20

func putIdentityBuffers(buf *identityBuffers) {
	if cap(buf.body) > maxPooledBytes || cap(buf.out) > maxPooledBytes || cap(buf.own) > maxPooledBytes ||
		cap(buf.traits) > 256 || cap(buf.slots) > 256 {
		return
	}
	buf.traits, buf.sent = buf.traits[:0], buf.sent[:0]
	buf.parts.reset(nil, nil) // no reference to a snapshot's body
	identityPool.Put(buf)
}

func (s *server) handleIdentitiesGet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !q.Has("identifier") {
		writeError(w, http.StatusBadRequest, "bad_request", "identifier: the query parameter is required")
		return
	}
	identifier := q.Get("identifier")
	if identifier == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "identifier: must not be empty")
		return
	}
	ref, snap, ok := s.resolve(w, r)
	if !ok {
		return
	}
	buf := identityPool.Get().(*identityBuffers)
	defer putIdentityBuffers(buf)
	s.writeIdentity(w, r, ref, snap, buf, identifier)
}

func (s *server) handleIdentitiesPost(w http.ResponseWriter, r *http.Request) {
	ref, snap, ok := s.resolve(w, r)
	if !ok {
		return
	}
	buf := identityPool.Get().(*identityBuffers)
	defer putIdentityBuffers(buf)
	identifier, err := s.decodeIdentity(w, r, snap, buf)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "request_too_large",
				fmt.Sprintf("the request body is over %d bytes", tooBig.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	s.writeIdentity(w, r, ref, snap, buf, identifier)
}

// maxTraitValueChars is Flagsmith's limit on a string trait value, counted in
// characters as Python counts them.
const maxTraitValueChars = 2000

// decodeIdentity reads the request body into buf and decodes it; traits are
// coerced once here, not per condition.
func (s *server) decodeIdentity(w http.ResponseWriter, r *http.Request, snap *snapshot, buf *identityBuffers) (string, error) {
	body, err := readRequestBody(w, r, s.config().Limits.MaxBodyBytes, buf.body[:0])
	buf.body = body
	if err != nil {
		return "", err
	}
	return decodeIdentityBody(body, &buf.decodedTraits, identityLimits{
		maxTraits:         s.config().Limits.MaxTraits,
		maxTraitKeyLength: s.config().Limits.MaxTraitKeyLength,
		traitNames:        snap.engine.traitNames,
	})
}

// readRequestBody reads the request body into buf, at most limit bytes; a
// larger one is an *http.MaxBytesError. A Content-Length over the limit is
// refused before reading, so a client that sent "Expect: 100-continue" gets
// the 413 at once instead of "100 Continue" and then the 413.
func readRequestBody(w http.ResponseWriter, r *http.Request, limit int64, buf []byte) ([]byte, error) {
	if r.ContentLength > limit {
		return buf, &http.MaxBytesError{Limit: limit}
	}
	return readBody(http.MaxBytesReader(w, r.Body, limit), buf)
}

// readBody reads r to the end into buf, reusing its capacity.
func readBody(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// writeIdentity evaluates the identity and appends the response by hand:
// flags the identity leaves as in the environment are copied from the
// environment's pre-encoded body, the others are encoded from their value.
func (s *server) writeIdentity(w http.ResponseWriter, r *http.Request, ref keyRef, snap *snapshot, buf *identityBuffers, identifier string) {
	id := identity{identifier: identifier, traits: buf.traits, scratch: buf.slots}
	env := snap.views[ref.kind].base
	p := &buf.parts
	p.reset(buf.own[:0], env)
	p.own = append(p.own, `{"identifier":`...)
	p.own = appendJSONString(p.own, identifier)
	p.own = append(p.own, `,"traits":[`...)
	for i, t := range buf.sent {
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
		streamIdentityFlags(w, r, snap, ref.kind, buf, &id)
		return
	}
	buf.flags = snap.engine.evaluate(buf.flags[:0], &id, nil)
	buf.slots = id.scratch
	snap.flagParts(p, buf.flags, 0, ref.kind, true)
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

// writeParts writes a large JSON body from its parts, gzipped when the
// client accepts it.
func writeParts(w http.ResponseWriter, r *http.Request, p *responseParts) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	defer corkFor(r, p.size()).release(w)
	if acceptsGzip(r) {
		h["Content-Encoding"] = gzipEncoding
		setVary(h)
		zw := gzipWriters.Get().(*gzip.Writer)
		zw.Reset(w)
		_ = p.each(func(b []byte) error { _, err := zw.Write(b); return err })
		_ = zw.Close()
		gzipWriters.Put(zw)
		return
	}
	h.Set("Content-Length", strconv.Itoa(p.size()))
	// Parts are many and mostly small: gathered into large writes, not a
	// system call each.
	bw := partWriters.Get().(*bufio.Writer)
	bw.Reset(w)
	if p.each(func(b []byte) error { _, err := bw.Write(b); return err }) == nil {
		_ = bw.Flush()
	}
	bw.Reset(nil)
	partWriters.Put(bw)
}

var partWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, maxAssembledBytes) }}

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
func streamIdentityFlags(w http.ResponseWriter, r *http.Request, snap *snapshot, kind keyKind, buf *identityBuffers, id *identity) {
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

// handleEnvironmentDocument serves the document as received, to server keys
// only: it holds segment rules, identity overrides and server-only features.
func (s *server) handleEnvironmentDocument(w http.ResponseWriter, r *http.Request) {
	ref, snap, ok := s.resolve(w, r)
	if !ok {
		return
	}
	if ref.kind != serverKey {
		writeError(w, http.StatusUnauthorized, "unauthorized", "the environment document needs a server-side key")
		return
	}
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

func (s *server) handleLiveness(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
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

// handleUnrouted answers paths no route takes: 405 with Allow when another
// method would be served, else 404, always as JSON.
func (s *server) handleUnrouted(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := s.mux.Handler(probe); pattern != "/" && pattern != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		if contains(allowed, http.MethodGet) {
			allowed = append(allowed, http.MethodHead)
		}
		allowed = append(allowed, http.MethodOptions)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("method %s is not allowed here; use %s", r.Method, strings.Join(allowed, ", ")))
		return
	}
	writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// cors answers preflight requests and marks responses readable by the
// configured origins. An origin that is not allowed gets no CORS headers.
func (s *server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		live := s.live.Load()
		allowed := live.origin == nil || live.origin[origin]
		if allowed {
			if live.origin == nil {
				h.Set("Access-Control-Allow-Origin", "*")
			} else {
				h.Set("Access-Control-Allow-Origin", origin)
				// No endpoint reads cookies or HTTP authentication: a page
				// gets credentials through only when the deployment asks.
				if live.cfg.AllowCredentials {
					h.Set("Access-Control-Allow-Credentials", "true")
				}
			}
			h.Set("Access-Control-Expose-Headers", updatedAtHeader+", ETag")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if allowed {
				h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
				if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
					h.Set("Access-Control-Allow-Headers", req)
				}
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusOK)
				return
			}
			writeError(w, http.StatusBadRequest, "bad_request", "origin not allowed")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitRequest answers headers over server.max_header_bytes with the API's
// JSON 431 (net/http's own limit, hardHeaderBytes, is set above it so that
// these reach us). Bodies are limited where they are read
// (readRequestBody), so that each API answers 413 in its own error shape.
func (s *server) limitRequest(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if limit := s.config().Server.MaxHeaderBytes; headerBytes(r) > limit {
			writeError(w, http.StatusRequestHeaderFieldsTooLarge, "request_header_fields_too_large",
				fmt.Sprintf("the request headers are over %d bytes", limit))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// headerBytes is the size of the request line and header block as sent over
// HTTP/1.1, which is what net/http's MaxHeaderBytes bounds. (HTTP/2 sends
// them compressed; the decoded size is what matters for memory.)
func headerBytes(r *http.Request) int {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2 // request line
	n += len("Host: ") + len(r.Host) + 2                              // net/http moves Host out of Header
	for name, values := range r.Header {
		for _, v := range values {
			n += len(name) + 2 + len(v) + 2
		}
	}
	return n + 2
}

// hardHeaderBytes is net/http's limit on the request line and headers: four
// times the configured limit, so that limitRequest sees and answers (with
// JSON) anything up to there. Beyond it net/http closes the connection with
// a plain-text 431 before any handler runs.
func (c ServerConfig) hardHeaderBytes() int { return 4 * c.MaxHeaderBytes }

// statusRecorder remembers the status a handler wrote, for metrics and the
// access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (sr *statusRecorder) WriteHeader(code int) {
	if sr.status == 0 {
		sr.status = code
	}
	sr.ResponseWriter.WriteHeader(code)
}

func (sr *statusRecorder) Write(b []byte) (int, error) {
	if sr.status == 0 {
		sr.status = http.StatusOK
	}
	n, err := sr.ResponseWriter.Write(b)
	sr.bytes += n
	return n, err
}

// recorders recycles statusRecorders: one per request is the only allocation
// the middleware would otherwise add to the flags path.
var recorders = sync.Pool{New: func() any { return new(statusRecorder) }}

// Unwrap lets http.ResponseController reach the connection (SSE flushes and
// deadlines).
func (sr *statusRecorder) Unwrap() http.ResponseWriter { return sr.ResponseWriter }

// observe records metrics and the access log, and turns a panic into a JSON
// 500 instead of a dropped connection (a panic is a bug, never bad input).
func (s *server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if s.stopping.Load() {
			// Draining: the client reconnects for its next request (to
			// another replica, once the load balancer has caught up) rather
			// than reuse a connection that shutdown is about to close.
			w.Header()["Connection"] = connectionClose
		}
		sr := recorders.Get().(*statusRecorder)
		*sr = statusRecorder{ResponseWriter: w}
		defer recorders.Put(sr)
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("handler panic", "path", s.loggedPath(r.URL.Path), "panic", fmt.Sprint(p))
				if sr.status == 0 {
					writeError(sr, http.StatusInternalServerError, "error", "internal error")
				}
			}
			if sr.status == 0 {
				sr.status = http.StatusOK
			}
			elapsed := time.Since(start)
			// The mux recorded the matched pattern on the request.
			s.stats.observeRequest(routeName(r.Pattern), sr.status, elapsed)
			if s.config().Logging.EnableAccessLog {
				s.log.Info("access",
					"method", r.Method, "path", s.loggedPath(r.URL.Path), "status", sr.status,
					"bytes", sr.bytes, "duration_ms", float64(elapsed.Microseconds())/1000,
					"client", s.clientAddr(r), "scheme", s.scheme(r), "user_agent", r.UserAgent())
			}
		}()
		next.ServeHTTP(sr, r)
	})
}

// streamPathPrefix begins the path of the realtime stream, whose next segment
// is a key.
const streamPathPrefix = "/sse/environments/"

// loggedPath is the request path with keys masked, so that a server key used
// in a stream URL, or pasted into any path, never reaches the log whole. A
// configured client key, which every browser holds, is kept: it names the
// environment.
func (s *server) loggedPath(path string) string {
	if !strings.HasPrefix(path, streamPathPrefix) && !strings.Contains(path, serverKeyPrefix) {
		return path // the common case: no allocation
	}
	segments := strings.Split(path, "/")
	for i, seg := range segments {
		mask := strings.HasPrefix(seg, serverKeyPrefix)
		if i == 3 && strings.HasPrefix(path, streamPathPrefix) { // "", "sse", "environments", key
			ref, known := s.lookup(seg)
			mask = mask || !known || ref.kind != clientKey
		}
		if mask {
			segments[i] = maskedKey(seg)
		}
	}
	return strings.Join(segments, "/")
}

// scheme is how the client reached us, from X-Forwarded-Proto when the
// config trusts proxy headers.
func (s *server) scheme(r *http.Request) string {
	if s.config().Server.ProxyHeaders {
		if proto := r.Header.Get("X-Forwarded-Proto"); proto != "" {
			return proto
		}
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// clientAddr is the client's address, from X-Forwarded-For when the config
// trusts proxy headers.
func (s *server) clientAddr(r *http.Request) string {
	if s.config().Server.ProxyHeaders {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			return strings.TrimSpace(first)
		}
	}
	return r.RemoteAddr
}
