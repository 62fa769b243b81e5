package main

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"
)

// This file is the request decoder of POST /api/v1/identities/. It is written
// by hand because it sits on the hottest path with a body of a fixed shape:
// it validates the JSON fully, names the exact field that is wrong, keeps
// trait values as slices of the body for the response, and allocates only the
// strings it must keep.

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
