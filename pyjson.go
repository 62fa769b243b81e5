package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file reads JSON the way Python's json module does, and prints what
// it returns the way Python's str() does. Flagsmith's engine parses an IN
// condition's "[…]" value with json.loads and compares members by str(), so
// "[1.0, NaN, [\"a\"]]" holds "1.0", "nan" and "['a']".

// pyStrOfJSON returns Python's str() of what json.loads makes of raw: a
// string as it is, anything else as its repr. Text json.loads rejects is
// returned as it is.
func pyStrOfJSON(raw json.RawMessage) string {
	r := pyJSONReader{data: raw}
	r.skipSpace()
	v, ok := r.value(0)
	r.skipSpace()
	if !ok || r.pos != len(r.data) {
		return string(raw)
	}
	return v.str()
}

// pyJSONList reads raw as Python's json.loads would and returns str() of
// each member of the list it holds; ok is false where json.loads raises or
// returns something else.
func pyJSONList(raw []byte) (members []string, ok bool) {
	r := pyJSONReader{data: raw}
	r.skipSpace()
	if r.peek() != '[' {
		return nil, false
	}
	items, ok := r.list(0)
	r.skipSpace()
	if !ok || r.pos != len(r.data) {
		return nil, false
	}
	members = make([]string, len(items))
	for i, it := range items {
		members[i] = it.str()
	}
	return members, true
}

// pyJSONValue is a value json.loads returned, held as Python would print
// it: text is a str's own text, or the repr of anything else.
type pyJSONValue struct {
	text  string
	isStr bool
}

func (v pyJSONValue) str() string { return v.text }

func (v pyJSONValue) repr() string {
	if v.isStr {
		return pyRepr(v.text)
	}
	return v.text
}

// pyJSONReader reads JSON as Python's json module does, which differs from
// encoding/json in what a condition value can show: NaN, Infinity and
// -Infinity are floats, integers are unbounded (up to Python's 4300 digits)
// and a repeated object key keeps its first position and last value.
type pyJSONReader struct {
	data []byte
	pos  int
}

// maxPyJSONDepth stops runaway nesting, as Python's recursion limit does.
const maxPyJSONDepth = 1000

func (r *pyJSONReader) peek() byte {
	if r.pos < len(r.data) {
		return r.data[r.pos]
	}
	return 0
}

func (r *pyJSONReader) skipSpace() {
	for r.pos < len(r.data) && (r.data[r.pos] == ' ' || r.data[r.pos] == '\t' || r.data[r.pos] == '\n' || r.data[r.pos] == '\r') {
		r.pos++
	}
}

func (r *pyJSONReader) literal(word string) bool {
	if strings.HasPrefix(string(r.data[r.pos:min(r.pos+len(word), len(r.data))]), word) {
		r.pos += len(word)
		return true
	}
	return false
}

// pyLiterals are the JSON literals Python's json module reads (NaN and the
// infinities too) and how Python shows each.
var pyLiterals = [...]struct{ json, python string }{
	{"null", "None"}, {"true", "True"}, {"false", "False"},
	{"NaN", "nan"}, {"Infinity", "inf"}, {"-Infinity", "-inf"},
}

func (r *pyJSONReader) value(depth int) (pyJSONValue, bool) {
	if depth > maxPyJSONDepth {
		return pyJSONValue{}, false
	}
	for _, lit := range pyLiterals {
		if r.literal(lit.json) {
			return pyJSONValue{text: lit.python}, true
		}
	}
	switch c := r.peek(); {
	case c == '"':
		return r.str()
	case c == '-' || c >= '0' && c <= '9':
		return r.number()
	case c == '[':
		items, ok := r.list(depth)
		if !ok {
			return pyJSONValue{}, false
		}
		var b strings.Builder
		b.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(it.repr())
		}
		b.WriteByte(']')
		return pyJSONValue{text: b.String()}, true
	case c == '{':
		return r.object(depth)
	}
	return pyJSONValue{}, false
}

func (r *pyJSONReader) list(depth int) ([]pyJSONValue, bool) {
	r.pos++ // [
	items := []pyJSONValue{}
	r.skipSpace()
	if r.peek() == ']' {
		r.pos++
		return items, true
	}
	for {
		r.skipSpace()
		it, ok := r.value(depth + 1)
		if !ok {
			return nil, false
		}
		items = append(items, it)
		more, ok := r.after(']')
		if !ok {
			return nil, false
		}
		if !more {
			return items, true
		}
	}
}

// after reads what follows an element of a list or object: a comma (more
// is true) or the closing byte; ok is false for anything else.
func (r *pyJSONReader) after(closing byte) (more, ok bool) {
	r.skipSpace()
	switch r.peek() {
	case ',':
		r.pos++
		return true, true
	case closing:
		r.pos++
		return false, true
	}
	return false, false
}

func (r *pyJSONReader) object(depth int) (pyJSONValue, bool) {
	r.pos++ // {
	type entry struct{ key, value string }
	var entries []entry
	r.skipSpace()
	if r.peek() == '}' {
		r.pos++
		return pyJSONValue{text: "{}"}, true
	}
	for {
		r.skipSpace()
		if r.peek() != '"' {
			return pyJSONValue{}, false
		}
		k, ok := r.str()
		r.skipSpace()
		if !ok || r.peek() != ':' {
			return pyJSONValue{}, false
		}
		r.pos++
		r.skipSpace()
		v, ok := r.value(depth + 1)
		if !ok {
			return pyJSONValue{}, false
		}
		e := entry{k.repr(), v.repr()}
		if i := slices.IndexFunc(entries, func(x entry) bool { return x.key == e.key }); i >= 0 {
			entries[i] = e
		} else {
			entries = append(entries, e)
		}
		more, ok := r.after('}')
		if !ok {
			return pyJSONValue{}, false
		}
		if !more {
			var b strings.Builder
			b.WriteByte('{')
			for i, e := range entries {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(e.key + ": " + e.value)
			}
			b.WriteByte('}')
			return pyJSONValue{text: b.String()}, true
		}
	}
}

// str reads a string literal; encoding/json decodes its escapes (a lone
// surrogate, which a Go string cannot hold, becomes U+FFFD).
func (r *pyJSONReader) str() (pyJSONValue, bool) {
	for i := r.pos + 1; i < len(r.data); i++ {
		switch c := r.data[i]; {
		case c == '\\':
			i++
		case c == '"':
			var s string
			if json.Unmarshal(r.data[r.pos:i+1], &s) != nil {
				return pyJSONValue{}, false
			}
			r.pos = i + 1
			return pyJSONValue{text: s, isStr: true}, true
		case c < 0x20:
			return pyJSONValue{}, false
		}
	}
	return pyJSONValue{}, false
}

// number reads a JSON number (scanNumber): an int when it has neither
// fraction nor exponent, else a float.
func (r *pyJSONReader) number() (pyJSONValue, bool) {
	start := r.pos
	end, isFloat, ok := scanNumber(r.data, start)
	if !ok {
		return pyJSONValue{}, false
	}
	r.pos = end
	lit := string(r.data[start:r.pos])
	if isFloat {
		f, _ := pyFloat(lit)
		return pyJSONValue{text: string(appendPyFloat(nil, f))}, true
	}
	if len(strings.TrimPrefix(lit, "-")) > maxPyIntDigits {
		return pyJSONValue{}, false
	}
	return pyJSONValue{text: string(appendPyStr(nil, parseIntText(lit)))}, true
}

// pyRepr is Python's repr() of a str: single quotes unless the text holds a
// single quote and no double quote; backslash escapes for the quote, the
// backslash, tab, newline, carriage return and every other character
// Python cannot print.
func pyRepr(s string) string {
	quote := byte('\'')
	if strings.IndexByte(s, '\'') >= 0 && strings.IndexByte(s, '"') < 0 {
		quote = '"'
	}
	b := []byte{quote}
	for _, c := range s {
		switch {
		case c == rune(quote) || c == '\\':
			b = append(b, '\\', byte(c))
		case c == '\t':
			b = append(b, `\t`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '\r':
			b = append(b, `\r`...)
		case c >= ' ' && c < 0x7f, c > 0x7f && unicode.IsPrint(c):
			// Go's IsPrint and Python's isprintable both leave out the
			// categories Other and Separator, the ASCII space excepted.
			b = utf8.AppendRune(b, c)
		case c <= 0xff:
			b = fmt.Appendf(b, `\x%02x`, c)
		case c <= 0xffff:
			b = fmt.Appendf(b, `\u%04x`, c)
		default:
			b = fmt.Appendf(b, `\U%08x`, c)
		}
	}
	return string(append(b, quote))
}
