package main

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// valueKind is the type a context value has after Flagsmith's coercion.
type valueKind uint8

const (
	kindNone valueKind = iota
	kindBool
	kindInt
	kindFloat
	kindString
)

// value is a trait or context value after the one coercion every condition
// read goes through in Flagsmith's Python engine: strings that look like
// integers or decimals become numbers. The zero value is "not set".
//
// Integers that overflow int64 keep their canonical decimal text in s and an
// approximation in f (bigInt set): their string forms stay exact, which is what
// IN, REGEX and hashing use, and comparisons fall back to float64.
type value struct {
	kind   valueKind
	bigInt bool
	b      bool
	i      int64
	f      float64
	s      string
}

func boolValue(b bool) value     { return value{kind: kindBool, b: b} }
func intValue(i int64) value     { return value{kind: kindInt, i: i, f: float64(i)} }
func floatValue(f float64) value { return value{kind: kindFloat, f: f} }

// coerceString applies Flagsmith's number coercion to a string value: one
// that fully matches -?[0-9]+ becomes an integer, -?[0-9]+\.[0-9]+ a float.
func coerceString(s string) value {
	switch numericShape(s) {
	case shapeInt:
		return parseIntText(s)
	case shapeFloat:
		// Out-of-range text gives ±Inf with an error, as Python's float() does without one.
		f, _ := strconv.ParseFloat(s, 64)
		return floatValue(f)
	}
	return value{kind: kindString, s: s}
}

type shape uint8

const (
	shapeOther shape = iota
	shapeInt
	shapeFloat
)

func numericShape(s string) shape {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	start := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == start {
		return shapeOther
	}
	if i == len(s) {
		return shapeInt
	}
	if s[i] != '.' {
		return shapeOther
	}
	i++
	start = i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == start || i != len(s) {
		return shapeOther
	}
	return shapeFloat
}

// parseIntText turns text of the shape -?[0-9]+ into an integer value.
func parseIntText(s string) value {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return intValue(i)
	}
	// Beyond int64: keep Python's str(int(s)) exactly, compare approximately.
	neg := strings.HasPrefix(s, "-")
	digits := strings.TrimLeft(strings.TrimPrefix(s, "-"), "0")
	if digits == "" {
		return intValue(0)
	}
	if neg {
		digits = "-" + digits
	}
	f, _ := strconv.ParseFloat(digits, 64)
	return value{kind: kindInt, bigInt: true, f: f, s: digits}
}

// valueFromJSON maps a JSON scalar to a context value: strings are coerced,
// numbers keep Python's int/float distinction from their literal, and
// objects and arrays are "not set".
func valueFromJSON(raw []byte) value {
	raw = trimSpace(raw)
	if len(raw) == 0 {
		return value{}
	}
	switch raw[0] {
	case 'n':
		return value{}
	case 't':
		return boolValue(true)
	case 'f':
		return boolValue(false)
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return value{}
		}
		return coerceString(s)
	case '{', '[':
		return value{}
	}
	return numberValue(string(raw))
}

// numberValue maps a JSON number literal to an int or float the way Python's
// json module does.
func numberValue(lit string) value {
	if strings.ContainsAny(lit, ".eE") {
		f, err := strconv.ParseFloat(lit, 64)
		if err != nil && !math.IsInf(f, 0) {
			return value{}
		}
		return floatValue(f)
	}
	return parseIntText(lit)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// appendPyStr appends Python's str() of the value: True/False, repr of floats,
// the decimal form of integers. It is what regexes see and what is hashed.
func appendPyStr(dst []byte, v value) []byte {
	switch v.kind {
	case kindBool:
		if v.b {
			return append(dst, "True"...)
		}
		return append(dst, "False"...)
	case kindInt:
		if v.bigInt {
			return append(dst, v.s...)
		}
		return strconv.AppendInt(dst, v.i, 10)
	case kindFloat:
		return appendPyFloat(dst, v.f)
	case kindString:
		return append(dst, v.s...)
	}
	return append(dst, "None"...)
}

// appendPyFloat appends Python's repr of a float: the shortest round-tripping
// digits, scientific notation when the decimal exponent is below -4 or above
// 16, and always a fractional part or exponent ("1.0", "1e+16", "1e-05").
func appendPyFloat(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "nan"...)
	case math.IsInf(f, 1):
		return append(dst, "inf"...)
	case math.IsInf(f, -1):
		return append(dst, "-inf"...)
	}
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64) // -d.ddde±XX
	neg := e[0] == '-'
	if neg {
		e = e[1:]
		dst = append(dst, '-')
	}
	mant, expText, _ := strings.Cut(string(e), "e")
	exp, _ := strconv.Atoi(expText)
	digits := strings.Replace(mant, ".", "", 1)
	decpt := exp + 1
	if decpt <= -4 || decpt > 16 {
		dst = append(dst, digits[0])
		if len(digits) > 1 {
			dst = append(dst, '.')
			dst = append(dst, digits[1:]...)
		}
		dst = append(dst, 'e')
		if exp < 0 {
			dst = append(dst, '-')
			exp = -exp
		} else {
			dst = append(dst, '+')
		}
		if exp < 10 {
			dst = append(dst, '0')
		}
		return strconv.AppendInt(dst, int64(exp), 10)
	}
	switch {
	case decpt <= 0:
		dst = append(dst, "0."...)
		dst = append(dst, strings.Repeat("0", -decpt)...)
		return append(dst, digits...)
	case decpt >= len(digits):
		dst = append(dst, digits...)
		dst = append(dst, strings.Repeat("0", decpt-len(digits))...)
		return append(dst, ".0"...)
	default:
		dst = append(dst, digits[:decpt]...)
		dst = append(dst, '.')
		return append(dst, digits[decpt:]...)
	}
}

// maxPyIntDigits is the longest decimal text Python's int() converts (the
// default limit since Python 3.11); longer raises ValueError.
const maxPyIntDigits = 4300

// pyInt parses text as Python's int() does: surrounding whitespace, a sign,
// underscores between digits, decimal digits of any script. ok is false
// where Python raises ValueError.
func pyInt(s string) (v value, ok bool) {
	s = asciiDigits(strings.TrimSpace(s))
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if !validUnderscoredDigits(s) {
		return value{}, false
	}
	s = strings.ReplaceAll(s, "_", "")
	if len(s) > maxPyIntDigits {
		return value{}, false
	}
	if neg {
		s = "-" + s
	}
	return parseIntText(s), true
}

// asciiDigits replaces decimal digits of other scripts ("٣") with ASCII
// ones, as Python's int() and float() read them.
func asciiDigits(s string) string {
	ascii := true
	for i := 0; i < len(s) && ascii; i++ {
		ascii = s[i] < utf8.RuneSelf
	}
	if ascii {
		return s
	}
	return strings.Map(func(r rune) rune {
		if d, ok := decimalValue(r); ok {
			return '0' + d
		}
		return r
	}, s)
}

// decimalValue is the value of a decimal digit (Unicode category Nd). The
// table's ranges each start at a zero, and Nd digits come in runs of ten.
func decimalValue(r rune) (rune, bool) {
	if r < utf8.RuneSelf {
		return r - '0', r >= '0' && r <= '9'
	}
	for _, rg := range unicode.Nd.R16 {
		if lo, hi := rune(rg.Lo), rune(rg.Hi); r >= lo && r <= hi {
			return (r - lo) % 10, true
		}
	}
	for _, rg := range unicode.Nd.R32 {
		if lo, hi := rune(rg.Lo), rune(rg.Hi); r >= lo && r <= hi {
			return (r - lo) % 10, true
		}
	}
	return 0, false
}

func validUnderscoredDigits(s string) bool {
	if s == "" || s[0] == '_' || s[len(s)-1] == '_' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' {
			if s[i-1] == '_' {
				return false
			}
			continue
		}
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// pyFloat parses text as Python's float() does: whitespace, sign, digits of
// any script with underscores, exponent, inf/infinity/nan in any case.
func pyFloat(s string) (float64, bool) {
	s = asciiDigits(strings.TrimSpace(s))
	body := s
	if body != "" && (body[0] == '+' || body[0] == '-') {
		body = body[1:]
	}
	switch strings.ToLower(body) {
	case "inf", "infinity":
		f, err := strconv.ParseFloat(s, 64)
		return f, err == nil
	case "nan": // with either sign, which strconv refuses
		return math.NaN(), true
	}
	if strings.Contains(s, "_") {
		if !pyUnderscoresOK(body) {
			return 0, false
		}
		s = strings.ReplaceAll(s, "_", "")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
			return 0, false // rejects Go-only forms such as hex floats
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// pyUnderscoresOK reports whether every underscore in a float literal sits
// between two digits, as Python requires.
func pyUnderscoresOK(s string) bool {
	isDigit := func(i int) bool { return i >= 0 && i < len(s) && s[i] >= '0' && s[i] <= '9' }
	for i := 0; i < len(s); i++ {
		if s[i] == '_' && !(isDigit(i-1) && isDigit(i+1)) {
			return false
		}
	}
	return true
}
