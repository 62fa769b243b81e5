package main

import (
	"cmp"
	"math"
	"regexp"
	"strings"
)

// operator is a segment condition operator, compiled from its name once per
// document so that evaluation switches on a small integer.
type operator uint8

const (
	opUnknown operator = iota // a name no engine knows: never matches
	opEqual
	opNotEqual
	opGreaterThan
	opGreaterThanInclusive
	opLessThan
	opLessThanInclusive
	opContains
	opNotContains
	opRegex
	opPercentageSplit
	opModulo
	opIsSet
	opIsNotSet
	opIn
	numOperators // keep last: the length of operatorNames
)

// operatorNames spells each operator as environment documents do; it is
// the only list of names, read both ways.
var operatorNames = [numOperators]string{
	opEqual: "EQUAL", opNotEqual: "NOT_EQUAL", opGreaterThan: "GREATER_THAN",
	opGreaterThanInclusive: "GREATER_THAN_INCLUSIVE", opLessThan: "LESS_THAN",
	opLessThanInclusive: "LESS_THAN_INCLUSIVE", opContains: "CONTAINS", opNotContains: "NOT_CONTAINS",
	opRegex: "REGEX", opPercentageSplit: "PERCENTAGE_SPLIT", opModulo: "MODULO", opIsSet: "IS_SET",
	opIsNotSet: "IS_NOT_SET", opIn: "IN",
}

func (op operator) String() string { return operatorNames[op] }

// parseOperator reads an operator's name; an unknown one is opUnknown.
func parseOperator(name string) operator {
	for op, n := range operatorNames {
		if n == name && name != "" {
			return operator(op)
		}
	}
	return opUnknown
}

// propertyKind says where a condition reads its value from.
type propertyKind uint8

const (
	propTrait       propertyKind = iota // a trait key
	propIdentityKey                     // PERCENTAGE_SPLIT with no property: the raw identity key
	propIdentifier                      // $.identity.identifier
	propContextKey                      // $.identity.key
	propTraitPath                       // $.identity.traits.<name>
	propStatic                          // any path outside $.identity, resolved once per document
	propNone                            // a path that can never hold a scalar
)

// condition is one segment condition with its operand parsed once, when the
// document is compiled, in every form an operator may need. What every
// evaluation reads fits in one cache line; the operand forms only some
// operators need sit behind more, so that a document of thousands of
// conditions stays small and the conditions one request walks stay close.
type condition struct {
	op       operator
	kind     propertyKind
	isPath   bool
	isSemver bool
	intOK    bool
	floatOK  bool
	boolVal  bool
	slot     int32  // the trait slot of the property (see engine.traitSlots)
	pathSlot int32  // the trait slot of the trait a $.identity.traits path names
	text     string // the operand as Python's str() sees it
	intVal   int64  // the operand as an integer, when intOK and not more.bigInt
	floatVal float64
	more     *operand
}

// operand holds the operand forms of the less common operators and operands.
type operand struct {
	bigInt   value // an integer operand outside int64 (value.bigInt set)
	static   value // the value of a propStatic path
	semver   semver
	semverOK bool
	re       *regexp.Regexp
	divisor  float64
	rem      float64
	modOK    bool
	inSet    map[string]struct{}
	pct      float64
	pctOK    bool
	// semverMemo is 1 + the evalState.semvers entry that keeps this
	// condition's trait parsed for the rest of a request; 0: parse each time.
	semverMemo int
}

// inLookup finds a value in a set keyed the way IN compares: strings as
// they are, integers by their decimal string (as Python does); floats and
// booleans never match.
func inLookup[T any](set map[string]T, v value) (T, bool) {
	switch v.kind {
	case kindString:
		t, ok := set[v.s]
		return t, ok
	case kindInt:
		var buf [24]byte
		t, ok := set[string(appendPyStr(buf[:0], v))]
		return t, ok
	}
	var zero T
	return zero, false
}

// matches reports whether the condition holds for the identity in st.
func (c *condition) matches(st *evalState, segmentKey string) bool {
	if c.kind == propIdentityKey { // PERCENTAGE_SPLIT of the identity itself
		if !st.hasIdentity || c.more == nil || !c.more.pctOK {
			return false
		}
		var buf [192]byte
		return hashJoined(st.appendHashed(buf[:0], segmentKey), len(segmentKey)) <= c.more.pct
	}
	v := st.read(c)
	switch c.op {
	case opIn:
		if c.more == nil {
			return false
		}
		_, ok := inLookup(c.more.inSet, *v)
		return ok
	case opPercentageSplit:
		if v.kind == kindNone || c.more == nil || !c.more.pctOK {
			return false
		}
		var buf [128]byte
		return hashPercentage(segmentKey, appendPyStr(buf[:0], *v)) <= c.more.pct
	case opIsSet:
		return v.kind != kindNone
	case opIsNotSet:
		return v.kind == kindNone
	}
	if v.kind == kindNone {
		return false
	}
	switch c.op {
	case opNotContains:
		return v.kind == kindString && !strings.Contains(v.s, c.text)
	case opRegex:
		if c.more == nil || c.more.re == nil {
			return false
		}
		if v.kind == kindString {
			return c.more.re.MatchString(v.s)
		}
		var buf [32]byte
		return c.more.re.Match(appendPyStr(buf[:0], *v))
	case opModulo:
		var x float64
		switch v.kind {
		case kindInt, kindFloat:
			x = v.f
		case kindBool: // a bool is an int in Python
			if v.b {
				x = 1
			}
		default:
			return false
		}
		return c.more != nil && c.more.modOK && pyMod(x, c.more.divisor) == c.more.rem
	case opEqual, opNotEqual, opGreaterThan, opGreaterThanInclusive, opLessThan, opLessThanInclusive, opContains:
		return c.compare(st, v)
	}
	return false
}

// compare applies an ordering operator after casting the operand to the
// value's type, as Flagsmith's engine does; a cast that fails never matches.
func (c *condition) compare(st *evalState, v *value) bool {
	switch v.kind {
	case kindString:
		if c.isSemver {
			sv, ok := st.semver(c, v.s)
			if !ok {
				return false
			}
			if c.op == opContains {
				// Python's `text in version` walks (major, minor, patch,
				// prerelease, build) comparing with ==, so only the two
				// strings can equal the text.
				text := c.text[:len(c.text)-len(":semver")]
				return text != "" && (text == sv.pre || text == sv.build)
			}
			return c.more != nil && c.more.semverOK && cmpHolds(c.op, compareSemver(sv, c.more.semver))
		}
		if c.op == opContains {
			return strings.Contains(v.s, c.text)
		}
		return cmpHolds(c.op, strings.Compare(v.s, c.text))
	case kindBool:
		if c.op == opContains {
			return false
		}
		return cmpHolds(c.op, cmp.Compare(b2i(v.b), b2i(c.boolVal)))
	case kindInt:
		if c.op == opContains || !c.intOK {
			return false
		}
		operand := intValue(c.intVal)
		if c.more != nil && c.more.bigInt.bigInt {
			operand = c.more.bigInt
		}
		return cmpHolds(c.op, compareIntValues(*v, operand))
	case kindFloat:
		if c.op == opContains || !c.floatOK {
			return false
		}
		return orderedFloat(c.op, v.f, c.floatVal)
	}
	return false
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// compareIntValues orders two integers exactly, as Python's unbounded ints
// compare. A bigInt lies outside int64, so against a small one its sign
// alone decides.
func compareIntValues(a, b value) int {
	switch {
	case !a.bigInt && !b.bigInt:
		return cmp.Compare(a.i, b.i)
	case !b.bigInt:
		return bigIntSign(a)
	case !a.bigInt:
		return -bigIntSign(b)
	}
	negA, negB := a.s[0] == '-', b.s[0] == '-'
	switch {
	case negA && !negB:
		return -1
	case negB && !negA:
		return 1
	case negA:
		return compareNumeric(b.s[1:], a.s[1:])
	}
	return compareNumeric(a.s, b.s)
}

func bigIntSign(v value) int {
	if v.s[0] == '-' {
		return -1
	}
	return 1
}

func cmpHolds(op operator, cmp int) bool {
	switch op {
	case opEqual:
		return cmp == 0
	case opNotEqual:
		return cmp != 0
	case opGreaterThan:
		return cmp > 0
	case opGreaterThanInclusive:
		return cmp >= 0
	case opLessThan:
		return cmp < 0
	case opLessThanInclusive:
		return cmp <= 0
	}
	return false
}

// orderedFloat compares with IEEE semantics, so NaN is unequal to everything,
// as in Python.
func orderedFloat(op operator, a, b float64) bool {
	switch op {
	case opEqual:
		return a == b
	case opNotEqual:
		return a != b
	case opGreaterThan:
		return a > b
	case opGreaterThanInclusive:
		return a >= b
	case opLessThan:
		return a < b
	case opLessThanInclusive:
		return a <= b
	}
	return false
}

// pyMod is Python's float modulo: the result takes the divisor's sign.
func pyMod(x, d float64) float64 {
	m := math.Mod(x, d)
	if m != 0 {
		if (d < 0) != (m < 0) {
			m += d
		}
	} else {
		m = math.Copysign(0, d)
	}
	return m
}

// pow64Mod9999 is 2^64 mod 9999.
const pow64Mod9999 = (1 << 63 % 9999) * 2 % 9999
