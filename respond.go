package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// This file is the one way a body is written: JSON with its Content-Type,
// gzip when the client takes it and the body is large enough to gain,
// ETag/304 for bodies prepared once per document (preEncoded), and the
// Flagsmith-shaped error body (writeError).

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

// preEncoded is a JSON response body prepared once per document: its bytes,
// their gzip when large enough to gain from it, its ETag, and the header
// values, so serving it allocates nothing.
type preEncoded struct {
	// body is nil when only the gzip is kept (keepGzipOnly).
	body, gzipped []byte
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
	rep := replyTo(w, r)
	defer rep.sock.cork(p.size()).release(w)
	if p.gzipped != nil && rep.gzip {
		h["Content-Encoding"] = gzipEncoding
		h["Content-Length"] = p.gzipLength
		_, _ = w.Write(p.gzipped)
		return
	}
	h["Content-Length"] = p.length
	switch {
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

var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return zw
}}

// writeBody writes a JSON body, gzipped when the client accepts it and the
// body is large enough to gain from it.
func (rep reply) writeBody(body []byte) {
	w := rep.w
	h := w.Header()
	h["Content-Type"] = jsonContentType
	defer rep.sock.cork(len(body)).release(w)
	if len(body) > gzipMinBytes && rep.gzip {
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

// reply is a response to write: where, whether the client takes gzip, and
// the connection to cork. It is read from the request once, so that what
// writes an answer needs the request no more.
type reply struct {
	w    http.ResponseWriter
	gzip bool
	sock socket
}

// maxAssembledBytes is the size up to which a body in parts is copied into
// one buffer; a larger one (thousands of features) is written in its parts,
// most of them straight from the environment's body.
const maxAssembledBytes = 64 << 10

// writeParts writes a JSON body given in parts: copied into one write when
// it is small, gathered into large writes when it is not (its parts are
// many, mostly small), gzipped when the client takes it and it is large
// enough to gain. With refill, the body is streamed without a
// Content-Length: once p is written, refill puts the next parts in it,
// until it returns false. scratch holds an assembled body.
func (rep reply) writeParts(p *responseParts, scratch *[]byte, refill func() bool) {
	streamed := refill != nil
	size := p.size()
	if !streamed && size <= maxAssembledBytes {
		// One contiguous write is cheapest for an ordinary response.
		*scratch = p.assemble((*scratch)[:0])
		rep.writeBody(*scratch)
		return
	}
	w := rep.w
	h := w.Header()
	h["Content-Type"] = jsonContentType
	var out io.Writer = w
	var zw *gzip.Writer
	switch {
	case rep.gzip:
		h["Content-Encoding"] = gzipEncoding
		setVary(h)
		zw = gzipWriters.Get().(*gzip.Writer)
		zw.Reset(w)
		out = zw
	case !streamed:
		h["Content-Length"] = []string{strconv.Itoa(size)}
	}
	pool := &partWriters
	if streamed {
		pool, size = &streamWriters, 0 // not corked: it leaves in full writes
	}
	c := rep.sock.cork(size)
	bw := pool.Get().(*bufio.Writer)
	bw.Reset(out)
	for p.writeTo(bw) == nil && streamed && refill() {
	}
	_ = bw.Flush()
	bw.Reset(nil)
	pool.Put(bw)
	if zw != nil {
		_ = zw.Close()
		gzipWriters.Put(zw)
	}
	c.release(w)
}

// Writers that gather a body's parts: partWriters for a body of up to a few
// MiB, streamWriters for a streamed one, whose 16 KiB writes are few enough
// system calls for a body of megabytes (at 32 KiB the 10,000-feature
// document's identities were within the noise) while a hundred streams in
// flight hold under 2 MiB.
var (
	partWriters   = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, maxAssembledBytes) }}
	streamWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
)

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// setVersionHeader tells SDKs the content version they are served
// (X-Flagsmith-Document-Updated-At), as the Flagsmith API does: the JS
// client compares it with realtime events to decide whether to refetch.
func setVersionHeader(w http.ResponseWriter, snap *snapshot) {
	if snap.updatedAtHeader != nil {
		w.Header()[updatedAtHeader] = snap.updatedAtHeader
	}
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

// writeTo writes the body's parts in order, until one fails.
func (p *responseParts) writeTo(w io.Writer) error {
	p.closeOwn()
	for _, pt := range p.parts {
		if _, err := w.Write(p.part(pt)); err != nil {
			return err
		}
	}
	return nil
}

// assemble appends the whole body to dst.
func (p *responseParts) assemble(dst []byte) []byte {
	p.closeOwn()
	for _, pt := range p.parts {
		dst = append(dst, p.part(pt)...)
	}
	return dst
}

func (p *responseParts) part(pt part) []byte {
	if pt.env {
		return p.env[pt.start:pt.end]
	}
	return p.own[pt.start:pt.end]
}
