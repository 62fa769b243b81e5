package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// This file turns an evaluation context (context.go) into an engine: each
// segment's rules and conditions parsed once (conditionCompiler: operators,
// regexes, IN sets, trait slots), features and their variants in priority
// order, identity overrides grouped for a lookup by identifier. Evaluation
// itself is engine.go.

// compileContext compiles ctx (its identity, if any, is ignored) plus the
// document's identity overrides, which bind more strongly than any segment.
func compileContext(ctx *evalContext, groups []identityOverrideGroup) (*engine, error) {
	e := &engine{envKey: ctx.Environment.Key, keyPrefix: ctx.Environment.Key + "_"}
	cc := newConditionCompiler(lazyTree(ctx))
	index := make(map[string]int, len(ctx.Features))
	e.features = make([]flagSource, 0, len(ctx.Features))
	for _, m := range ctx.Features {
		f, err := compileFeature(m.Value)
		if err != nil {
			return nil, fmt.Errorf("features[%q]: %w", m.Key, err)
		}
		if i, dup := index[f.name]; dup {
			e.features[i] = f
			continue
		}
		index[f.name] = len(e.features)
		e.features = append(e.features, f)
	}

	type ranked struct {
		candidate
		priority *big.Float // nil is the weakest
	}
	perFeature := make([][]ranked, len(e.features))
	var overrides slab[flagSource]
	e.segments = make([]segment, 0, len(ctx.Segments))
	for _, m := range ctx.Segments {
		s := m.Value
		seg := segment{key: s.Key, name: s.Name, metadata: compactJSON(s.Metadata),
			reason: "TARGETING_MATCH; segment=" + s.Name}
		seg.rules = cc.rules.take(len(s.Rules))
		for _, r := range s.Rules {
			seg.rules = append(seg.rules, cc.rule(r))
		}
		seg.rules = liftAllRules(seg.rules, &cc.rules)
		e.segments = append(e.segments, seg)
		for j, o := range s.Overrides {
			f, err := compileFeature(o)
			if err != nil {
				return nil, fmt.Errorf("segments[%q].overrides[%d]: %w", m.Key, j, err)
			}
			fi, ok := index[f.name]
			if !ok {
				continue // an override of a feature the environment lacks is never listed
			}
			r := ranked{candidate: candidate{segment: len(e.segments) - 1, source: overrides.add(f)}}
			if len(o.Priority) > 0 && string(o.Priority) != "null" {
				p, ok := parsePriority(o.Priority)
				if !ok {
					return nil, fmt.Errorf("segments[%q].overrides[%d].priority: %q is not a number", m.Key, j, o.Priority)
				}
				r.priority = p
			}
			perFeature[fi] = append(perFeature[fi], r)
		}
	}
	if err := e.compileOverrideGroups(groups, index, cc, &overrides); err != nil {
		return nil, err
	}
	e.traitNames, e.traitSlots = cc.names, cc.slots

	e.candidates = make([][]candidate, len(e.features))
	total := 0
	for _, list := range perFeature {
		total += len(list)
	}
	all := make([]candidate, total) // one allocation for every feature's list
	for fi, list := range perFeature {
		// Stable: equal priorities keep segment order.
		sort.SliceStable(list, func(a, b int) bool {
			x, y := list[a].priority, list[b].priority
			if x == nil || y == nil {
				return x != nil && y == nil
			}
			return x.Cmp(y) < 0
		})
		e.candidates[fi], all = all[:len(list):len(list)], all[len(list):]
		for i, r := range list {
			e.candidates[fi][i] = r.candidate
		}
	}
	e.featureIndex = index
	e.indexSources()
	e.pack()
	return e, nil
}

// compileOverrideGroups turns the identity override groups into a lookup by
// identifier. Within a group the first override of a feature wins, and an
// identifier listed by several groups takes each feature from the first
// group that overrides it, as the equivalent segments of equal (strongest)
// priority would.
func (e *engine) compileOverrideGroups(groups []identityOverrideGroup, index map[string]int, cc *conditionCompiler, overrides *slab[flagSource]) error {
	if len(groups) == 0 {
		return nil
	}
	e.identifierRead = cc.condition(conditionContext{Property: "$.identity.identifier", Operator: opIn.String()})
	e.overrideGroups = make([]overrideGroup, len(groups))
	total := 0
	for _, g := range groups {
		total += len(g.identifiers)
	}
	e.identityOverrides = make(map[string][]int32, total)
	// One backing array for the common case of an identifier in one group;
	// capped slices make a second group's append copy instead of overwrite.
	arena := make([]int32, total)
	// Groups repeat the same override (identities overriding a feature to
	// the same value): each distinct one is compiled once and shared.
	compiled := map[string]*flagSource{}
	for gi, g := range groups {
		og := &e.overrideGroups[gi]
		for j, o := range g.overrides {
			fi, ok := index[o.Name]
			if !ok {
				continue
			}
			same := fmt.Sprintf("%q\x00%t\x00%s\x00%s\x00%s\x00%s", o.Name, o.Enabled, o.Value, o.Metadata, o.apiID, o.apiType)
			src := compiled[same]
			if src == nil {
				f, err := compileFeature(o)
				if err != nil {
					return fmt.Errorf("identity_overrides group %d: overrides[%d]: %w", gi, j, err)
				}
				src = overrides.add(f)
				compiled[same] = src
			}
			og.overrides = append(og.overrides, groupOverride{feature: fi, source: src})
		}
		sort.SliceStable(og.overrides, func(a, b int) bool { return og.overrides[a].feature < og.overrides[b].feature })
		og.overrides = slices.CompactFunc(og.overrides, func(a, b groupOverride) bool { return a.feature == b.feature })
		for _, id := range g.identifiers {
			if list, ok := e.identityOverrides[id]; ok {
				if list[len(list)-1] != int32(gi) {
					e.identityOverrides[id] = append(list, int32(gi))
				}
				continue
			}
			arena[0] = int32(gi)
			e.identityOverrides[id] = arena[:1:1]
			arena = arena[1:]
		}
	}
	return nil
}

// indexSources numbers every flag source, so callers can keep per-source
// data (the snapshot's pre-encoded flag objects) beside the engine.
func (e *engine) indexSources() {
	add := func(f *flagSource) {
		f.index = len(e.sources)
		e.sources = append(e.sources, f)
	}
	for i := range e.features {
		add(&e.features[i])
	}
	for _, list := range e.candidates {
		for _, c := range list {
			add(c.source)
		}
	}
	shared := make(map[*flagSource]bool) // groups share identical overrides
	for _, g := range e.overrideGroups {
		for _, o := range g.overrides {
			if !shared[o.source] {
				shared[o.source] = true
				add(o.source)
			}
		}
	}
}

// lazyTree returns the context's top-level members as plain JSON values,
// for JSONPath conditions that read the document rather than the identity.
// Each member is built on first use: most documents read at most
// $.environment, and for a large document the features and segments as a
// tree cost more memory than the document itself.
func lazyTree(ctx *evalContext) func(member string) any {
	built := map[string]any{}
	return func(member string) any {
		if v, ok := built[member]; ok {
			return v
		}
		var v any
		switch member {
		case "environment":
			v = jsonTree(ctx.Environment)
		case "features":
			if len(ctx.Features) > 0 {
				v = jsonTree(ctx.Features)
			}
		case "segments":
			if len(ctx.Segments) > 0 {
				v = jsonTree(ctx.Segments)
			}
		}
		built[member] = v
		return v
	}
}

// jsonTree is v as plain JSON values with numbers kept as written; nil when
// it cannot be encoded, which no decoded context can cause.
func jsonTree(v any) any {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tree any
	if dec.Decode(&tree) != nil {
		return nil
	}
	return tree
}

func compileFeature(fc featureContext) (flagSource, error) {
	f := flagSource{
		name:     fc.Name,
		key:      fc.Key,
		enabled:  fc.Enabled,
		value:    compactJSON(fc.Value),
		metadata: compactJSON(fc.Metadata),
		apiID:    fc.apiID,
		apiType:  fc.apiType,
	}
	if len(f.value) == 0 {
		f.value = json.RawMessage("null")
	}
	type rankedVariant struct {
		variant
		priority *big.Float
	}
	ranked := make([]rankedVariant, 0, len(fc.Variants))
	for i, v := range fc.Variants {
		w, err := strconv.ParseFloat(string(v.Weight), 64)
		if err != nil {
			return flagSource{}, fmt.Errorf("variants[%d].weight: %q is not a number", i, v.Weight)
		}
		p, ok := parsePriority(v.Priority)
		if !ok {
			return flagSource{}, fmt.Errorf("variants[%d].priority: %q is not a number", i, v.Priority)
		}
		rv := rankedVariant{variant: variant{
			value:  compactJSON(v.Value),
			weight: w,
			reason: "SPLIT; weight=" + pyStrOfJSON(json.RawMessage(v.Weight)),
			key:    json.RawMessage("null"),
		}, priority: p}
		if len(rv.value) == 0 {
			rv.value = json.RawMessage("null")
		}
		if v.Key != nil {
			rv.key, _ = json.Marshal(*v.Key)
		}
		ranked = append(ranked, rv)
	}
	sort.SliceStable(ranked, func(a, b int) bool { return ranked[a].priority.Cmp(ranked[b].priority) < 0 })
	if len(ranked) > 0 {
		f.variants = make([]variant, len(ranked))
	}
	for i, rv := range ranked {
		f.variants[i] = rv.variant
	}
	return f, nil
}

// parsePriority reads a priority exactly: integers may be 128-bit (a
// variant's UUID), fractions are float64 as in Python. It never parses an
// exponent into a huge exact number, which a hostile document could use to
// stall compilation.
func parsePriority(raw json.RawMessage) (*big.Float, bool) {
	text := string(trimSpace(raw))
	if text == "" {
		return nil, false
	}
	const precision = 256
	if numericShape(text) == shapeInt {
		n, ok := new(big.Int).SetString(text, 10)
		if !ok {
			return nil, false
		}
		return new(big.Float).SetPrec(precision).SetInt(n), true
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil && !math.IsInf(f, 0) {
		return nil, false
	}
	if math.IsNaN(f) {
		return nil, false
	}
	return new(big.Float).SetPrec(precision).SetFloat64(f), true
}

// liftAllRules replaces each top-level ALL rule that has no conditions of
// its own by its sub-rules: a segment needs all its rules to match, so the
// result is the same, one level of rule walked fewer per evaluation (the
// shape Flagsmith gives most segments: one ALL rule around the real ones).
func liftAllRules(rules []rule, blocks *slab[rule]) []rule {
	lifted, n := 0, 0
	for _, r := range rules {
		if r.typ == ruleAll && len(r.conditions) == 0 && len(r.rules) > 0 {
			lifted++
			n += len(r.rules)
		} else {
			n++
		}
	}
	switch {
	case lifted == 0:
		return rules
	case len(rules) == 1:
		return rules[0].rules
	}
	out := blocks.take(n)
	for _, r := range rules {
		if r.typ == ruleAll && len(r.conditions) == 0 && len(r.rules) > 0 {
			out = append(out, r.rules...)
			continue
		}
		out = append(out, r)
	}
	return out
}

func compactJSON(raw json.RawMessage) json.RawMessage {
	raw = trimSpace(raw)
	if len(raw) == 0 {
		return nil
	}
	if !bytes.ContainsAny(raw, " \t\r\n") {
		return raw // already compact: no copy per value of a large document
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return raw
	}
	return buf.Bytes()
}

// conditionCompiler compiles a document's conditions with what they share:
// the document's own context for JSONPath properties (tree, see
// resolvePath) and the trait slots, numbered as conditions first read them.
type conditionCompiler struct {
	tree  func(member string) any
	names map[string]string // interned trait keys, see engine.traitNames
	slots map[string]int
	// semverMemos numbers the trait slots semver conditions read.
	semverMemos map[int32]int
	conditions  slab[condition]
	rules       slab[rule]
	operands    slab[operand]
	// Segments repeat the same regexes and IN lists: each distinct one is
	// compiled once and shared (both are read-only once compiled).
	regexps map[string]*regexp.Regexp
	inSets  map[string]map[string]struct{}
}

func newConditionCompiler(tree func(member string) any) *conditionCompiler {
	return &conditionCompiler{tree: tree, names: map[string]string{}, slots: map[string]int{},
		regexps: map[string]*regexp.Regexp{}, inSets: map[string]map[string]struct{}{}}
}

// regexp compiles a REGEX operand as Python's re.match reads it (anchored
// at the start only); nil when the pattern is invalid.
func (cc *conditionCompiler) regexp(pattern string) *regexp.Regexp {
	re, seen := cc.regexps[pattern]
	if !seen {
		if _, err := regexp.Compile(pattern); err == nil {
			re = regexp.MustCompile(`\A(?:` + pattern + `)`)
		}
		cc.regexps[pattern] = re
	}
	return re
}

// inSet is the set an IN operand's text stands for (see parseInList); set
// is that set when the operand was a JSON array and is already parsed.
func (cc *conditionCompiler) inSet(text string, set map[string]struct{}) map[string]struct{} {
	if shared, seen := cc.inSets[text]; seen {
		return shared
	}
	if set == nil {
		set = parseInList(text)
	}
	cc.inSets[text] = set
	return set
}

func (cc *conditionCompiler) slot(name string) int32 {
	slot, ok := cc.slots[name]
	if !ok {
		slot = len(cc.slots)
		cc.slots[name] = slot
		cc.names[name] = name
	}
	return int32(slot)
}

// semverMemo gives the trait in slot a place to keep its parsed version
// during a request, while there is room in evalState.semvers.
func (cc *conditionCompiler) semverMemo(slot int32) int {
	if cc.semverMemos == nil {
		cc.semverMemos = map[int32]int{}
	}
	memo, ok := cc.semverMemos[slot]
	if !ok && len(cc.semverMemos) < maxSemverMemos {
		memo = len(cc.semverMemos) + 1
		cc.semverMemos[slot] = memo
	}
	return memo
}

func (cc *conditionCompiler) rule(rc ruleContext) rule {
	r := rule{}
	switch rc.Type {
	case "ALL":
		r.typ = ruleAll
	case "ANY":
		r.typ = ruleAny
	case "NONE":
		r.typ = ruleNone
	}
	if len(rc.Conditions) > 0 {
		r.conditions = cc.conditions.take(len(rc.Conditions))
	}
	for _, c := range rc.Conditions {
		r.conditions = append(r.conditions, cc.condition(c))
	}
	if len(rc.Rules) > 0 {
		r.rules = cc.rules.take(len(rc.Rules))
	}
	for _, sub := range rc.Rules {
		r.rules = append(r.rules, cc.rule(sub))
	}
	return r
}

// condition parses a condition once. It never fails: a bad operand (an
// invalid regex, a zero MODULO divisor) makes the condition never match,
// where Flagsmith's Python engine would raise, because a bad rule in a
// document must never fail a request.
func (cc *conditionCompiler) condition(c conditionContext) condition {
	cond := condition{op: parseOperator(c.Operator)}
	var more operand
	var inSet map[string]struct{}
	cond.text, inSet = operandText(c.Value)

	var pathName string
	switch {
	case cond.op == opPercentageSplit && c.Property == "":
		cond.kind = propIdentityKey
	case strings.HasPrefix(c.Property, "$."):
		if path, ok := parseJSONPath(c.Property); ok {
			cond.isPath = true
			cond.kind, pathName, more.static = resolvePath(path, cc.tree)
		}
	}
	// A trait named exactly like a whole "$." property wins over the path.
	if cond.kind == propTrait || cond.isPath {
		cond.slot = cc.slot(c.Property)
	}
	if cond.kind == propTraitPath {
		cond.pathSlot = cc.slot(pathName)
	}

	switch cond.op {
	case opEqual, opNotEqual, opGreaterThan, opGreaterThanInclusive, opLessThan, opLessThanInclusive, opContains:
		cond.isSemver = strings.HasSuffix(cond.text, ":semver")
		if cond.isSemver {
			more.semver, more.semverOK = parseSemver(cond.text[:len(cond.text)-len(":semver")])
			if cond.kind == propTrait {
				more.semverMemo = cc.semverMemo(cond.slot)
			}
		}
		var n value
		n, cond.intOK = pyInt(cond.text)
		if n.bigInt {
			more.bigInt = n
		}
		cond.intVal = n.i
		cond.floatVal, cond.floatOK = pyFloat(cond.text)
		cond.boolVal = cond.text != "False" && cond.text != "false"
	case opRegex:
		more.re = cc.regexp(cond.text)
	case opModulo:
		d, r, ok := strings.Cut(cond.text, "|")
		if ok && !strings.Contains(r, "|") {
			var okD, okR bool
			more.divisor, okD = pyFloat(d)
			more.rem, okR = pyFloat(r)
			more.modOK = okD && okR && more.divisor != 0 // Python raises on a zero divisor
		}
	case opPercentageSplit:
		more.pct, more.pctOK = pyFloat(cond.text)
	case opIn:
		if inSet != nil || c.Value != nil && string(c.Value) != "null" {
			more.inSet = cc.inSet(cond.text, inSet)
		}
	}
	switch cond.op {
	case opRegex, opModulo, opPercentageSplit, opIn:
		cond.more = cc.operands.add(more)
	default:
		if cond.kind == propStatic || cond.isSemver || more.bigInt.bigInt {
			cond.more = cc.operands.add(more)
		}
	}
	return cond
}

// operandText returns a condition value as Python's str() would see it (null
// is "None"), and for a JSON array value (allowed for IN) its members as a set.
func operandText(raw json.RawMessage) (string, map[string]struct{}) {
	raw = trimSpace(raw)
	if len(raw) > 0 && raw[0] == '[' {
		if set, ok := jsonArraySet(raw); ok {
			return string(raw), set
		}
	}
	if len(raw) == 0 {
		return "None", nil
	}
	return pyStrOfJSON(raw), nil
}

// parseInList reads an IN operand: a JSON array when it starts with "[" and
// parses, else a comma-separated list.
func parseInList(s string) map[string]struct{} {
	if strings.HasPrefix(s, "[") {
		if set, ok := jsonArraySet([]byte(s)); ok {
			return set
		}
	}
	parts := strings.Split(s, ",")
	set := make(map[string]struct{}, len(parts))
	for _, p := range parts {
		set[p] = struct{}{}
	}
	return set
}

// jsonArraySet reads a JSON array as the set of its members' Python str()
// forms, the way Flagsmith's engine compares IN values.
func jsonArraySet(raw []byte) (map[string]struct{}, bool) {
	members, ok := pyJSONList(raw)
	if !ok {
		return nil, false
	}
	set := make(map[string]struct{}, len(members))
	for _, m := range members {
		set[m] = struct{}{}
	}
	return set, true
}
