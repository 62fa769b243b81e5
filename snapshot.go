package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// snapshot is everything the request path needs for one environment
// document, built once when the document arrives and never modified after it
// is published: handlers Load it once per request and take no lock.
type snapshot struct {
	doc       *compiledDocument
	updatedAt string // X-Flagsmith-Document-Updated-At, empty when unknown
	// updatedAtHeader is updatedAt as a ready header value (nil when
	// unknown), assigned to responses without allocating.
	updatedAtHeader []string
	views           [2]view
	document        preEncoded // GET /api/v1/environment-document/
	compile         time.Duration
}

type keyKind uint8

const (
	clientKey keyKind = iota
	serverKey
)

// view is the pre-encoded answer to GET /api/v1/flags/ for one kind of key.
type view struct {
	flags   preEncoded
	feature map[string][]byte // ?feature=NAME bodies
}

// preEncoded is a JSON response body prepared once per document: its bytes,
// their gzip when large enough to gain from it, its ETag, and the header
// values, so serving it allocates nothing.
type preEncoded struct {
	body, gzipped []byte
	etag          string
	etagHeader    []string
	// Content-Length values: a known length spares net/http the chunked
	// encoding of a body this size.
	length, gzipLength []string
}

func newPreEncoded(body []byte) preEncoded {
	p := preEncoded{body: body, etag: etagOf(body), length: []string{strconv.Itoa(len(body))}}
	p.etagHeader = []string{p.etag}
	if len(body) > gzipMinBytes {
		p.gzipped = gzipBytes(body)
		p.gzipLength = []string{strconv.Itoa(len(p.gzipped))}
	}
	return p
}

// newSnapshot compiles a document and pre-encodes the environment flags.
func newSnapshot(raw []byte) (*snapshot, error) {
	start := time.Now()
	doc, err := compileDocument(raw)
	if err != nil {
		return nil, err
	}
	s := &snapshot{doc: doc, document: newPreEncoded(raw)}
	if !doc.updatedAt.IsZero() {
		s.updatedAt = unixSeconds(doc.updatedAt)
		s.updatedAtHeader = []string{s.updatedAt}
	}
	prepareAPIFeatures(doc)
	flags := doc.engine.evaluate(nil, nil, nil)
	for kind := range s.views {
		v := &s.views[kind]
		v.feature = make(map[string][]byte, len(flags))
		body := []byte{'['}
		for _, fl := range flags {
			if !visible(doc, fl.source, keyKind(kind)) {
				continue
			}
			obj := appendFlag(nil, fl)
			v.feature[fl.source.name] = obj
			if len(body) > 1 {
				body = append(body, ',')
			}
			body = append(body, obj...)
		}
		v.flags = newPreEncoded(append(body, ']'))
	}
	s.compile = time.Since(start)
	return s, nil
}

// prepareAPIFeatures pre-encodes, for every flag source (defaults and
// overrides), the start of its API flag object, so a response only appends
// the value.
func prepareAPIFeatures(doc *compiledDocument) {
	prep := func(f *feature) {
		var md struct {
			ID json.RawMessage `json:"id"`
		}
		_ = json.Unmarshal(f.metadata, &md)
		id := string(compactJSON(md.ID))
		if id == "" {
			id = "null"
		}
		typ := doc.featureTypes[id]
		if typ == "" {
			typ = "STANDARD"
		}
		b := append([]byte(nil), `{"feature":{"id":`...)
		b = append(b, id...)
		b = append(b, `,"name":`...)
		b = appendJSONString(b, f.name)
		b = append(b, `,"type":`...)
		b = appendJSONString(b, typ)
		b = append(b, `},"enabled":`...)
		if f.enabled {
			b = append(b, "true"...)
		} else {
			b = append(b, "false"...)
		}
		f.apiPrefix = append(b, `,"feature_state_value":`...)
		f.serverOnly = doc.serverOnly[id]
	}
	e := doc.engine
	for i := range e.features {
		prep(&e.features[i])
	}
	for _, list := range e.candidates {
		for _, c := range list {
			prep(c.source)
		}
	}
}

// visible applies the client-key rules: server-only features and, when the
// project hides them, disabled flags are left out.
func visible(doc *compiledDocument, f *feature, kind keyKind) bool {
	if kind == serverKey {
		return true
	}
	return !f.serverOnly && (f.enabled || !doc.hideDisabled)
}

func appendFlag(dst []byte, fl evalFlag) []byte {
	dst = append(dst, fl.source.apiPrefix...)
	dst = append(dst, fl.value()...)
	return append(dst, '}')
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

func etagOf(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
}

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
