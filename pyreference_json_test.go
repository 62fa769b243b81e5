package main

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// The plain model of Flagsmith's Python engine, continued: Python's
// json.loads, which reads an IN condition's "[…]" value, and the str() and
// repr() of what it returns.

// refStr is Python's str(): repr for everything but str itself.
func refStr(v pyValue) string {
	if v.kind == pyStrType {
		return v.s
	}
	return refRepr(v)
}

// refRepr is Python's repr() of a value json.loads can return.
func refRepr(v pyValue) string {
	switch v.kind {
	case pyNoneType:
		return "None"
	case pyBoolType:
		if v.b {
			return "True"
		}
		return "False"
	case pyIntType:
		return v.i.String()
	case pyFloatType:
		return refFloatRepr(v.f)
	case pyStrType:
		return refStrRepr(v.s)
	case pyListType:
		parts := make([]string, len(v.items))
		for i, it := range v.items {
			parts[i] = refRepr(it)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case pyDictType:
		var parts []string
		for i := 0; i+1 < len(v.items); i += 2 {
			parts = append(parts, refRepr(v.items[i])+": "+refRepr(v.items[i+1]))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return "?"
}

// refFloatRepr is Python's repr(float): the shortest digits that read back,
// in positional form when the exponent is from -4 to 15, else as d.ddde±XX.
func refFloatRepr(f float64) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	sci := strconv.FormatFloat(f, 'e', -1, 64)
	mantissa, expText, _ := strings.Cut(sci, "e")
	exp, _ := strconv.Atoi(expText)
	if exp >= -4 && exp < 16 {
		s := strconv.FormatFloat(f, 'f', -1, 64)
		if !strings.Contains(s, ".") {
			s += ".0"
		}
		return s
	}
	sign := "+"
	if exp < 0 {
		sign, exp = "-", -exp
	}
	return mantissa + "e" + sign + leftPad(strconv.Itoa(exp), 2)
}

func leftPad(s string, n int) string {
	for len(s) < n {
		s = "0" + s
	}
	return s
}

// refStrRepr is Python's repr(str): single quotes unless the text holds a
// single quote and no double quote; backslash escapes for the quote, the
// backslash, \t \n \r, other control characters and anything unprintable.
func refStrRepr(s string) string {
	quote := '\''
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		quote = '"'
	}
	var b strings.Builder
	b.WriteRune(quote)
	for _, r := range s {
		switch {
		case r == quote || r == '\\':
			b.WriteRune('\\')
			b.WriteRune(r)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < ' ' || r == 0x7f:
			b.WriteString(`\x` + leftPad(strconv.FormatInt(int64(r), 16), 2))
		case r < 0x7f || unicode.IsPrint(r):
			b.WriteRune(r)
		case r <= 0xff:
			b.WriteString(`\x` + leftPad(strconv.FormatInt(int64(r), 16), 2))
		case r <= 0xffff:
			b.WriteString(`\u` + leftPad(strconv.FormatInt(int64(r), 16), 4))
		default:
			b.WriteString(`\U` + leftPad(strconv.FormatInt(int64(r), 16), 8))
		}
	}
	b.WriteRune(quote)
	return b.String()
}

// refJSONLoads is Python's json.loads, for the values a condition or a
// trait can hold: it also reads NaN, Infinity and -Infinity, keeps integers
// unbounded, and gives repeated object keys their first position and last
// value. Strings are decoded by encoding/json (a Go string cannot hold the
// lone surrogates Python would keep).
func refJSONLoads(s string) (pyValue, bool) {
	p := refJSONParser{s: s}
	p.space()
	v, ok := p.value(0)
	p.space()
	return v, ok && p.pos == len(p.s)
}

var (
	refJSONStringToken = regexp.MustCompile(`^"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"`)
	refJSONNumberToken = regexp.MustCompile(`^-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`)
)

type refJSONParser struct {
	s   string
	pos int
}

func (p *refJSONParser) space() {
	for p.pos < len(p.s) && strings.IndexByte(" \t\n\r", p.s[p.pos]) >= 0 {
		p.pos++
	}
}

func (p *refJSONParser) take(word string) bool {
	if strings.HasPrefix(p.s[p.pos:], word) {
		p.pos += len(word)
		return true
	}
	return false
}

func (p *refJSONParser) value(depth int) (pyValue, bool) {
	if depth > 10000 || p.pos >= len(p.s) {
		return pyValue{}, false
	}
	switch {
	case p.take("null"):
		return pyValue{kind: pyNoneType}, true
	case p.take("true"):
		return pyValue{kind: pyBoolType, b: true}, true
	case p.take("false"):
		return pyValue{kind: pyBoolType}, true
	case p.take("NaN"):
		return pyValue{kind: pyFloatType, f: math.NaN()}, true
	case p.take("Infinity"):
		return pyValue{kind: pyFloatType, f: math.Inf(1)}, true
	case p.take("-Infinity"):
		return pyValue{kind: pyFloatType, f: math.Inf(-1)}, true
	}
	switch c := p.s[p.pos]; {
	case c == '"':
		m := refJSONStringToken.FindString(p.s[p.pos:])
		if m == "" {
			return pyValue{}, false
		}
		var str string
		if json.Unmarshal([]byte(m), &str) != nil {
			return pyValue{}, false
		}
		p.pos += len(m)
		return pyValue{kind: pyStrType, s: str}, true
	case c == '-' || (c >= '0' && c <= '9'):
		m := refJSONNumberToken.FindStringSubmatch(p.s[p.pos:])
		if m == nil {
			return pyValue{}, false
		}
		p.pos += len(m[0])
		if m[1] == "" && m[2] == "" {
			if len(strings.TrimPrefix(m[0], "-")) > 4300 {
				return pyValue{}, false
			}
			n, _ := new(big.Int).SetString(m[0], 10)
			return pyValue{kind: pyIntType, i: n}, true
		}
		f, _ := refFloat(m[0])
		return pyValue{kind: pyFloatType, f: f}, true
	case c == '[':
		p.pos++
		list := pyValue{kind: pyListType, items: []pyValue{}}
		p.space()
		if p.take("]") {
			return list, true
		}
		for {
			p.space()
			it, ok := p.value(depth + 1)
			if !ok {
				return pyValue{}, false
			}
			list.items = append(list.items, it)
			p.space()
			if p.take("]") {
				return list, true
			}
			if !p.take(",") {
				return pyValue{}, false
			}
		}
	case c == '{':
		p.pos++
		dict := pyValue{kind: pyDictType}
		p.space()
		if p.take("}") {
			return dict, true
		}
		for {
			p.space()
			if p.pos >= len(p.s) || p.s[p.pos] != '"' {
				return pyValue{}, false
			}
			k, ok := p.value(depth + 1)
			p.space()
			if !ok || !p.take(":") {
				return pyValue{}, false
			}
			p.space()
			v, ok := p.value(depth + 1)
			if !ok {
				return pyValue{}, false
			}
			replaced := false
			for i := 0; i < len(dict.items); i += 2 {
				if dict.items[i].s == k.s {
					dict.items[i+1], replaced = v, true
				}
			}
			if !replaced {
				dict.items = append(dict.items, k, v)
			}
			p.space()
			if p.take("}") {
				return dict, true
			}
			if !p.take(",") {
				return pyValue{}, false
			}
		}
	}
	return pyValue{}, false
}

// pyJSONString encodes s as a JSON string literal, for building operands.
func pyJSONString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}
