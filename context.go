package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// This file is the evaluation context: the format of Flagsmith's
// engine-test-data, which an environment document maps to (document.go) and
// the engine compiles (engine.go), and the result format `edge-proxy evaluate`
// prints.

// evalContext is Flagsmith's evaluation context. Features and segments keep
// the order of their JSON objects: segment order breaks priority ties.
type evalContext struct {
	Environment environmentContext      `json:"environment"`
	Identity    *identityContext        `json:"identity,omitempty"`
	Features    ordered[featureContext] `json:"features,omitempty"`
	Segments    ordered[segmentContext] `json:"segments,omitempty"`
}

type environmentContext struct {
	Key  string `json:"key"`
	Name string `json:"name"`
}

type identityContext struct {
	Identifier string                   `json:"identifier"`
	Key        string                   `json:"key,omitempty"`
	Traits     ordered[json.RawMessage] `json:"traits,omitempty"`
}

type featureContext struct {
	Key      string           `json:"key"`
	Name     string           `json:"name"`
	Enabled  bool             `json:"enabled"`
	Value    json.RawMessage  `json:"value"`
	Variants []variantContext `json:"variants,omitempty"`
	Priority json.RawMessage  `json:"priority,omitempty"`
	Metadata json.RawMessage  `json:"metadata,omitempty"`

	// Set when the feature comes from an environment document: the API
	// shows a flag's feature with its id and type, which are not part of
	// the evaluation context.
	apiID, apiType string
}

type variantContext struct {
	Key      *string         `json:"key,omitempty"`
	Value    json.RawMessage `json:"value"`
	Weight   json.Number     `json:"weight"`
	Priority json.RawMessage `json:"priority"`
}

type segmentContext struct {
	Key       string           `json:"key"`
	Name      string           `json:"name"`
	Rules     []ruleContext    `json:"rules"`
	Overrides []featureContext `json:"overrides,omitempty"`
	Metadata  json.RawMessage  `json:"metadata,omitempty"`
}

type ruleContext struct {
	Type       string             `json:"type"`
	Conditions []conditionContext `json:"conditions,omitempty"`
	Rules      []ruleContext      `json:"rules,omitempty"`
}

type conditionContext struct {
	Property string          `json:"property"`
	Operator string          `json:"operator"`
	Value    json.RawMessage `json:"value"`
}

// ordered is a JSON object decoded as a list, so that key order survives.
type ordered[T any] []member[T]

type member[T any] struct {
	Key   string
	Value T
}

func (o *ordered[T]) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		*o = nil
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("expected a JSON object")
	}
	out := ordered[T]{}
	set := memberSetter(&out, 0)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		var v T
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("%q: %w", key, err)
		}
		// A repeated key keeps its first position and its last value, as a
		// Python dict does.
		set(key, v)
	}
	*o = out
	return nil
}

func (o ordered[T]) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			buf.WriteByte(',')
		}
		k, _ := json.Marshal(m.Key)
		buf.Write(k)
		buf.WriteByte(':')
		v, err := json.Marshal(m.Value)
		if err != nil {
			return nil, err
		}
		buf.Write(v)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// evaluationResult is the engine-test-data result format, printed by
// `edge-proxy evaluate`.
type evaluationResult struct {
	Flags    map[string]flagResult `json:"flags"`
	Segments []segmentResult       `json:"segments"`
}

type flagResult struct {
	Name     string          `json:"name"`
	Enabled  bool            `json:"enabled"`
	Value    json.RawMessage `json:"value"`
	Reason   string          `json:"reason"`
	Variant  json.RawMessage `json:"variant"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

type segmentResult struct {
	Name     string          `json:"name"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// result evaluates an identity (nil for environment flags) and reports every
// flag with its reason and every matching segment.
func (e *engine) result(id *identity) evaluationResult {
	matched := make([]bool, len(e.segments))
	flags := e.evaluate(nil, id, matched)
	res := evaluationResult{Flags: make(map[string]flagResult, len(flags)), Segments: []segmentResult{}}
	for i, ok := range matched {
		if ok {
			s := &e.segments[i]
			res.Segments = append(res.Segments, segmentResult{Name: s.name, Metadata: nonEmptyObject(s.metadata)})
		}
	}
	// Identity override groups come after every segment, as in the context
	// Flagsmith's engine builds from a document.
	st := newEvalState(e, id)
	for range e.overrideGroupsOf(&st) {
		s := &identityOverridesSegment
		res.Segments = append(res.Segments, segmentResult{Name: s.name, Metadata: nonEmptyObject(s.metadata)})
	}
	for _, fl := range flags {
		variant := json.RawMessage("null")
		switch {
		case fl.variant >= 0:
			variant = fl.source.variants[fl.variant].key
		case fl.control():
			variant = json.RawMessage(`"control"`)
		}
		res.Flags[fl.source.name] = flagResult{
			Name:     fl.source.name,
			Enabled:  fl.source.enabled,
			Value:    fl.value(),
			Reason:   e.reason(fl),
			Variant:  variant,
			Metadata: nonEmptyObject(fl.source.metadata),
		}
	}
	return res
}

// nonEmptyObject drops metadata that Python would treat as falsy.
func nonEmptyObject(raw json.RawMessage) json.RawMessage {
	switch string(raw) {
	case "", "null", "{}":
		return nil
	}
	return raw
}

// evaluateContextJSON evaluates an engine-test-data case ({"context": …}) or a
// bare evaluation context; // and /* */ comments are allowed.
func evaluateContextJSON(data []byte) (evaluationResult, error) {
	data = stripJSONComments(data)
	var wrapper struct {
		Context *json.RawMessage `json:"context"`
	}
	if err := json.Unmarshal(data, &wrapper); err != nil {
		return evaluationResult{}, fmt.Errorf("parse context: %w", err)
	}
	if wrapper.Context != nil {
		data = *wrapper.Context
	}
	var ctx evalContext
	if err := json.Unmarshal(data, &ctx); err != nil {
		return evaluationResult{}, fmt.Errorf("parse context: %w", err)
	}
	e, err := compileContext(&ctx, nil)
	if err != nil {
		return evaluationResult{}, err
	}
	var id *identity
	if ctx.Identity != nil {
		id = &identity{identifier: ctx.Identity.Identifier, key: ctx.Identity.Key}
		for _, t := range ctx.Identity.Traits {
			id.traits = append(id.traits, trait{key: t.Key, value: valueFromJSON(t.Value)})
		}
	}
	return e.result(id), nil
}

// stripJSONComments blanks // and /* */ comments outside strings, keeping
// offsets so that decode errors still point at the right place.
func stripJSONComments(data []byte) []byte {
	out := append([]byte(nil), data...)
	inString := false
	for i := 0; i < len(out); i++ {
		c := out[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == '/' && i+1 < len(out) && out[i+1] == '/':
			for ; i < len(out) && out[i] != '\n'; i++ {
				out[i] = ' '
			}
		case c == '/' && i+1 < len(out) && out[i+1] == '*':
			out[i], out[i+1] = ' ', ' '
			for i += 2; i < len(out) && !(out[i] == '*' && i+1 < len(out) && out[i+1] == '/'); i++ {
				if out[i] != '\n' {
					out[i] = ' '
				}
			}
			if i+1 < len(out) {
				out[i], out[i+1] = ' ', ' '
				i++
			}
		}
	}
	return out
}
