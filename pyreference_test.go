package main

import (
	"cmp"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// This file is a slow, plain model of how Flagsmith's Python engine
// (flagsmith-engine 10, with python-semver 3) decides one segment condition.
// FuzzConditions compares the proxy with it. It is written from the Python
// source, step by step, and shares no code with the proxy: Python's values
// are modelled as Python values (unbounded ints, str(), repr()), and each
// parse follows CPython's rules rather than the proxy's shortcuts.
//
// Python raises on some bad rules (a zero MODULO divisor, a None IN value);
// the proxy's contract is that a bad rule never fails a request, so here an
// exception means "does not match".

// pyKind is the Python type of a modelled value.
type pyKind uint8

const (
	pyNoneType pyKind = iota
	pyBoolType
	pyIntType
	pyFloatType
	pyStrType
	pyListType
	pyDictType
)

// pyValue is a Python value: what json.loads returns, and what the engine
// holds as a context value (None, bool, int, float, str).
type pyValue struct {
	kind  pyKind
	b     bool
	i     *big.Int
	f     float64
	s     string
	items []pyValue // list items, or dict keys and values alternating
}

// pyExceptionError stands for a Python exception the engine would raise.
type pyExceptionError struct{ what string }

func (e pyExceptionError) Error() string { return e.what }

// refContextValue is what Flagsmith's engine makes of a trait sent as JSON:
// json.loads, then map_any_value_to_context_value, which turns strings that
// fully match -?[0-9]+ into int and -?[0-9]+\.[0-9]+ into float.
func refContextValue(traitJSON string) (pyValue, bool) {
	v, ok := refJSONLoads(traitJSON)
	if !ok || v.kind == pyListType || v.kind == pyDictType {
		return pyValue{}, false
	}
	if v.kind != pyStrType {
		return v, true
	}
	if refIntShape.MatchString(v.s) {
		n, _ := new(big.Int).SetString(v.s, 10)
		return pyValue{kind: pyIntType, i: n}, true
	}
	if refFloatShape.MatchString(v.s) {
		f, _ := refFloat(v.s)
		return pyValue{kind: pyFloatType, f: f}, true
	}
	return v, true
}

// The shapes map_any_value_to_context_value coerces, matched in full.
var (
	refIntShape   = regexp.MustCompile(`^-?[0-9]+$`)
	refFloatShape = regexp.MustCompile(`^-?[0-9]+\.[0-9]+$`)
)

// refConditionHolds is context_matches_condition for a condition on trait
// "a" (or on the identity key, for PERCENTAGE_SPLIT with no property).
// operand is the condition's value: a string, nil for JSON null, or a list of
// strings (the context format's IN). trait is nil when "a" is not set.
func refConditionHolds(op string, noProperty bool, operand any, trait *pyValue, segmentKey, identityKey string) bool {
	var cv pyValue // None unless set below
	switch {
	case op == "PERCENTAGE_SPLIT" && noProperty:
		cv = pyValue{kind: pyStrType, s: identityKey}
	case noProperty:
		// A trait named "" is never set in the fuzzed identities.
	case trait != nil:
		cv = *trait
	}

	if op == "IN" {
		var in []string
		switch o := operand.(type) {
		case []string:
			in = o
		case string:
			in = refParseInValues(o)
		default:
			return false // None.startswith raises AttributeError
		}
		if cv.kind == pyIntType {
			cv = pyValue{kind: pyStrType, s: cv.i.String()}
		}
		if cv.kind != pyStrType {
			return false // None, True or 1.5 is never equal to a str
		}
		for _, s := range in {
			if s == cv.s {
				return true
			}
		}
		return false
	}

	sv, isStr := operand.(string)
	switch op {
	case "PERCENTAGE_SPLIT":
		if cv.kind == pyNoneType || !isStr {
			return false // float(None) raises TypeError
		}
		threshold, ok := refFloat(sv)
		if !ok {
			return false
		}
		return refHashPercentage(segmentKey, refStr(cv)) <= threshold
	case "IS_NOT_SET":
		return cv.kind == pyNoneType
	case "IS_SET":
		return cv.kind != pyNoneType
	}
	if cv.kind == pyNoneType {
		return false
	}
	var svText string // str(segment_value)
	if isStr {
		svText = sv
	} else {
		svText = "None"
	}

	switch op {
	case "NOT_CONTAINS":
		return cv.kind == pyStrType && !strings.Contains(cv.s, svText)
	case "REGEX":
		// The fuzzer only builds patterns on which Python's re and Go's
		// RE2 agree. re.compile takes the pattern alone, and re.match
		// anchors at the start only: some match starts there exactly when
		// the leftmost one does.
		re, err := regexp.Compile(svText)
		if err != nil {
			return false
		}
		loc := re.FindStringIndex(refStr(cv))
		return loc != nil && loc[0] == 0
	case "MODULO":
		return refModulo(sv, isStr, cv)
	case "EQUAL", "NOT_EQUAL", "GREATER_THAN", "GREATER_THAN_INCLUSIVE", "LESS_THAN", "LESS_THAN_INCLUSIVE", "CONTAINS":
		holds, err := refTypedCompare(op, sv, isStr, cv)
		return err == nil && holds
	}
	return false // an unknown operator has no matcher
}

// refTypedCompare is _context_value_typed: parse a str trait as a version
// when the value ends in ":semver", cast the condition value to the trait's
// type, then apply the operator. A TypeError or ValueError means false.
func refTypedCompare(op, sv string, isStr bool, cv pyValue) (bool, error) {
	if cv.kind == pyStrType && isStr && strings.HasSuffix(sv, ":semver") {
		version, ok := refSemver(cv.s)
		if !ok {
			return false, pyExceptionError{"ValueError: not valid SemVer"}
		}
		other := sv[:len(sv)-len(":semver")] // remove_semver_suffix
		if op == "CONTAINS" {
			// `other in version` walks (major, minor, patch, prerelease,
			// build) comparing with ==: only the two strings can be equal.
			return (version.hasPre && version.pre == other) || (version.hasBuild && version.build == other), nil
		}
		ov, ok := refSemver(other) // Version.compare parses a str operand
		if !ok {
			return false, pyExceptionError{"ValueError: not valid SemVer"}
		}
		return refOrder(op, refSemverCompare(version, ov)), nil
	}
	switch cv.kind {
	case pyBoolType:
		if op == "CONTAINS" {
			return false, pyExceptionError{"TypeError: bool is not iterable"}
		}
		cast := !isStr || (sv != "False" && sv != "false") // None is not in the tuple either
		return refOrder(op, big.NewInt(b2iRef(cv.b)).Cmp(big.NewInt(b2iRef(cast)))), nil
	case pyIntType:
		if !isStr {
			return false, pyExceptionError{"TypeError: int(None)"}
		}
		n, ok := refInt(sv)
		if !ok || op == "CONTAINS" {
			return false, pyExceptionError{"ValueError or TypeError"}
		}
		return refOrder(op, cv.i.Cmp(n)), nil
	case pyFloatType:
		if !isStr {
			return false, pyExceptionError{"TypeError: float(None)"}
		}
		f, ok := refFloat(sv)
		if !ok || op == "CONTAINS" {
			return false, pyExceptionError{"ValueError or TypeError"}
		}
		x := cv.f
		switch op { // IEEE comparisons: NaN is unequal to everything
		case "EQUAL":
			return x == f, nil
		case "NOT_EQUAL":
			return x != f, nil
		case "GREATER_THAN":
			return x > f, nil
		case "GREATER_THAN_INCLUSIVE":
			return x >= f, nil
		case "LESS_THAN":
			return x < f, nil
		case "LESS_THAN_INCLUSIVE":
			return x <= f, nil
		}
	case pyStrType:
		other := "None"
		if isStr {
			other = sv
		}
		if op == "CONTAINS" {
			return strings.Contains(cv.s, other), nil
		}
		// Python compares str by code point, as Go compares UTF-8 bytes.
		return refOrder(op, strings.Compare(cv.s, other)), nil
	}
	return false, nil
}

func refOrder(op string, cmp int) bool {
	switch op {
	case "EQUAL":
		return cmp == 0
	case "NOT_EQUAL":
		return cmp != 0
	case "GREATER_THAN":
		return cmp > 0
	case "GREATER_THAN_INCLUSIVE":
		return cmp >= 0
	case "LESS_THAN":
		return cmp < 0
	case "LESS_THAN_INCLUSIVE":
		return cmp <= 0
	}
	return false
}

// refModulo is _evaluate_modulo: `context_value % divisor == remainder`
// with both parts parsed by float(). Python's float modulo takes the
// divisor's sign; a zero divisor raises ZeroDivisionError, an int too big
// for a float raises OverflowError.
func refModulo(sv string, isStr bool, cv pyValue) bool {
	var x float64
	switch cv.kind {
	case pyBoolType: // bool is an int subclass
		x = float64(b2iRef(cv.b))
	case pyIntType:
		f, _ := new(big.Float).SetInt(cv.i).Float64()
		if math.IsInf(f, 0) {
			return false // OverflowError
		}
		x = f
	case pyFloatType:
		x = cv.f
	default:
		return false
	}
	if !isStr || sv == "" {
		return false
	}
	parts := strings.Split(sv, "|")
	if len(parts) != 2 {
		return false // unpacking raises ValueError
	}
	divisor, ok1 := refFloat(parts[0])
	remainder, ok2 := refFloat(parts[1])
	if !ok1 || !ok2 || divisor == 0 {
		return false
	}
	// CPython's float_rem.
	mod := math.Mod(x, divisor)
	if mod != 0 {
		if (divisor < 0) != (mod < 0) {
			mod += divisor
		}
	} else {
		mod = math.Copysign(0, divisor)
	}
	return mod == remainder
}

// refParseInValues is _parse_in_values_str: a value starting with "[" is
// tried as JSON (Python's json, which also reads NaN and Infinity), each
// item kept if a str and else turned into str(); anything else, or JSON that
// does not parse, is split on commas.
func refParseInValues(s string) []string {
	if strings.HasPrefix(s, "[") {
		if v, ok := refJSONLoads(s); ok && v.kind == pyListType {
			out := make([]string, len(v.items))
			for i, it := range v.items {
				out[i] = refStr(it)
			}
			return out
		}
		// json.loads("[1") raises; a valid non-list ("[1] 2" is not valid)
		// cannot start with "[".
	}
	return strings.Split(s, ",")
}

func b2iRef(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// refHashPercentage is get_hashed_percentage_for_object_ids for two ids.
func refHashPercentage(a, b string) float64 {
	for iterations := 1; ; iterations++ {
		if p := referencePercentage([]string{a, b}, iterations); p != 100 {
			return p
		}
	}
}

// refPySpace is str.isspace() for the non-ASCII characters: the ones
// CPython's int() and float() turn into spaces before parsing.
func refPySpace(r rune) bool {
	switch r {
	case 0x85, 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}

// refToASCII is CPython's _PyUnicode_TransformDecimalAndSpaceToASCII, the
// first step of int() and float(): ASCII stays as it is (so "\x1c" is not
// a space there), other whitespace becomes " ", a decimal digit of any
// script its ASCII digit, and anything else "?".
func refToASCII(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x7f:
			b.WriteRune(r)
		case refPySpace(r):
			b.WriteByte(' ')
		case unicode.Is(unicode.Nd, r):
			b.WriteByte(byte('0' + refDigitValue(r)))
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}

// refDigitValue is the value of a decimal digit: Unicode lays each script's
// digits out as a run of ten, 0 to 9, and adjacent runs start at multiples
// of ten from the first.
func refDigitValue(r rune) int {
	start := r
	for unicode.Is(unicode.Nd, start-1) {
		start--
	}
	return int(r-start) % 10
}

// refStripASCIISpace strips what CPython's number parsers skip after the
// transform above.
func refStripASCIISpace(s string) string {
	return strings.Trim(s, " \t\n\v\f\r")
}

// The syntax of int() and float() after the transform and strip above.
var (
	refIntSyntax   = regexp.MustCompile(`^[+-]?[0-9](?:_?[0-9])*$`)
	refFloatDigits = `[0-9](?:_?[0-9])*`
	refFloatSyntax = regexp.MustCompile(`^[+-]?(?:` + refFloatDigits + `(?:\.(?:` + refFloatDigits + `)?)?|\.` + refFloatDigits + `)(?:[eE][+-]?` + refFloatDigits + `)?$`)
	refFloatWords  = regexp.MustCompile(`^([+-]?)(?i:(inf|infinity)|(nan))$`)
)

// refInt is Python's int(str): sign, decimal digits with single underscores
// between them, surrounding whitespace; more than 4300 digits raise (the
// limit since Python 3.11).
func refInt(s string) (*big.Int, bool) {
	t := refStripASCIISpace(refToASCII(s))
	if !refIntSyntax.MatchString(t) {
		return nil, false
	}
	t = strings.ReplaceAll(t, "_", "")
	if len(strings.TrimLeft(t, "+-")) > 4300 {
		return nil, false
	}
	n, ok := new(big.Int).SetString(strings.TrimPrefix(t, "+"), 10)
	return n, ok
}

// refFloat is Python's float(str): digits with underscores between them, an
// optional fraction and exponent, or inf, infinity and nan in any case, each
// with an optional sign. Too large a value is inf, too small 0.
func refFloat(s string) (float64, bool) {
	t := refStripASCIISpace(refToASCII(s))
	if m := refFloatWords.FindStringSubmatch(t); m != nil {
		if m[3] != "" {
			return math.NaN(), true
		}
		if m[1] == "-" {
			return math.Inf(-1), true
		}
		return math.Inf(1), true
	}
	if !refFloatSyntax.MatchString(t) {
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(t, "_", ""), 64)
	if err != nil && !math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// refVersion is a python-semver Version.
type refVersion struct {
	major, minor, patch *big.Int
	pre, build          string
	hasPre, hasBuild    bool
}

var refSemverSyntax = func() *regexp.Regexp {
	const num = `(0|[1-9]\p{Nd}*)`
	const preIdent = `(?:0|[1-9]\p{Nd}*|\p{Nd}*[a-zA-Z-][0-9a-zA-Z-]*)`
	return regexp.MustCompile(`^` + num + `\.` + num + `\.` + num +
		`(?:-(` + preIdent + `(?:\.` + preIdent + `)*))?` +
		`(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\n?$`)
}()

// refSemver is Version.parse: python-semver's regular expression, where \d
// is any Unicode decimal digit and $ also matches before a final newline.
func refSemver(s string) (refVersion, bool) {
	m := refSemverSyntax.FindStringSubmatchIndex(s)
	if m == nil {
		return refVersion{}, false
	}
	group := func(i int) (string, bool) {
		if m[2*i] < 0 {
			return "", false
		}
		return s[m[2*i]:m[2*i+1]], true
	}
	var v refVersion
	for i, dst := range []**big.Int{&v.major, &v.minor, &v.patch} {
		text, _ := group(i + 1)
		*dst, _ = refInt(text)
	}
	v.pre, v.hasPre = group(4)
	v.build, v.hasBuild = group(5)
	return v, true
}

// refSemverCompare is Version.compare: major, minor, patch as ints, then
// _nat_cmp of the prereleases (identifiers that are all digits compare as
// ints and below text), a release above any prerelease.
func refSemverCompare(a, b refVersion) int {
	for _, c := range []int{a.major.Cmp(b.major), a.minor.Cmp(b.minor), a.patch.Cmp(b.patch)} {
		if c != 0 {
			return c
		}
	}
	aParts, bParts := strings.Split(a.pre, "."), strings.Split(b.pre, ".")
	natural := 0
	for i := 0; i < len(aParts) && i < len(bParts) && natural == 0; i++ {
		x, y := aParts[i], bParts[i]
		xNum, yNum := refIsDigit(x), refIsDigit(y)
		switch {
		case xNum && yNum:
			nx, _ := refInt(x)
			ny, _ := refInt(y)
			natural = nx.Cmp(ny)
		case xNum:
			natural = -1
		case yNum:
			natural = 1
		default:
			natural = strings.Compare(x, y)
		}
	}
	if natural == 0 {
		natural = cmp.Compare(len(aParts), len(bParts))
	}
	switch {
	case natural == 0:
		return 0
	case !a.hasPre:
		return 1
	case !b.hasPre:
		return -1
	}
	return natural
}

// refIsDigit is str.isdigit() for the characters a version may hold.
func refIsDigit(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !unicode.Is(unicode.Nd, r) {
			return false
		}
	}
	return true
}
