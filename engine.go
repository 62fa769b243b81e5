package main

import (
	"encoding/json"
)

// This file is the flag engine: an evaluation context (context.go) is
// compiled once into an engine, and the engine evaluates identities against it
// without locks and without allocating per segment or per feature.

// engine is a compiled evaluation context. It is never modified after
// compileContext returns, so it is safe for concurrent use.
type engine struct {
	envKey    string
	keyPrefix string       // envKey + "_", the default identity key's prefix
	features  []flagSource // in context order
	// featureIndex finds a feature by name.
	featureIndex map[string]int
	segments     []segment // in context order
	// candidates[i] lists, for features[i], the segment overrides that may
	// replace it, strongest first: ascending priority, ties in segment order.
	candidates [][]candidate
	// identityOverrides finds an identity's override groups by its
	// identifier (in the text an IN condition compares), in document order:
	// a lookup instead of testing every group as a segment, so the cost of an
	// evaluation does not grow with the number of overridden identities.
	identityOverrides map[string][]int32
	overrideGroups    []overrideGroup
	// identifierRead is the condition the groups would test, kept for how it
	// reads the identifier: a trait named "$.identity.identifier" wins.
	identifierRead condition
	// sources lists every flag source (feature defaults, segment and
	// identity overrides); sources[i].index is i, so a caller can keep data
	// per source in a slice of its own.
	sources []*flagSource
	// traitNames holds every trait key a condition can read, interned: the
	// request decoder keeps only these traits. traitSlots numbers them.
	traitNames map[string]string
	traitSlots map[string]int
}

// flagSource is one flag source: a flagSource's default or a segment override.
type flagSource struct {
	name     string
	key      string
	enabled  bool
	value    json.RawMessage
	variants []variant // ascending priority
	metadata json.RawMessage
	index    int // in engine.sources

	// The feature as the Flagsmith API shows it, when it comes from an
	// environment document: its id (JSON number text) and type.
	apiID   string
	apiType string
}

type variant struct {
	key    json.RawMessage // the option key, or null
	value  json.RawMessage
	weight float64
	reason string // "SPLIT; weight=<w>" with w as Python prints it
}

type segment struct {
	key      string
	name     string
	metadata json.RawMessage
	rules    []rule
	reason   string
}

type candidate struct {
	segment int
	source  *flagSource
}

type ruleType uint8

const (
	ruleUnknown ruleType = iota
	ruleAll
	ruleAny
	ruleNone
)

type rule struct {
	typ        ruleType
	conditions []condition
	rules      []rule
}

// identityOverrideGroup is a set of identities sharing identical overrides.
type identityOverrideGroup struct {
	identifiers []string
	overrides   []featureContext
}

// overrideGroup is a compiled identityOverrideGroup: its overrides by
// feature index, ascending, one per feature.
type overrideGroup struct {
	overrides []groupOverride
}

type groupOverride struct {
	feature int
	source  *flagSource
}

// identityOverridesSegment stands for every override group where results
// name the segment that decided a flag: they all read "identity_overrides",
// as in Flagsmith's engine, where each group is a segment of that name.
var identityOverridesSegment = segment{
	name:     "identity_overrides",
	metadata: json.RawMessage(`{"source":"identity_overrides"}`),
	reason:   "TARGETING_MATCH; segment=identity_overrides",
}

// trait is one identity trait, already coerced.
type trait struct {
	key   string
	value value
}

// identity is who a request evaluates for. traits may repeat a key: the last
// one wins, as when a JSON list of traits becomes a Python dict.
type identity struct {
	identifier string
	key        string // defaults to "<environment key>_<identifier>"
	traits     []trait
	// scratch is reused for the traits by slot across evaluations of this
	// identity value (a pooled request buffer); nil is fine.
	scratch []value
}

// evalState is the per-request view conditions read from. It lives on the
// caller's stack.
type evalState struct {
	hasIdentity bool
	// The identity key is keyPrefix+keyBody: "<environment key>_" and the
	// identifier unless the identity brings its own key. It is only ever
	// appended into hash buffers, so it is never concatenated.
	keyPrefix string
	keyBody   string
	coercedID value
	// traits holds the identity's traits by the slot the engine gave each
	// trait key a condition reads, so a condition reads its trait by index
	// instead of comparing keys.
	traits []value
	// semvers keeps the traits semver conditions read parsed, the first
	// time one does, for the other conditions of the request (see
	// operand.semverMemo).
	semvers [maxSemverMemos]semverMemo
}

// maxSemverMemos bounds the traits whose parsed version a request keeps; a
// document rarely compares more than one or two traits as versions.
const maxSemverMemos = 4

type semverMemo struct {
	parsed, ok bool
	v          semver
}

// semver parses s, the trait c reads, as a version, once per request.
func (st *evalState) semver(c *condition, s string) (semver, bool) {
	i := c.more.semverMemo - 1
	if i < 0 {
		return parseSemver(s)
	}
	m := &st.semvers[i]
	if !m.parsed {
		m.v, m.ok = parseSemver(s)
		m.parsed = true
	}
	return m.v, m.ok
}

// newEvalState prepares an evaluation of id (nil: environment flags).
func newEvalState(e *engine, id *identity) evalState {
	if id == nil {
		return evalState{}
	}
	st := evalState{hasIdentity: true, keyPrefix: e.keyPrefix, keyBody: id.identifier}
	if id.key != "" {
		st.keyPrefix, st.keyBody = "", id.key
	}
	st.coercedID = coerceString(id.identifier)
	// Values read by conditions escape (a regexp keeps its subject), so the
	// slots live in the identity's reusable scratch space, not on the stack.
	if cap(id.scratch) < len(e.traitSlots) {
		id.scratch = make([]value, len(e.traitSlots))
	}
	st.traits = id.scratch[:len(e.traitSlots)]
	clear(st.traits)
	// In request order, so that a repeated key keeps its last value.
	for _, t := range id.traits {
		if slot, ok := e.traitSlots[t.key]; ok {
			st.traits[slot] = t.value
		}
	}
	return st
}

func (st *evalState) appendIdentityKey(dst []byte) []byte {
	return append(append(dst, st.keyPrefix...), st.keyBody...)
}

// appendHashed appends the text a split or a percentage condition hashes
// for this identity: "<id>,<identity key>" (see hashJoined).
func (st *evalState) appendHashed(dst []byte, id string) []byte {
	return st.appendIdentityKey(append(append(dst, id...), ','))
}

// read returns the value a condition tests (PERCENTAGE_SPLIT on the
// identity key is hashed directly by the condition). It points into the
// state or the condition instead of copying the value: this runs for every
// condition of every segment a request tests.
func (st *evalState) read(c *condition) *value {
	if c.kind == propTrait && st.hasIdentity {
		return &st.traits[c.slot]
	}
	return st.readOther(c)
}

func (st *evalState) readOther(c *condition) *value {
	if !st.hasIdentity {
		if c.kind == propStatic {
			return &c.more.static
		}
		return &notSet
	}
	if c.isPath {
		// A trait named exactly like the whole path wins.
		if v := &st.traits[c.slot]; v.kind != kindNone {
			return v
		}
	}
	switch c.kind {
	case propStatic:
		return &c.more.static
	case propIdentifier:
		return &st.coercedID
	case propContextKey:
		v := coerceString(st.keyPrefix + st.keyBody)
		return &v
	case propTraitPath:
		return &st.traits[c.pathSlot]
	}
	return &notSet
}

// notSet is what a condition reads where there is nothing to read. Never
// written.
var notSet value

func (s *segment) matches(st *evalState) bool {
	if len(s.rules) == 0 {
		return false
	}
	for i := range s.rules {
		if !s.rules[i].matches(st, s.key) {
			return false
		}
	}
	return true
}

func (r *rule) matches(st *evalState, segmentKey string) bool {
	if len(r.conditions) > 0 && !r.conditionsHold(st, segmentKey) {
		return false
	}
	if len(r.rules) > 0 {
		return r.subRulesHold(st, segmentKey)
	}
	return true
}

// conditionsHold combines the rule's conditions by its type, and
// subRulesHold its sub-rules: two loops over two element types, each
// stopping at the first result that decides the rule (this is the engine's
// innermost loop, so no callback).
func (r *rule) conditionsHold(st *evalState, segmentKey string) bool {
	for i := range r.conditions {
		if decided, holds := r.typ.decides(r.conditions[i].matches(st, segmentKey)); decided {
			return holds
		}
	}
	return r.typ.holdsUndecided()
}

func (r *rule) subRulesHold(st *evalState, segmentKey string) bool {
	for i := range r.rules {
		if decided, holds := r.typ.decides(r.rules[i].matches(st, segmentKey)); decided {
			return holds
		}
	}
	return r.typ.holdsUndecided()
}

// decides says whether one member's result decides a rule of type t (ANY's
// first hit, ALL's first miss, NONE's first hit), and how.
func (t ruleType) decides(hit bool) (decided, holds bool) {
	switch {
	case hit && t != ruleAll:
		return true, t == ruleAny
	case !hit && t == ruleAll:
		return true, false
	}
	return false, false
}

// holdsUndecided is a rule's result when no member decided it. An unknown
// rule type makes Flagsmith's engine fail; here it does not match.
func (t ruleType) holdsUndecided() bool { return t == ruleAll || t == ruleNone }

// evalFlag is one evaluated feature: its source (default or override) and the
// variant chosen, -1 for none.
type evalFlag struct {
	source *flagSource
	// segment is the overriding segment's index, -1 for the default, and
	// len(segments)+g for identity override group g (see segmentOf).
	segment int32
	// variant is the chosen variant's index; noVariant when the flag was
	// not split, controlValue when an identity was split but landed on the
	// control value. 16 bytes in all: a response for thousands of features
	// holds one per feature.
	variant int32
}

const (
	noVariant    = -1
	controlValue = -2
)

// control reports whether an identity was split but landed on the
// control value.
func (fl evalFlag) control() bool { return fl.variant == controlValue }

// evaluate appends one flag per feature, in context order, to dst. When
// matched is not nil it receives, for every segment, whether it matched;
// otherwise only segments carrying overrides are tested.
func (e *engine) evaluate(dst []evalFlag, id *identity, matched []bool) []evalFlag {
	ev := e.begin(id)
	if matched != nil {
		for i := range e.segments {
			matched[i] = ev.segmentMatches(i)
		}
	}
	return ev.flags(dst, 0, len(e.features))
}

// evaluation is one identity's evaluation in progress: what it learnt of
// the identity (traits by slot, override groups, which segments match) so
// far. A caller can take its flags in ranges, to bound what a response for
// thousands of features holds at once.
type evaluation struct {
	e      *engine
	st     evalState
	groups []int32
	// Per segment: 0 untested, 1 match, 2 no match. Held in the value
	// itself (on the caller's stack) for documents of ordinary size.
	small [256]uint8
	large []uint8
}

// begin starts evaluating id (nil: environment flags).
func (e *engine) begin(id *identity) evaluation {
	ev := evaluation{e: e, st: newEvalState(e, id)}
	ev.groups = e.overrideGroupsOf(&ev.st)
	if len(e.segments) > len(ev.small) {
		ev.large = make([]uint8, len(e.segments))
	}
	return ev
}

func (ev *evaluation) segmentMatches(i int) bool {
	memo := ev.large
	if memo == nil {
		memo = ev.small[:]
	}
	if memo[i] == 0 {
		memo[i] = 2
		if ev.e.segments[i].matches(&ev.st) {
			memo[i] = 1
		}
	}
	return memo[i] == 1
}

// flags appends the flags of features [from, to) to dst.
func (ev *evaluation) flags(dst []evalFlag, from, to int) []evalFlag {
	e := ev.e
	var splits pendingSplits
	for fi := from; fi < to; fi++ {
		fl := evalFlag{source: &e.features[fi], segment: -1, variant: noVariant}
		var src *flagSource
		var g int
		if len(ev.groups) > 0 { // usually no override group lists the identity
			g, src = e.identityOverride(ev.groups, fi)
		}
		if src != nil {
			fl.source, fl.segment = src, int32(len(e.segments)+g)
		} else {
			for _, c := range e.candidates[fi] {
				if ev.segmentMatches(c.segment) {
					fl.source, fl.segment = c.source, int32(c.segment)
					break
				}
			}
		}
		if ev.st.hasIdentity && len(fl.source.variants) > 0 && !splits.add(fl.source, &ev.st, len(dst)) {
			fl.variant = split(fl.source, &ev.st)
		}
		dst = append(dst, fl)
		if splits.full() {
			splits.settle(dst, &ev.st)
		}
	}
	splits.settle(dst, &ev.st)
	return dst
}

// overrideGroupsOf returns the identity override groups that list the
// identity, in document order; usually none or one.
func (e *engine) overrideGroupsOf(st *evalState) []int32 {
	if len(e.identityOverrides) == 0 || !st.hasIdentity {
		return nil
	}
	groups, _ := inLookup(e.identityOverrides, *st.read(&e.identifierRead))
	return groups
}

// identityOverride returns the first of groups that overrides feature fi:
// its index and the override, or a nil source.
func (e *engine) identityOverride(groups []int32, fi int) (int, *flagSource) {
	for _, g := range groups {
		list := e.overrideGroups[g].overrides
		lo, hi := 0, len(list)
		for lo < hi {
			mid := int(uint(lo+hi) >> 1)
			if list[mid].feature < fi {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		if lo < len(list) && list[lo].feature == fi {
			return int(g), list[lo].source
		}
	}
	return 0, nil
}

// segmentOf is the segment that decided the flag: nil for the default, and
// identityOverridesSegment for an identity override.
func (e *engine) segmentOf(fl evalFlag) *segment {
	switch {
	case fl.segment < 0:
		return nil
	case int(fl.segment) >= len(e.segments):
		return &identityOverridesSegment
	}
	return &e.segments[fl.segment]
}

// reason is the flag's evaluation reason as Flagsmith words it.
func (e *engine) reason(fl evalFlag) string {
	if fl.variant >= 0 {
		return fl.source.variants[fl.variant].reason
	}
	if seg := e.segmentOf(fl); seg != nil {
		return seg.reason
	}
	return "DEFAULT"
}

// value is the flag's value: the chosen variant's, else the source's.
func (fl evalFlag) value() json.RawMessage {
	if fl.variant >= 0 {
		return fl.source.variants[fl.variant].value
	}
	return fl.source.value
}
