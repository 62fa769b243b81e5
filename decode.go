package main

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// This file is the request decoder of POST /api/v1/identities/. It is written
// by hand because it sits on the hottest path with a body of a fixed shape:
// it validates the JSON fully, names the exact field that is wrong, keeps
// trait values as slices of the body for the response, and allocates only the
// strings it must keep.

// maxJSONDepth bounds nesting inside fields the proxy ignores, so a body of a
// million "[" is an error rather than deep recursion.
const maxJSONDepth = 64

// maxTraitValueChars is Flagsmith's limit on a string trait value, counted in
// characters as Python counts them.
const maxTraitValueChars = 2000

// identityLimits bounds what an identity request may send.
type identityLimits struct {
	maxTraits, maxTraitKeyLength int
	// traitNames are the trait keys the environment's conditions can read,
	// each interned; nil keeps every trait. A trait no condition reads is
	// only echoed back, so it is neither copied nor coerced.
	traitNames map[string]string
}

// identityLimitsOf is the configured bounds, with the trait names snap's
// conditions read.
func identityLimitsOf(cfg *Config, snap *snapshot) identityLimits {
	return identityLimits{
		maxTraits:         cfg.Limits.MaxTraits,
		maxTraitKeyLength: cfg.Limits.MaxTraitKeyLength,
		traitNames:        snap.engine.traitNames,
	}
}

// decodedTraits receives an identity request's traits: coerced for the
// engine, and as sent for the response to echo. Decoding reuses the slices'
// capacity. transient is the body's "transient": an identity Flagsmith must
// not store (write-back never writes it).
type decodedTraits struct {
	traits    []trait
	sent      []sentTrait
	transient bool
}

// sentTrait is a trait as the request sent it, both parts as JSON text, and
// whether it is marked transient (Flagsmith's per-trait "transient": true:
// used for evaluation, never stored).
type sentTrait struct {
	key       []byte
	value     []byte
	transient bool
}

// objectBody starts decoding a body that must be a JSON object (what names
// the object's shape in errors).
func objectBody(body []byte, what string) (*jsonDecoder, error) {
	if !utf8.Valid(body) {
		return nil, errors.New("body: not valid UTF-8")
	}
	d := &jsonDecoder{data: body}
	d.skipSpace()
	if d.peek() == '{' {
		return d, nil
	}
	if d.pos >= len(d.data) {
		return nil, fmt.Errorf("body: empty; %s is required", what)
	}
	if err := d.skipValue(0); err != nil {
		return nil, d.malformed(err)
	}
	return nil, fmt.Errorf("body: must be %s", what)
}

// decodeIdentityBody parses body into buf and returns the identifier.
// Repeated keys take the last value, as in Python's json module.
func decodeIdentityBody(body []byte, buf *decodedTraits, lim identityLimits) (string, error) {
	d, err := objectBody(body, "a JSON object")
	if err != nil {
		return "", err
	}
	var identifier string
	var haveIdentifier bool
	buf.traits, buf.sent, buf.transient = buf.traits[:0], buf.sent[:0], false
	err = d.object(func(key []byte) error {
		switch string(key) {
		case "identifier":
			if d.peek() != '"' {
				if d.isNull() {
					haveIdentifier = false
					return d.skipValue(0)
				}
				return fieldError{"identifier: must be a string", d.skipValue(0)}
			}
			s, err := d.str()
			identifier, haveIdentifier = s, true
			return err
		case "traits":
			buf.traits, buf.sent = buf.traits[:0], buf.sent[:0]
			return d.traits(buf, lim)
		case "transient":
			switch d.peek() {
			case 't', 'f', 'n':
			default:
				return fieldError{"transient: must be a boolean", d.skipValue(0)}
			}
			buf.transient = d.peek() == 't'
			return d.skipValue(0)
		}
		return d.skipValue(0)
	})
	if err := d.finish(err); err != nil {
		return "", err
	}
	switch {
	case !haveIdentifier:
		return "", errors.New("identifier: required")
	case identifier == "":
		return "", errors.New("identifier: must not be empty")
	}
	return identifier, nil
}

// finish turns the error of decoding a whole body into what the client is
// told (a syntax error wins over a field of the wrong type, since the body is
// then not JSON at all) and checks that nothing follows the object.
func (d *jsonDecoder) finish(err error) error {
	if err != nil {
		var fe fieldError
		if errors.As(err, &fe) {
			if fe.syntax != nil {
				return d.malformed(fe.syntax)
			}
			return errors.New(fe.msg)
		}
		return d.malformed(err)
	}
	d.skipSpace()
	if d.pos != len(d.data) {
		return errors.New("body: unexpected data after the JSON object")
	}
	return nil
}

// fieldError is a well-formed value of the wrong type or size. The rest of
// the body is still checked: a syntax error after it wins, since the body is
// then not JSON at all.
type fieldError struct {
	msg    string
	syntax error
}

func (e fieldError) Error() string { return e.msg }

func (d *jsonDecoder) traits(buf *decodedTraits, lim identityLimits) error {
	if d.isNull() {
		return d.skipValue(0)
	}
	if d.peek() != '[' {
		return fieldError{`traits: must be a list of {"trait_key": …, "trait_value": …} objects`, d.skipValue(0)}
	}
	d.pos++
	var problem *fieldError
	note := func(msg string, syntax error) error {
		if syntax != nil {
			return syntax
		}
		if problem == nil {
			problem = &fieldError{msg: msg}
		}
		return nil
	}
	for i := 0; ; i++ {
		d.skipSpace()
		if d.peek() == ']' && i == 0 {
			d.pos++
			break
		}
		if i >= lim.maxTraits {
			if err := note(fmt.Sprintf("traits: more than %d traits is over the limit", lim.maxTraits), nil); err != nil {
				return err
			}
		}
		if d.peek() != '{' {
			if err := note(fmt.Sprintf("traits[%d]: must be an object", i), d.skipValue(1)); err != nil {
				return err
			}
		} else if err := d.trait(i, buf, lim, note); err != nil {
			return err
		}
		more, err := d.after(']', "the traits list")
		if err != nil {
			return err
		}
		if !more {
			break
		}
	}
	if problem != nil {
		return *problem
	}
	return nil
}

func (d *jsonDecoder) trait(i int, buf *decodedTraits, lim identityLimits, note func(string, error) error) error {
	var rawKey, value []byte
	transient := false
	err := d.object(func(field []byte) error {
		switch string(field) {
		case "trait_key":
			start := d.pos
			if d.peek() != '"' {
				rawKey = nil
				return note(fmt.Sprintf("traits[%d].trait_key: must be a string", i), d.skipValue(2))
			}
			if err := d.skipValue(2); err != nil {
				return err
			}
			rawKey = d.data[start:d.pos]
			if stringChars(rawKey) > lim.maxTraitKeyLength {
				return note(fmt.Sprintf("traits[%d].trait_key: longer than %d characters", i, lim.maxTraitKeyLength), nil)
			}
			return nil
		case "trait_value":
			start := d.pos
			c := d.peek()
			if err := d.skipValue(2); err != nil {
				return err
			}
			if c == '{' || c == '[' {
				return note(fmt.Sprintf("traits[%d].trait_value: must be a string, number, boolean or null", i), nil)
			}
			value = d.data[start:d.pos]
			if c == '"' && stringChars(value) > maxTraitValueChars {
				return note(fmt.Sprintf("traits[%d].trait_value: longer than %d characters", i, maxTraitValueChars), nil)
			}
			return nil
		case "transient":
			start := d.pos
			if err := d.skipValue(2); err != nil {
				return err
			}
			transient = transientValue(d.data[start:d.pos])
			return nil
		}
		return d.skipValue(2)
	})
	if err != nil {
		return err
	}
	if rawKey == nil {
		return note(fmt.Sprintf("traits[%d].trait_key: must be a string", i), nil)
	}
	if value == nil {
		value = []byte("null")
	}
	buf.sent = append(buf.sent, sentTrait{key: rawKey, value: value, transient: transient})

	key, ok := "", false
	if !bytes.Contains(rawKey, []byte{'\\'}) {
		if lim.traitNames != nil {
			key, ok = lim.traitNames[string(rawKey[1:len(rawKey)-1])]
		} else {
			key, ok = string(rawKey[1:len(rawKey)-1]), true
		}
	} else if k, err := (&jsonDecoder{data: rawKey}).str(); err == nil {
		key, ok = k, lim.traitNames == nil
		if !ok {
			key, ok = lim.traitNames[k]
		}
	}
	if !ok {
		return nil // no condition reads this trait
	}
	return buf.add(key, value)
}

// add keeps a trait that some condition reads, its value as conditions
// read it.
func (buf *decodedTraits) add(key string, lit []byte) error {
	v, err := traitValue(lit)
	if err != nil {
		return err
	}
	buf.traits = append(buf.traits, trait{key: key, value: v})
	return nil
}

// traitValue is a trait value, a JSON scalar as sent, as conditions read
// it: strings decoded and coerced, numbers with Python's int/float split.
func traitValue(lit []byte) (value, error) {
	if lit[0] != '"' {
		return valueFromJSON(lit), nil
	}
	s, err := (&jsonDecoder{data: lit}).str()
	if err != nil {
		return value{}, err
	}
	return coerceString(s), nil
}

// stringChars counts the characters of a JSON string literal as Python
// would after decoding it; only literals with escapes are decoded.
func stringChars(lit []byte) int {
	if !bytes.Contains(lit, []byte{'\\'}) {
		return utf8.RuneCount(lit[1 : len(lit)-1])
	}
	s, err := (&jsonDecoder{data: lit}).str()
	if err != nil {
		return 0
	}
	return utf8.RuneCountInString(s)
}

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
