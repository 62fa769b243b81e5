package main

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// A JSON scanner for request bodies: it reads in place, without building
// values, and says where a body went wrong. decode.go reads identities
// bodies with it.

// maxJSONDepth bounds nesting inside fields the proxy ignores, so a body of a
// million "[" is an error rather than deep recursion.
const maxJSONDepth = 64

// jsonDecoder is a cursor over a JSON text.
type jsonDecoder struct {
	data []byte
	pos  int
}

type syntaxError struct {
	msg string
	at  int
}

func (e *syntaxError) Error() string { return e.msg }

func errSyntax(msg string, at int) error { return &syntaxError{msg, at} }

// malformed turns a syntax error into the 400 message with its position.
func (d *jsonDecoder) malformed(err error) error {
	var se *syntaxError
	if errors.As(err, &se) {
		line, col := 1, 1
		for _, c := range d.data[:min(se.at, len(d.data))] {
			if c == '\n' {
				line, col = line+1, 1
			} else {
				col++
			}
		}
		return fmt.Errorf("body: malformed JSON at line %d, column %d: %s", line, col, se.msg)
	}
	return err
}

func (d *jsonDecoder) peek() byte {
	if d.pos < len(d.data) {
		return d.data[d.pos]
	}
	return 0
}

func (d *jsonDecoder) next() byte {
	c := d.peek()
	d.pos++
	return c
}

func (d *jsonDecoder) skipSpace() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *jsonDecoder) isNull() bool {
	return len(d.data)-d.pos >= 4 && string(d.data[d.pos:d.pos+4]) == "null"
}

// object walks an object, calling field with each key (a slice of the
// body, valid only during the call) positioned at its value.
func (d *jsonDecoder) object(field func(key []byte) error) error {
	d.skipSpace()
	if d.next() != '{' {
		return errSyntax("expected an object", d.pos-1)
	}
	d.skipSpace()
	if d.peek() == '}' {
		d.pos++
		return nil
	}
	var problem error
	for {
		d.skipSpace()
		if d.peek() != '"' {
			return errSyntax("expected a string key", d.pos)
		}
		key, err := d.rawKey()
		if err != nil {
			return err
		}
		d.skipSpace()
		if d.next() != ':' {
			return errSyntax("expected : after a key", d.pos-1)
		}
		d.skipSpace()
		if err := field(key); err != nil {
			var fe fieldError
			if !errors.As(err, &fe) || fe.syntax != nil {
				return err
			}
			if problem == nil {
				problem = err
			}
		}
		more, err := d.after('}', "an object")
		if err != nil {
			return err
		}
		if !more {
			return problem
		}
	}
}

// after reads what follows an element of a list or object: a comma (more
// is true) or the closing byte.
func (d *jsonDecoder) after(closing byte, in string) (more bool, err error) {
	d.skipSpace()
	switch d.next() {
	case ',':
		return true, nil
	case closing:
		return false, nil
	}
	return false, errSyntax("expected , or "+string(closing)+" in "+in, d.pos-1)
}

// rawKey returns a key's bytes; keys with escapes are decoded.
func (d *jsonDecoder) rawKey() ([]byte, error) {
	start := d.pos + 1
	for i := start; i < len(d.data); i++ {
		switch c := d.data[i]; {
		case c == '"':
			d.pos = i + 1
			return d.data[start:i], nil
		case c == '\\':
			s, err := d.str()
			return []byte(s), err
		case c < 0x20:
			return nil, errSyntax("control character in a string", i)
		}
	}
	return nil, errSyntax("unterminated string", len(d.data))
}

// str decodes the string at the cursor.
func (d *jsonDecoder) str() (string, error) {
	start := d.pos + 1
	i := start
	for ; i < len(d.data); i++ {
		c := d.data[i]
		if c == '"' {
			d.pos = i + 1
			return string(d.data[start:i]), nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", errSyntax("control character in a string", i)
		}
	}
	out := append([]byte(nil), d.data[start:i]...)
	for i < len(d.data) {
		c := d.data[i]
		switch {
		case c == '"':
			d.pos = i + 1
			return string(out), nil
		case c < 0x20:
			return "", errSyntax("control character in a string", i)
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(d.data) {
			break
		}
		switch e := d.data[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(d.data, i+2)
			if !ok {
				return "", errSyntax("invalid \\u escape", i)
			}
			i += 6
			if utf16.IsSurrogate(r) {
				if r2, ok := hex4(d.data, i+2); ok && i+1 < len(d.data) && d.data[i] == '\\' && d.data[i+1] == 'u' {
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						out = utf8.AppendRune(out, dec)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
			continue
		default:
			return "", errSyntax("invalid escape in a string", i)
		}
		i += 2
	}
	return "", errSyntax("unterminated string", len(d.data))
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[at:at+4]), 16, 32)
	return rune(n), err == nil
}

// skipValue validates and skips one value of any type.
func (d *jsonDecoder) skipValue(depth int) error {
	if depth > maxJSONDepth {
		return errSyntax("nested too deeply", d.pos)
	}
	d.skipSpace()
	switch c := d.peek(); {
	case c == '"':
		_, err := d.rawKey()
		return err
	case c == '{':
		return d.object(func([]byte) error { return d.skipValue(depth + 1) })
	case c == '[':
		d.pos++
		d.skipSpace()
		if d.peek() == ']' {
			d.pos++
			return nil
		}
		for more := true; more; {
			err := d.skipValue(depth + 1)
			if err == nil {
				more, err = d.after(']', "a list")
			}
			if err != nil {
				return err
			}
		}
		return nil
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	case d.pos >= len(d.data):
		return errSyntax("unexpected end of input", d.pos)
	}
	return errSyntax(fmt.Sprintf("unexpected character %q", d.peek()), d.pos)
}

func (d *jsonDecoder) literal(word string) error {
	if len(d.data)-d.pos < len(word) || string(d.data[d.pos:d.pos+len(word)]) != word {
		return errSyntax("invalid literal", d.pos)
	}
	d.pos += len(word)
	return nil
}

// number checks the JSON number grammar.
func (d *jsonDecoder) number() error {
	end, _, ok := scanNumber(d.data, d.pos)
	if !ok {
		return errSyntax("invalid number", d.pos)
	}
	d.pos = end
	return nil
}

// scanNumber reads the number at data[start:] by the JSON grammar,
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?, and returns where it
// ends and whether it has a fraction or an exponent.
func scanNumber(data []byte, start int) (end int, float, ok bool) {
	i := start
	peek := func() byte {
		if i < len(data) {
			return data[i]
		}
		return 0
	}
	digits := func() int {
		from := i
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
		return i - from
	}
	if peek() == '-' {
		i++
	}
	if peek() == '0' {
		i++
	} else if digits() == 0 {
		return i, false, false
	}
	if peek() == '.' {
		i++
		if digits() == 0 {
			return i, false, false
		}
		float = true
	}
	if c := peek(); c == 'e' || c == 'E' {
		i++
		if c := peek(); c == '+' || c == '-' {
			i++
		}
		if digits() == 0 {
			return i, false, false
		}
		float = true
	}
	return i, float, true
}
