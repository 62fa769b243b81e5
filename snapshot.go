package main

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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
	hideDisabled  bool
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
	// identity's flag that equals it is copied from views[kind].flags.
	envFlags []evalFlag
	views    [2]view
	document preEncoded // GET /api/v1/environment-document/: the document as received
	compile  time.Duration
}

type keyKind uint8

const (
	clientKey keyKind = iota
	serverKey
)

// view is the pre-encoded answer to GET /api/v1/flags/ for one kind of key.
type view struct {
	flags preEncoded
	// spans locates each feature's flag object in flags.body, by feature
	// index; start is -1 for a flag this kind of key does not see.
	spans []span
}

type span struct{ start, end int32 }

// newSnapshot compiles a document and pre-encodes what the API serves from
// it. It is the only place a document is compiled.
func newSnapshot(raw []byte) (*snapshot, error) {
	start := time.Now()
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
		hideDisabled:  doc.Project.HideDisabledFlags != nil && *doc.Project.HideDisabledFlags,
		document:      newPreEncoded(raw),
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
	for kind := range s.views {
		s.views[kind] = s.encodeView(keyKind(kind))
	}
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
		if bytes.Equal(prev.document.body, s.document.body) {
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
// all in one buffer.
func (s *snapshot) encodeSources(serverOnlyIDs map[string]bool) {
	sources := s.engine.sources
	s.serverOnly = make([]bool, len(sources))
	ends := make([]int, len(sources))
	buf := make([]byte, 0, 96*len(sources)) // about one prefix each
	for i, f := range sources {
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
		ends[i] = len(buf)
		s.serverOnly[i] = serverOnlyIDs[f.apiID]
	}
	s.flagPrefix = make([][]byte, len(sources))
	from := 0
	for i, end := range ends {
		s.flagPrefix[i] = buf[from:end:end]
		from = end
	}
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
	return v
}

// flag is the pre-encoded flag object of the named feature (?feature=NAME),
// false when there is none or this kind of key does not see it.
func (s *snapshot) flag(name string, kind keyKind) ([]byte, bool) {
	fi, ok := s.engine.featureIndex[name]
	if !ok {
		return nil, false
	}
	v := &s.views[kind]
	sp := v.spans[fi]
	if sp.start < 0 {
		return nil, false
	}
	return v.flags.body[sp.start:sp.end:sp.end], true
}

// visible applies the client-key rules: server-only features and, when the
// project hides them, disabled flags are left out.
func (s *snapshot) visible(f *feature, kind keyKind) bool {
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

// appendFlags appends an identity's flags as kind sees them, comma
// separated. A flag the identity's segments, overrides and splits leave as
// in the environment is copied from the environment's pre-encoded body, in
// runs as long as possible; only the flags that differ are encoded.
func (s *snapshot) appendFlags(dst []byte, flags []evalFlag, kind keyKind) []byte {
	v := &s.views[kind]
	body := v.flags.body
	first := true
	runStart, runEnd := int32(-1), int32(-1)
	for fi := range flags {
		fl := &flags[fi]
		if fl.source == s.envFlags[fi].source && fl.variant < 0 {
			if sp := v.spans[fi]; sp.start >= 0 {
				if runStart < 0 {
					runStart = sp.start
				}
				runEnd = sp.end
			}
			continue
		}
		if runStart >= 0 {
			if !first {
				dst = append(dst, ',')
			}
			dst, first = append(dst, body[runStart:runEnd]...), false
			runStart = -1
		}
		if !s.visible(fl.source, kind) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		dst, first = s.appendFlag(dst, *fl), false
	}
	if runStart >= 0 {
		if !first {
			dst = append(dst, ',')
		}
		dst = append(dst, body[runStart:runEnd]...)
	}
	return dst
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
