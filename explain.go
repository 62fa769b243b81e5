package main

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
)

// This file is the reasons view: POST /proxy/explain, and what
// `edge-proxy evaluate -document` prints (evaluate.go). It never evaluates
// on its own. The flags and the segments an identity is in come from the
// engine's own evaluate, the call the SDK endpoints make; for a segment the
// identity is not in, the walk below goes down the same compiled rules with
// the same rule.matches and condition.matches, only to find which rule
// failed and what its condition read. The SDK path does not run any of it.

// explanation is why an identity (or, without one, the environment) gets
// each flag.
type explanation struct {
	Environment string `json:"environment"` // the document's name
	Identifier  string `json:"identifier,omitempty"`
	// IdentityKey is what splits and percentage conditions hash.
	IdentityKey string          `json:"identity_key,omitempty"`
	Flags       []explainedFlag `json:"flags"`
	// Segments are those the identity is in, identity overrides included.
	Segments []string `json:"segments"`
	// SegmentsNotMatched says, for every other segment, the first rule that
	// does not hold.
	SegmentsNotMatched []segmentMiss `json:"segments_not_matched"`
}

type explainedFlag struct {
	Feature   string          `json:"feature"`
	FeatureID json.RawMessage `json:"feature_id,omitempty"`
	Enabled   bool            `json:"enabled"`
	Value     json.RawMessage `json:"value"`
	Variant   json.RawMessage `json:"variant"`
	// Reason is the engine's: DEFAULT, TARGETING_MATCH; segment=<name>
	// (identity overrides are the segment identity_overrides), or SPLIT;
	// weight=<w>.
	Reason  string `json:"reason"`
	Segment string `json:"segment,omitempty"` // the segment whose override applies
	// ServerOnly marks a feature client keys never see
	// (server_key_only_feature_ids); HiddenFromClientKeys also covers a
	// disabled flag when the project hides disabled flags.
	ServerOnly           bool `json:"server_only"`
	HiddenFromClientKeys bool `json:"hidden_from_client_keys"`
}

type segmentMiss struct {
	Name string    `json:"name"`
	Key  string    `json:"key"`
	Why  string    `json:"why"`
	Rule *ruleMiss `json:"failed_rule"` // nil when the segment has no rules
}

// ruleMiss is a rule that does not hold: the condition that decided it, or
// for an ANY rule every condition (none held), or the sub-rule that failed.
type ruleMiss struct {
	Type       string          `json:"type"`
	Why        string          `json:"why"`
	Conditions []conditionRead `json:"conditions,omitempty"`
	SubRule    *ruleMiss       `json:"sub_rule,omitempty"`
}

// conditionRead is one condition with the value it read for this identity.
type conditionRead struct {
	Property string `json:"property"`
	Operator string `json:"operator"`
	Value    string `json:"value"`
	// Read is the value the condition tested, after the engine's coercion;
	// null when it is not set.
	Read  json.RawMessage `json:"read"`
	Holds bool            `json:"holds"`
	// Percentage is the identity's hashed percentage, for PERCENTAGE_SPLIT.
	Percentage *float64 `json:"percentage,omitempty"`
}

// explain evaluates id (nil: the environment's flags) and says why each
// flag is what it is.
func (snap *snapshot) explain(id *identity) explanation {
	e := snap.engine
	matched := make([]bool, len(e.segments))
	flags := e.evaluate(nil, id, matched)
	ex := explanation{Environment: snap.name, Flags: make([]explainedFlag, 0, len(flags)),
		Segments: []string{}, SegmentsNotMatched: []segmentMiss{}}
	st := newEvalState(e, id)
	if id != nil {
		ex.Identifier = id.identifier
		ex.IdentityKey = string(st.appendIdentityKey(nil))
	}
	for _, fl := range flags {
		f := explainedFlag{Feature: fl.source.name, Enabled: fl.source.enabled, Value: fl.value(),
			Variant: json.RawMessage("null"), Reason: e.reason(fl),
			ServerOnly:           snap.serverOnly[fl.source.index],
			HiddenFromClientKeys: !snap.visible(fl.source, clientKey)}
		if fl.source.apiID != "" {
			f.FeatureID = json.RawMessage(fl.source.apiID)
		}
		switch {
		case fl.variant >= 0:
			f.Variant = fl.source.variants[fl.variant].key
		case fl.control():
			f.Variant = json.RawMessage(`"control"`)
		}
		if seg := e.segmentOf(fl); seg != nil {
			f.Segment = seg.name
		}
		ex.Flags = append(ex.Flags, f)
	}
	names := e.slotNames()
	for i, in := range matched {
		seg := &e.segments[i]
		if in {
			ex.Segments = append(ex.Segments, seg.name)
			continue
		}
		miss := segmentMiss{Name: seg.name, Key: seg.key}
		if len(seg.rules) == 0 {
			miss.Why = "the segment has no rules, so it never matches"
		} else {
			for j := range seg.rules {
				if !seg.rules[j].matches(&st, seg.key) {
					miss.Rule = seg.rules[j].whyNot(&st, seg.key, names)
					miss.Why = "a rule does not hold"
					break
				}
			}
		}
		ex.SegmentsNotMatched = append(ex.SegmentsNotMatched, miss)
	}
	for range e.overrideGroupsOf(&st) {
		ex.Segments = append(ex.Segments, identityOverridesSegment.name)
	}
	return ex
}

// slotNames is the property of each trait slot (engine.traitSlots the other
// way round): every condition but a PERCENTAGE_SPLIT of the identity key
// keeps its whole property's slot.
func (e *engine) slotNames() []string {
	names := make([]string, len(e.traitSlots))
	for name, slot := range e.traitSlots {
		names[slot] = name
	}
	return names
}

// whyNot explains a rule that does not hold for st.
func (r *rule) whyNot(st *evalState, segmentKey string, names []string) *ruleMiss {
	miss := &ruleMiss{Type: r.typ.String()}
	if len(r.conditions) > 0 && !r.conditionsHold(st, segmentKey) {
		for i := range r.conditions {
			c := &r.conditions[i]
			hit := c.matches(st, segmentKey)
			if decided, _ := r.typ.decides(hit); decided {
				miss.Conditions = []conditionRead{c.explain(st, segmentKey, names, hit)}
				miss.Why = "this condition does not hold"
				if hit {
					miss.Why = "this condition holds, and a NONE rule needs none to"
				}
				return miss
			}
		}
		for i := range r.conditions {
			c := &r.conditions[i]
			miss.Conditions = append(miss.Conditions, c.explain(st, segmentKey, names, c.matches(st, segmentKey)))
		}
		miss.Why = "none of its conditions holds"
		if r.typ == ruleUnknown {
			miss.Why = "its type is not ALL, ANY or NONE, so it never holds"
		}
		return miss
	}
	for i := range r.rules {
		hit := r.rules[i].matches(st, segmentKey)
		if decided, _ := r.typ.decides(hit); decided {
			if hit {
				miss.Why = "sub-rule " + strconv.Itoa(i+1) + " holds, and a NONE rule needs none to"
				return miss
			}
			miss.Why = "sub-rule " + strconv.Itoa(i+1) + " does not hold"
			miss.SubRule = r.rules[i].whyNot(st, segmentKey, names)
			return miss
		}
	}
	miss.Why = "none of its sub-rules holds; the first:"
	if r.typ == ruleUnknown {
		miss.Why = "its type is not ALL, ANY or NONE, so it never holds"
	}
	if len(r.rules) > 0 {
		miss.SubRule = r.rules[0].whyNot(st, segmentKey, names)
	}
	return miss
}

func (t ruleType) String() string {
	return [...]string{"UNKNOWN", "ALL", "ANY", "NONE"}[t]
}

// explain is the condition with what it read for st; hit is its result.
func (c *condition) explain(st *evalState, segmentKey string, names []string, hit bool) conditionRead {
	cr := conditionRead{Operator: c.op.String(), Value: c.text, Holds: hit, Read: json.RawMessage("null")}
	if cr.Operator == "" {
		cr.Operator = "UNKNOWN"
	}
	if c.kind == propIdentityKey {
		cr.Property = "(the identity key)"
		if st.hasIdentity {
			key := st.appendIdentityKey(nil)
			cr.Read, _ = json.Marshal(string(key))
			p := hashJoined(st.appendHashed(nil, segmentKey), len(segmentKey))
			cr.Percentage = &p
		}
		return cr
	}
	if int(c.slot) < len(names) {
		cr.Property = names[c.slot]
	}
	v := st.read(c)
	cr.Read = valueJSON(*v)
	if c.op == opPercentageSplit && v.kind != kindNone {
		p := hashPercentage(segmentKey, appendPyStr(nil, *v))
		cr.Percentage = &p
	}
	return cr
}

// valueJSON is a read value as JSON: null when not set.
func valueJSON(v value) json.RawMessage {
	switch v.kind {
	case kindBool:
		return strconv.AppendBool(nil, v.b)
	case kindInt:
		if v.bigInt {
			return json.RawMessage(v.s)
		}
		return strconv.AppendInt(nil, v.i, 10)
	case kindFloat:
		if math.IsNaN(v.f) || math.IsInf(v.f, 0) {
			raw, _ := json.Marshal(string(appendPyStr(nil, v)))
			return raw
		}
		return strconv.AppendFloat(nil, v.f, 'g', -1, 64)
	case kindString:
		raw, _ := json.Marshal(v.s)
		return raw
	}
	return json.RawMessage("null")
}

// handleExplain is POST /proxy/explain: the body of an identities POST,
// with a server key (the answer shows segment rules and server-only
// features), answered with the explanation.
func (s *server) handleExplain(w http.ResponseWriter, r *http.Request) {
	buf := getBuffers()
	defer putBuffers(buf)
	_, snap, id, _, ok := s.readIdentity(w, r, buf, serverKeyOnly)
	if !ok {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, snap.explain(&id))
}

// serverKeyOnly refuses a client key: an explanation shows segment rules
// and server-only features.
func serverKeyOnly(ref keyRef) error {
	if ref.kind != serverKey {
		return errServerKeyOnly
	}
	return nil
}
