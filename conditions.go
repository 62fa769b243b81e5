package main

import (
	"crypto/md5"
	"encoding/binary"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Segment condition operators, as spelled in environment documents.
const (
	opEqual           = "EQUAL"
	opNotEqual        = "NOT_EQUAL"
	opGreaterThan     = "GREATER_THAN"
	opGreaterThanIncl = "GREATER_THAN_INCLUSIVE"
	opLessThan        = "LESS_THAN"
	opLessThanIncl    = "LESS_THAN_INCLUSIVE"
	opContains        = "CONTAINS"
	opNotContains     = "NOT_CONTAINS"
	opRegex           = "REGEX"
	opPercentageSplit = "PERCENTAGE_SPLIT"
	opModulo          = "MODULO"
	opIsSet           = "IS_SET"
	opIsNotSet        = "IS_NOT_SET"
	opIn              = "IN"
)

type operator uint8

const (
	opUnknown operator = iota
	opEQ
	opNE
	opGT
	opGE
	opLT
	opLE
	opCONTAINS
	opNOTCONTAINS
	opREGEX
	opPERCENT
	opMODULO
	opISSET
	opISNOTSET
	opIN
)

var operatorsByName = map[string]operator{
	opEqual: opEQ, opNotEqual: opNE, opGreaterThan: opGT, opGreaterThanIncl: opGE,
	opLessThan: opLT, opLessThanIncl: opLE, opContains: opCONTAINS, opNotContains: opNOTCONTAINS,
	opRegex: opREGEX, opPercentageSplit: opPERCENT, opModulo: opMODULO, opIsSet: opISSET,
	opIsNotSet: opISNOTSET, opIn: opIN,
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
// document is compiled, in every form an operator may need.
type condition struct {
	// Read on every evaluation, so kept together at the front.
	op       operator
	kind     propertyKind
	isPath   bool
	isSemver bool
	intOK    bool
	floatOK  bool
	boolVal  bool
	slot     int    // the trait slot of property (see engine.traitSlots)
	pathSlot int    // the trait slot of pathName
	text     string // the operand as Python's str() sees it
	intVal   value
	floatVal float64

	property string // the trait key, or the whole "$." property (a trait of that key wins)
	pathName string // the trait read by propTraitPath
	static   value  // the value of a propStatic path
	semver   semver
	semverOK bool
	re       *regexp.Regexp
	divisor  float64
	rem      float64
	modOK    bool
	inSet    map[string]struct{}
	pct      float64
	pctOK    bool
}

// compileCondition parses a condition once. It never fails: a bad operand
// simply makes the condition never match, as an invalid rule must never fail a
// request (SPEC §6).
func compileCondition(c conditionContext, tree any) condition {
	cond := condition{op: operatorsByName[c.Operator], property: c.Property}
	cond.text, cond.inSet = operandText(c.Value)

	switch {
	case cond.op == opPERCENT && c.Property == "":
		cond.kind = propIdentityKey
	case strings.HasPrefix(c.Property, "$."):
		if path, ok := parseJSONPath(c.Property); ok {
			cond.isPath = true
			cond.kind, cond.pathName, cond.static = resolvePath(path, tree)
		}
	}

	switch cond.op {
	case opEQ, opNE, opGT, opGE, opLT, opLE, opCONTAINS:
		cond.isSemver = strings.HasSuffix(cond.text, ":semver")
		if cond.isSemver {
			cond.semver, cond.semverOK = parseSemver(cond.text[:len(cond.text)-len(":semver")])
		}
		cond.intVal, cond.intOK = pyInt(cond.text)
		cond.floatVal, cond.floatOK = pyFloat(cond.text)
		cond.boolVal = cond.text != "False" && cond.text != "false"
	case opREGEX:
		if _, err := regexp.Compile(cond.text); err == nil {
			// Python's re.match anchors at the start only.
			cond.re = regexp.MustCompile(`\A(?:` + cond.text + `)`)
		}
	case opMODULO:
		d, r, ok := strings.Cut(cond.text, "|")
		if ok && !strings.Contains(r, "|") {
			var okD, okR bool
			cond.divisor, okD = pyFloat(d)
			cond.rem, okR = pyFloat(r)
			cond.modOK = okD && okR && cond.divisor != 0 // Python raises on a zero divisor
		}
	case opPERCENT:
		cond.pct, cond.pctOK = pyFloat(cond.text)
	case opIN:
		if cond.inSet == nil && c.Value != nil && string(c.Value) != "null" {
			cond.inSet = parseInList(cond.text)
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
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil, false
	}
	set := make(map[string]struct{}, len(items))
	for _, it := range items {
		set[pyStrOfJSON(it)] = struct{}{}
	}
	return set, true
}

// matches reports whether the condition holds for the identity in st.
func (c *condition) matches(st *evalState, segmentKey string) bool {
	if c.kind == propIdentityKey { // PERCENTAGE_SPLIT of the identity itself
		if !st.hasIdentity || !c.pctOK {
			return false
		}
		var buf [128]byte
		return hashPercentage(segmentKey, st.appendIdentityKey(buf[:0])) <= c.pct
	}
	v := st.read(c)
	switch c.op {
	case opIN:
		var buf [24]byte
		switch v.kind {
		case kindString:
			_, ok := c.inSet[v.s]
			return ok
		case kindInt:
			// Python compares integers by their decimal string; floats and
			// booleans never match.
			_, ok := c.inSet[string(appendPyStr(buf[:0], v))]
			return ok
		}
		return false
	case opPERCENT:
		if v.kind == kindNone || !c.pctOK {
			return false
		}
		var buf [128]byte
		return hashPercentage(segmentKey, appendPyStr(buf[:0], v)) <= c.pct
	case opISSET:
		return v.kind != kindNone
	case opISNOTSET:
		return v.kind == kindNone
	}
	if v.kind == kindNone {
		return false
	}
	switch c.op {
	case opNOTCONTAINS:
		return v.kind == kindString && !strings.Contains(v.s, c.text)
	case opREGEX:
		if c.re == nil {
			return false
		}
		if v.kind == kindString {
			return c.re.MatchString(v.s)
		}
		var buf [32]byte
		return c.re.Match(appendPyStr(buf[:0], v))
	case opMODULO:
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
		return c.modOK && pyMod(x, c.divisor) == c.rem
	case opEQ, opNE, opGT, opGE, opLT, opLE, opCONTAINS:
		return c.compare(v)
	}
	return false
}

// compare applies an ordering operator after casting the operand to the
// value's type, as Flagsmith's engine does; a cast that fails never matches.
func (c *condition) compare(v value) bool {
	switch v.kind {
	case kindString:
		if c.isSemver {
			if c.op == opCONTAINS || !c.semverOK {
				return false
			}
			sv, ok := parseSemver(v.s)
			if !ok {
				return false
			}
			return cmpHolds(c.op, compareSemver(sv, c.semver))
		}
		if c.op == opCONTAINS {
			return strings.Contains(v.s, c.text)
		}
		return cmpHolds(c.op, strings.Compare(v.s, c.text))
	case kindBool:
		if c.op == opCONTAINS {
			return false
		}
		return cmpHolds(c.op, compareInts(b2i(v.b), b2i(c.boolVal)))
	case kindInt:
		if c.op == opCONTAINS || !c.intOK {
			return false
		}
		if v.bigInt || c.intVal.bigInt {
			return orderedFloat(c.op, v.f, c.intVal.f)
		}
		return cmpHolds(c.op, compareInts(v.i, c.intVal.i))
	case kindFloat:
		if c.op == opCONTAINS || !c.floatOK {
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

func compareInts(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpHolds(op operator, cmp int) bool {
	switch op {
	case opEQ:
		return cmp == 0
	case opNE:
		return cmp != 0
	case opGT:
		return cmp > 0
	case opGE:
		return cmp >= 0
	case opLT:
		return cmp < 0
	case opLE:
		return cmp <= 0
	}
	return false
}

// orderedFloat compares with IEEE semantics, so NaN is unequal to everything,
// as in Python.
func orderedFloat(op operator, a, b float64) bool {
	switch op {
	case opEQ:
		return a == b
	case opNE:
		return a != b
	case opGT:
		return a > b
	case opGE:
		return a >= b
	case opLT:
		return a < b
	case opLE:
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

// hashPercentage maps ids to [0, 100) exactly as Flagsmith does: the MD5 of
// the ids joined with ",", read as a 128-bit integer, taken modulo 9999 and
// scaled by 100/9998. The rare exact 100 is hashed again with the ids
// repeated, once more each time.
func hashPercentage(a string, b []byte) float64 {
	var buf [256]byte
	for iterations := 1; ; iterations++ {
		joined := buf[:0]
		for i := 0; i < iterations; i++ {
			if i > 0 {
				joined = append(joined, ',')
			}
			joined = append(joined, a...)
			joined = append(joined, ',')
			joined = append(joined, b...)
		}
		sum := md5.Sum(joined)
		// The digest as a 128-bit integer is hi·2^64 + lo; reduce it modulo
		// 9999 from its two halves instead of byte by byte.
		hi, lo := binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:])
		r := ((hi%9999)*pow64Mod9999 + lo%9999) % 9999
		if p := float64(r) / 9998 * 100; p != 100 {
			return p
		}
	}
}

// pow64Mod9999 is 2^64 mod 9999.
const pow64Mod9999 = (1 << 63 % 9999) * 2 % 9999

// semver is a parsed semantic version. Numbers are kept as digit strings
// because Python's are unbounded; nothing is allocated, since traits are
// parsed per request.
type semver struct {
	major, minor, patch string
	pre                 string // dot-separated identifiers; empty for a release
}

// parseSemver parses strictly as python-semver's Version.parse does:
// MAJOR.MINOR.PATCH, optional -prerelease and +build, no leading zeros.
func parseSemver(s string) (semver, bool) {
	s = strings.TrimSuffix(s, "\n") // Python's "$" also matches before a final newline
	core, build, hasBuild := strings.Cut(s, "+")
	if hasBuild && !validIdents(build, false) {
		return semver{}, false
	}
	core, pre, hasPre := strings.Cut(core, "-")
	if hasPre && !validIdents(pre, true) {
		return semver{}, false
	}
	var v semver
	var ok bool
	if v.major, core, ok = strings.Cut(core, "."); !ok {
		return semver{}, false
	}
	if v.minor, v.patch, ok = strings.Cut(core, "."); !ok {
		return semver{}, false
	}
	if !isNumericIdent(v.major) || !isNumericIdent(v.minor) || !isNumericIdent(v.patch) {
		return semver{}, false
	}
	v.pre = pre
	return v, true
}

func isNumericIdent(p string) bool {
	return allDigits(p) && (len(p) == 1 || p[0] != '0')
}

func validIdents(s string, prerelease bool) bool {
	for rest, more := s, true; more; {
		var id string
		id, rest, more = strings.Cut(rest, ".")
		if id == "" {
			return false
		}
		digitsOnly := true
		for i := 0; i < len(id); i++ {
			c := id[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-':
				digitsOnly = false
			default:
				return false
			}
		}
		if prerelease && digitsOnly && !isNumericIdent(id) {
			return false
		}
	}
	return true
}

func compareNumeric(a, b string) int {
	if len(a) != len(b) {
		return compareInts(int64(len(a)), int64(len(b)))
	}
	return strings.Compare(a, b)
}

// compareSemver orders versions as python-semver does: numbers, then a
// release above any pre-release, then pre-release identifiers one by one
// (numbers below text), then the longer pre-release. Build is ignored.
func compareSemver(a, b semver) int {
	for _, c := range [3]int{
		compareNumeric(a.major, b.major),
		compareNumeric(a.minor, b.minor),
		compareNumeric(a.patch, b.patch),
	} {
		if c != 0 {
			return c
		}
	}
	switch {
	case a.pre == "" && b.pre == "":
		return 0
	case a.pre == "":
		return 1
	case b.pre == "":
		return -1
	}
	restA, restB := a.pre, b.pre
	for restA != "" && restB != "" {
		var x, y string
		x, restA, _ = strings.Cut(restA, ".")
		y, restB, _ = strings.Cut(restB, ".")
		xNum, yNum := allDigits(x), allDigits(y)
		var c int
		switch {
		case xNum && yNum:
			c = compareNumeric(x, y) // no leading zeros: validated
		case xNum:
			c = -1
		case yNum:
			c = 1
		default:
			c = strings.Compare(x, y)
		}
		if c != 0 {
			return c
		}
	}
	return compareInts(int64(len(a.pre)), int64(len(b.pre)))
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// pathSegment is one selector of a singular JSONPath query.
type pathSegment struct {
	name    string
	index   int
	isIndex bool
}

// parseJSONPath parses an RFC 9535 singular query: $ followed by .name,
// ['name'], ["name"] or [index] segments. Anything else (including valid but
// non-singular queries) reports false, and the property is read as a plain
// trait key, which is all Flagsmith's engine can match for it in practice.
func parseJSONPath(s string) ([]pathSegment, bool) {
	if !strings.HasPrefix(s, "$") {
		return nil, false
	}
	var segs []pathSegment
	i := 1
	for i < len(s) {
		switch s[i] {
		case '.':
			i++
			start := i
			for i < len(s) {
				r, size := utf8.DecodeRuneInString(s[i:])
				if !isNameChar(r, i == start) {
					break
				}
				i += size
			}
			if i == start {
				return nil, false
			}
			segs = append(segs, pathSegment{name: s[start:i]})
		case '[':
			i = skipBlank(s, i+1)
			if i >= len(s) {
				return nil, false
			}
			var seg pathSegment
			if s[i] == '\'' || s[i] == '"' {
				name, next, ok := parseJSONPathString(s, i)
				if !ok {
					return nil, false
				}
				seg.name, i = name, next
			} else {
				start := i
				if i < len(s) && s[i] == '-' {
					i++
				}
				for i < len(s) && s[i] >= '0' && s[i] <= '9' {
					i++
				}
				text := s[start:i]
				digits := strings.TrimPrefix(text, "-")
				if digits == "" || (len(digits) > 1 && digits[0] == '0') || text == "-0" {
					return nil, false
				}
				n, err := strconv.Atoi(text)
				if err != nil {
					return nil, false
				}
				seg.index, seg.isIndex = n, true
			}
			i = skipBlank(s, i)
			if i >= len(s) || s[i] != ']' {
				return nil, false
			}
			i++
			segs = append(segs, seg)
		default:
			return nil, false
		}
	}
	return segs, true
}

func isNameChar(r rune, first bool) bool {
	switch {
	case r == utf8.RuneError:
		return false
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_', r >= 0x80 && r <= 0xD7FF, r >= 0xE000:
		return true
	case r >= '0' && r <= '9':
		return !first
	}
	return false
}

func skipBlank(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// parseJSONPathString reads a quoted name selector starting at s[i].
func parseJSONPathString(s string, i int) (string, int, bool) {
	quote := s[i]
	var b strings.Builder
	for i++; i < len(s); i++ {
		c := s[i]
		switch {
		case c == quote:
			return b.String(), i + 1, true
		case c == '\\':
			i++
			if i >= len(s) {
				return "", 0, false
			}
			switch s[i] {
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case '/', '\\':
				b.WriteByte(s[i])
			case '\'', '"':
				if s[i] != quote {
					return "", 0, false
				}
				b.WriteByte(s[i])
			case 'u':
				if i+4 >= len(s) {
					return "", 0, false
				}
				n, err := strconv.ParseUint(s[i+1:i+5], 16, 32)
				if err != nil {
					return "", 0, false
				}
				i += 4
				r := rune(n)
				if r >= 0xD800 && r <= 0xDBFF && i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
					if lo, err := strconv.ParseUint(s[i+3:i+7], 16, 32); err == nil && lo >= 0xDC00 && lo <= 0xDFFF {
						r = (r-0xD800)<<10 + (rune(lo) - 0xDC00) + 0x10000
						i += 6
					}
				}
				b.WriteRune(r)
			default:
				return "", 0, false
			}
		case c < 0x20:
			return "", 0, false
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, false
}

// resolvePath decides once per document where a path reads from. Paths into
// $.identity depend on the request; every other path reads the document's own
// context (environment, features, segments), which cannot change until the
// next document, so it is resolved here.
func resolvePath(path []pathSegment, tree any) (propertyKind, string, value) {
	if len(path) > 0 && !path[0].isIndex && path[0].name == "identity" {
		switch {
		case len(path) == 2 && !path[1].isIndex && path[1].name == "identifier":
			return propIdentifier, "", value{}
		case len(path) == 2 && !path[1].isIndex && path[1].name == "key":
			return propContextKey, "", value{}
		case len(path) == 3 && !path[1].isIndex && path[1].name == "traits" && !path[2].isIndex:
			return propTraitPath, path[2].name, value{}
		}
		return propNone, "", value{}
	}
	node := tree
	for _, seg := range path {
		switch n := node.(type) {
		case map[string]any:
			if seg.isIndex {
				return propNone, "", value{}
			}
			var ok bool
			if node, ok = n[seg.name]; !ok {
				return propNone, "", value{}
			}
		case []any:
			if !seg.isIndex {
				return propNone, "", value{}
			}
			idx := seg.index
			if idx < 0 {
				idx += len(n)
			}
			if idx < 0 || idx >= len(n) {
				return propNone, "", value{}
			}
			node = n[idx]
		default:
			return propNone, "", value{}
		}
	}
	switch n := node.(type) {
	case string:
		return propStatic, "", coerceString(n)
	case bool:
		return propStatic, "", boolValue(n)
	case json.Number:
		return propStatic, "", numberValue(n.String())
	}
	return propNone, "", value{}
}
