package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// conditionHolds compiles a one-condition segment and reports whether it
// matches an identity with the given traits (JSON values); nil traits means
// no identity at all.
func conditionHolds(t testing.TB, op, property, value string, traits map[string]string) bool {
	t.Helper()
	ctx := evalContext{
		Environment: environmentContext{Key: "envkey", Name: "Production"},
		Features:    ordered[featureContext]{{Key: "f", Value: featureContext{Key: "1", Name: "f", Value: json.RawMessage(`"default"`)}}},
		Segments: ordered[segmentContext]{{Key: "7", Value: segmentContext{
			Key: "7", Name: "s",
			Rules: []ruleContext{{Type: "ALL", Conditions: []conditionContext{{Property: property, Operator: op, Value: json.RawMessage(value)}}}},
		}}},
	}
	e, err := compileContext(&ctx, nil)
	if err != nil {
		t.Fatalf("compileContext: %v", err)
	}
	var id *identity
	if traits != nil {
		id = &identity{identifier: "user-1"}
		if v, ok := traits["identifier"]; ok {
			id.identifier = v
		}
		for k, v := range traits {
			if k != "identifier" {
				id.traits = append(id.traits, trait{key: k, value: valueFromJSON(json.RawMessage(v))})
			}
		}
	}
	return len(e.result(id).Segments) == 1
}

func TestOperators(t *testing.T) {
	tr := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name, reason    string
		op, prop, value string
		traits          map[string]string
		want            bool
	}{
		// Booleans: any operand but False/false casts to true.
		{"bool-true-eq-true", "bool cast", "EQUAL", "b", `"true"`, tr("b", "true"), true},
		{"bool-true-eq-True", "bool cast", "EQUAL", "b", `"True"`, tr("b", "true"), true},
		{"bool-true-eq-False", "bool cast", "EQUAL", "b", `"False"`, tr("b", "true"), false},
		{"bool-false-eq-false", "bool cast", "EQUAL", "b", `"false"`, tr("b", "false"), true},
		{"bool-false-eq-anything", "any other string is true", "EQUAL", "b", `"no"`, tr("b", "false"), false},
		{"bool-true-gt-false", "bools order as ints", "GREATER_THAN", "b", `"false"`, tr("b", "true"), true},
		{"bool-contains", "contains on a bool raises in Python", "CONTAINS", "b", `"true"`, tr("b", "true"), false},
		{"string-true-is-not-bool", "the string 'true' stays a string", "EQUAL", "b", `"True"`, tr("b", `"true"`), false},

		// Numeric strings are coerced before comparing.
		{"numeric-string-int", "'42' becomes 42", "EQUAL", "n", `"42"`, tr("n", `"42"`), true},
		{"numeric-string-gt", "10 > 9 as numbers, not text", "GREATER_THAN", "n", `"9"`, tr("n", `"10"`), true},
		{"int-trait-float-operand", "int('42.0') fails", "EQUAL", "n", `"42.0"`, tr("n", `"42"`), false},
		{"int-operand-whitespace", "int(' 42 ') is 42", "EQUAL", "n", `" 42 "`, tr("n", "42"), true},
		{"int-operand-underscore", "int('4_2') is 42", "EQUAL", "n", `"4_2"`, tr("n", "42"), true},
		{"float-string", "'-4.2' becomes a float", "EQUAL", "n", `"-4.20"`, tr("n", `"-4.2"`), true},
		{"plus-sign-stays-text", "'+42' is not coerced", "EQUAL", "n", `"42"`, tr("n", `"+42"`), false},
		{"plus-sign-text-equal", "'+42' compares as text", "EQUAL", "n", `"+42"`, tr("n", `"+42"`), true},
		{"exponent-stays-text", "'1e5' is not coerced", "EQUAL", "n", `"100000"`, tr("n", `"1e5"`), false},
		{"space-stays-text", "' 42' is text, and ' ' sorts before '0'", "LESS_THAN", "n", `"0"`, tr("n", `" 42"`), true},
		{"json-int-vs-float-operand", "an int trait will not take 5.0", "EQUAL", "n", `"5.0"`, tr("n", "5"), false},
		{"json-float-vs-int-operand", "a float trait takes 5", "EQUAL", "n", `"5"`, tr("n", "5.0"), true},
		{"float-operand-exponent", "float('1e2') is 100", "EQUAL", "n", `"1e2"`, tr("n", "100.0"), true},
		{"int-not-castable", "int('abc') fails", "NOT_EQUAL", "n", `"abc"`, tr("n", "5"), false},
		{"string-order", "text compares by code point", "LESS_THAN", "s", `"abd"`, tr("s", `"abc"`), true},
		{"gte-equal", "inclusive bound", "GREATER_THAN_INCLUSIVE", "n", `"21"`, tr("n", "21"), true},
		{"lte", "inclusive bound", "LESS_THAN_INCLUSIVE", "n", `"20"`, tr("n", "21"), false},
		{"not-equal-missing", "a missing trait never matches", "NOT_EQUAL", "n", `"1"`, tr(), false},
		{"null-trait-is-unset", "null is not set", "EQUAL", "n", `"None"`, tr("n", "null"), false},
		{"null-operand-is-None", "str(None) is 'None'", "EQUAL", "s", `null`, tr("s", `"None"`), true},
		{"big-int", "integers beyond 64 bits", "GREATER_THAN", "n", `"1"`, tr("n", `"123456789012345678901234567890"`), true},

		// Semantic versions.
		{"semver-minor-numeric", "1.10.3 > 1.9.12", "GREATER_THAN", "v", `"1.9.12:semver"`, tr("v", `"1.10.3"`), true},
		{"semver-prerelease-below-release", "2.0.0-beta.2 < 2.0.0", "LESS_THAN", "v", `"2.0.0:semver"`, tr("v", `"2.0.0-beta.2"`), true},
		{"semver-prerelease-order", "beta.2 > beta.1", "GREATER_THAN", "v", `"2.0.0-beta.1:semver"`, tr("v", `"2.0.0-beta.2"`), true},
		{"semver-prerelease-longer", "alpha < alpha.1", "LESS_THAN", "v", `"1.0.0-alpha.1:semver"`, tr("v", `"1.0.0-alpha"`), true},
		{"semver-numeric-below-alpha", "1 < alpha", "LESS_THAN", "v", `"1.0.0-alpha:semver"`, tr("v", `"1.0.0-1"`), true},
		{"semver-numeric-identifiers", "beta.11 > beta.2", "GREATER_THAN", "v", `"1.0.0-beta.2:semver"`, tr("v", `"1.0.0-beta.11"`), true},
		{"semver-build-ignored", "build metadata does not order", "EQUAL", "v", `"1.0.0:semver"`, tr("v", `"1.0.0+build.5"`), true},
		{"semver-not-equal", "a real semver comparison", "NOT_EQUAL", "v", `"1.0.0:semver"`, tr("v", `"1.0.1"`), true},
		{"semver-partial-trait", "1.2 is not a version", "EQUAL", "v", `"1.2.0:semver"`, tr("v", `"1.2"`), false},
		{"semver-v-prefix", "v1.2.3 is not a version", "EQUAL", "v", `"1.2.3:semver"`, tr("v", `"v1.2.3"`), false},
		{"semver-leading-zero", "01.2.3 is not a version", "EQUAL", "v", `"1.2.3:semver"`, tr("v", `"01.2.3"`), false},
		{"semver-bad-operand", "an invalid operand never matches", "NOT_EQUAL", "v", `"1.2:semver"`, tr("v", `"1.2.3"`), false},
		{"semver-int-trait", "an int trait cannot take a semver operand", "EQUAL", "v", `"1.0.0:semver"`, tr("v", "1"), false},
		{"semver-contains", "no containment for versions", "CONTAINS", "v", `"1.0.0:semver"`, tr("v", `"1.0.0"`), false},

		// Containment.
		{"contains", "substring", "CONTAINS", "s", `"lo w"`, tr("s", `"hello world"`), true},
		{"contains-int", "ints have no substrings", "CONTAINS", "s", `"2"`, tr("s", "123"), false},
		{"not-contains", "substring absent", "NOT_CONTAINS", "s", `"x"`, tr("s", `"abc"`), true},
		{"not-contains-int", "NOT_CONTAINS needs a string", "NOT_CONTAINS", "s", `"x"`, tr("s", "5"), false},
		{"not-contains-missing", "a missing trait never matches", "NOT_CONTAINS", "s", `"x"`, tr(), false},

		// Regular expressions match from the start only.
		{"regex-anchored-start", "re.match anchors at the start", "REGEX", "s", `"user"`, tr("s", `"xuser"`), false},
		{"regex-not-anchored-end", "but not at the end", "REGEX", "s", `"user"`, tr("s", `"user1"`), true},
		{"regex-full", "a realistic pattern", "REGEX", "s", `".*@example\\.com$"`, tr("s", `"a@example.com"`), true},
		{"regex-invalid", "an invalid pattern never matches", "REGEX", "s", `"[unclosed"`, tr("s", `"[unclosed"`), false},
		{"regex-alternation-anchored", "each branch anchored", "REGEX", "s", `"a|b"`, tr("s", `"xb"`), false},
		{"regex-bool", "str(True)", "REGEX", "s", `"True"`, tr("s", "true"), true},
		{"regex-float-repr", "str(1.0) is '1.0'", "REGEX", "s", `"1\\.0$"`, tr("s", "1.0"), true},
		{"regex-coerced-int", "'0100' becomes 100", "REGEX", "s", `"100$"`, tr("s", `"0100"`), true},

		// IN lists.
		{"in-comma", "comma list", "IN", "c", `"gb,fr"`, tr("c", `"gb"`), true},
		{"in-case-sensitive", "exact strings", "IN", "c", `"gb,fr"`, tr("c", `"GB"`), false},
		{"in-no-trim", "items are not trimmed", "IN", "c", `"gb, fr"`, tr("c", `"fr"`), false},
		{"in-json-array", "a JSON array string", "IN", "c", `"[\"gb\",\"fr\"]"`, tr("c", `"fr"`), true},
		{"in-malformed-bracket", "falls back to commas", "IN", "c", `"[gb,fr"`, tr("c", `"[gb"`), true},
		{"in-int-trait", "ints compare by decimal string", "IN", "c", `"41,42"`, tr("c", `"42"`), true},
		{"in-int-normalised", "'007' becomes 7", "IN", "c", `"007"`, tr("c", `"007"`), false},
		{"in-int-normalised-7", "'007' becomes 7", "IN", "c", `"7"`, tr("c", `"007"`), true},
		{"in-json-numbers", "JSON numbers become their str", "IN", "c", `"[1,2]"`, tr("c", "1"), true},
		{"in-bool-never", "booleans never match", "IN", "c", `"True,true"`, tr("c", "true"), false},
		{"in-float-never", "floats never match", "IN", "c", `"1.5"`, tr("c", "1.5"), false},
		{"in-empty-item", "an empty item matches an empty string", "IN", "c", `",a"`, tr("c", `""`), true},
		{"in-array-value", "a list operand (context format)", "IN", "c", `["a","b"]`, tr("c", `"b"`), true},
		{"in-null-operand", "a null operand never matches", "IN", "c", `null`, tr("c", `"None"`), false},

		// Modulo.
		{"modulo", "4 % 2 == 0", "MODULO", "n", `"2|0"`, tr("n", "4"), true},
		{"modulo-float", "3 % 2.5 == 0.5", "MODULO", "n", `"2.5|0.5"`, tr("n", "3"), true},
		{"modulo-negative", "Python's -1 % 3 is 2", "MODULO", "n", `"3|2"`, tr("n", "-1"), true},
		{"modulo-bool", "True is 1", "MODULO", "n", `"3|1"`, tr("n", "true"), true},
		{"modulo-bad-operand", "x is not a number", "MODULO", "n", `"x|1"`, tr("n", "4"), false},
		{"modulo-zero-divisor", "division by zero never matches", "MODULO", "n", `"0|0"`, tr("n", "4"), false},
		{"modulo-three-parts", "needs exactly two parts", "MODULO", "n", `"2|0|1"`, tr("n", "4"), false},
		{"modulo-string-trait", "needs a number", "MODULO", "n", `"2|0"`, tr("n", `"abc"`), false},
		{"modulo-numeric-string", "'4' is coerced", "MODULO", "n", `"2|0"`, tr("n", `"4"`), true},

		// Presence.
		{"is-set", "present", "IS_SET", "p", `null`, tr("p", `"x"`), true},
		{"is-set-null", "null is absent", "IS_SET", "p", `null`, tr("p", "null"), false},
		{"is-not-set", "absent", "IS_NOT_SET", "p", `null`, tr(), true},
		{"is-not-set-no-identity", "holds without an identity", "IS_NOT_SET", "p", `null`, nil, true},

		// JSONPath properties.
		{"path-identifier", "$.identity.identifier", "EQUAL", "$.identity.identifier", `"bob"`, tr("identifier", "bob"), true},
		{"path-identifier-coerced", "an identifier '42' is the int 42", "GREATER_THAN", "$.identity.identifier", `"41"`, tr("identifier", "42"), true},
		{"path-key", "$.identity.key defaults to env_identifier", "EQUAL", "$.identity.key", `"envkey_user-1"`, tr(), true},
		{"path-environment", "static paths read the document", "EQUAL", "$.environment.name", `"Production"`, nil, true},
		{"path-feature-value", "the context's own features", "EQUAL", "$.features.f.value", `"default"`, nil, true},
		{"path-trait", "dotted trait", "EQUAL", "$.identity.traits.plan", `"pro"`, tr("plan", `"pro"`), true},
		{"path-bracket-single", "bracketed name with a space", "EQUAL", "$.identity.traits['user type']", `"admin"`, tr("user type", `"admin"`), true},
		{"path-bracket-double", "double quotes", "EQUAL", `$.identity.traits["a.b"]`, `"x"`, tr("a.b", `"x"`), true},
		{"path-bracket-escape", "escaped quote", "EQUAL", `$.identity.traits['it\'s']`, `"x"`, tr("it's", `"x"`), true},
		{"path-unicode", "unicode member name", "EQUAL", "$.identity.traits.サイズ", `"L"`, tr("サイズ", `"L"`), true},
		{"path-object-not-set", "a path to an object is not set", "IS_NOT_SET", "$.identity.traits", `null`, tr("a", `"b"`), true},
		{"path-environment-object", "an object is not set", "IS_SET", "$.environment", `null`, tr(), false},
		{"path-missing", "nowhere", "IS_NOT_SET", "$.leads.to.nowhere", `null`, tr(), true},
		{"path-trait-named-like-path", "a trait named like the path wins", "EQUAL", "$.identity.identifier", `"override"`, tr("$.identity.identifier", `"override"`), true},
		{"path-invalid-is-trait", "an invalid path is a trait key", "EQUAL", "$.identity[", `"x"`, tr("$.identity[", `"x"`), true},
		{"path-no-identity", "identity paths need an identity", "IS_SET", "$.identity.identifier", `null`, nil, false},
		{"dollar-without-dot", "$plan is a plain trait key", "EQUAL", "$plan", `"x"`, tr("$plan", `"x"`), true},

		// Percentage split.
		{"split-100", "everyone is at most 100", "PERCENTAGE_SPLIT", "", `"100"`, tr(), true},
		{"split-no-identity", "needs an identity", "PERCENTAGE_SPLIT", "", `"100"`, nil, false},
		{"split-bad-operand", "not a number", "PERCENTAGE_SPLIT", "", `"half"`, tr(), false},
		{"split-trait", "hash of a trait", "PERCENTAGE_SPLIT", "household", `"100"`, tr("household", `"h1"`), true},
		{"split-missing-trait", "no trait, no match", "PERCENTAGE_SPLIT", "household", `"100"`, tr(), false},

		// Unknown operators and rule types never match.
		{"unknown-operator", "never matches", "SOUNDS_LIKE", "s", `"x"`, tr("s", `"x"`), false},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		if seen[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			if got := conditionHolds(t, tc.op, tc.prop, tc.value, tc.traits); got != tc.want {
				t.Errorf("%s %s %s with traits %v = %t; want %t (%s)", tc.prop, tc.op, tc.value, tc.traits, got, tc.want, tc.reason)
			}
		})
	}
}

// fuzzOperators are the operators FuzzConditions picks from: every one the
// proxy knows, and one no engine knows.
var fuzzOperators = append(slices.Clone(operatorNames[opEqual:]), "SOUNDS_LIKE")

func TestOperatorNames(t *testing.T) {
	for op := opEqual; op < numOperators; op++ {
		if name := op.String(); name == "" || parseOperator(name) != op {
			t.Errorf("operator %d is named %q, which parses as %d", op, name, parseOperator(name))
		}
	}
	for _, name := range []string{"", "equal", "SOUNDS_LIKE"} {
		if op := parseOperator(name); op != opUnknown {
			t.Errorf("parseOperator(%q) = %v; want opUnknown", name, op)
		}
	}
}

// Operand forms of FuzzConditions (the low two bits of form).
const (
	operandString = 0 // (and 3) a JSON string, as environment documents give every value
	operandNull   = 1 // JSON null
	operandList   = 2 // a JSON list of strings, the context format's IN value
)

// regexBothDialects matches the patterns on which Python's re and Go's RE2
// agree: literals, ".", groups without "(?" extensions, alternation and the
// greedy and lazy quantifiers (Python 3.11 reads "a*+" as possessive, RE2
// rejects it). Anchors, classes and escapes are left out: "$" and \d differ.
var regexBothDialects = regexp.MustCompile(`^[A-Za-z0-9 ._|()*+?-]*$`)

// FuzzConditions checks one condition of every operator against
// refConditionHolds, the plain model of Flagsmith's Python engine: any
// operand text against any JSON trait value, on a trait key, on a JSONPath
// to it, or (with no property) on the identity key.
func FuzzConditions(f *testing.F) {
	seed := func(op, operand string, form uint8, trait string) {
		f.Add(uint8(slices.Index(fuzzOperators, op)), operand, form, trait)
	}
	seed("EQUAL", "1.2.3:semver", 0, `"1.2.4"`)
	seed("GREATER_THAN", "1.0.0-beta.11:semver", 4, `"1.0.0-beta.2"`)
	seed("CONTAINS", "beta:semver", 0, `"1.0.0-beta+exp"`)
	seed("EQUAL", "1\u0663.0.0:semver", 0, `"13.0.0"`)
	seed("LESS_THAN", "1.0.0-\u0663a:semver", 0, `"1.0.0-1"`)
	seed("REGEX", "(a+)+", 0, `"aaaa"`)
	seed("REGEX", "1.0", 0, `1.0`)
	seed("REGEX", "Tr", 0, `true`)
	seed("IN", "[1,2", 4, `2`)
	seed("IN", "[1.0,NaN,Infinity]", 0, `"nan"`)
	seed("IN", `[["a"],{"k":1}]`, 0, `"['a']"`)
	seed("IN", "a,b", 2, `"b"`)
	seed("IN", "007", 0, `"007"`)
	seed("MODULO", "-3|0", 0, `-9.5`)
	seed("MODULO", "2|1", 0, `true`)
	seed("MODULO", "1e400|nan", 0, `3`)
	seed("PERCENTAGE_SPLIT", "50", 8, ``)
	seed("PERCENTAGE_SPLIT", "50", 0, `1e16`)
	seed("NOT_EQUAL", "-nan", 0, `1.5`)
	seed("EQUAL", "\u0663", 0, `3`)
	seed("EQUAL", "\u001c5\u001f", 0, `5`)
	seed("EQUAL", "1_000", 0, `"1000"`)
	seed("GREATER_THAN", "9223372036854775807", 0, `9223372036854775808`)
	seed("EQUAL", "9223372036854775809", 0, `9223372036854775808`)
	seed("LESS_THAN", "abd", 0, `"abc"`)
	seed("EQUAL", "False", 1, `false`)
	seed("NOT_CONTAINS", "x", 1, `"None"`)
	seed("IS_SET", "", 4, `null`)
	seed("SOUNDS_LIKE", "x", 0, `"x"`)
	f.Fuzz(func(t *testing.T, opIndex uint8, operandText string, form uint8, traitJSON string) {
		op := fuzzOperators[int(opIndex)%len(fuzzOperators)]
		if !utf8.ValidString(operandText) || !utf8.ValidString(traitJSON) {
			return // Python's str holds text; the request decoder refuses other bytes
		}
		if op == "REGEX" && (!regexBothDialects.MatchString(operandText) || strings.Contains(operandText, "(?") ||
			strings.Contains(operandText, "*+") || strings.Contains(operandText, "++") || strings.Contains(operandText, "?+")) {
			return
		}
		var operand any = operandText
		operandJSON := pyJSONString(operandText)
		switch form % 4 {
		case operandString:
		case operandNull:
			operand, operandJSON = nil, "null"
		case operandList:
			if op == "IN" { // only IN takes a list
				items := strings.Split(operandText, ",")
				operand, operandJSON = items, string(mustJSON(t, items))
			}
		}
		property := "a"
		if form&4 != 0 {
			property = "$.identity.traits.a"
		}
		noProperty := form&8 != 0
		if noProperty {
			property = ""
		}

		traits := map[string]string{}
		var trait *pyValue
		if traitJSON != "" {
			if !json.Valid([]byte(traitJSON)) || len(traitJSON) > 1000 {
				return
			}
			v, ok := refContextValue(traitJSON)
			if !ok {
				return // objects and lists: the request decoder refuses them
			}
			traits["a"], trait = traitJSON, &v
		}

		got := conditionHolds(t, op, property, operandJSON, traits)
		want := refConditionHolds(op, noProperty, operand, trait, "7", "envkey_user-1")
		if got != want {
			t.Fatalf("property %q %s %s with trait a=%s: proxy %t, Python engine %t", property, op, operandJSON, traitJSON, got, want)
		}
	})
}

// TestSemverParsedOncePerRequest: conditions that share a request's parsed
// versions (more traits than evalState keeps, every ordering operator)
// answer as each would with a version parsed for it alone.
func TestSemverParsedOncePerRequest(t *testing.T) {
	cc := newConditionCompiler(nil)
	var conds []condition
	traits := []string{"1.2.3", "2.0.0-rc.1", "not a version", "1.2.3+b", "10.0.0", "0.0.1"}
	for tr := range traits {
		for _, op := range []operator{opEqual, opNotEqual, opGreaterThan, opGreaterThanInclusive, opLessThan, opLessThanInclusive, opContains} {
			for _, v := range []string{"1.2.3", "2.0.0-rc.1", "rc.1", "1.2.3+b"} {
				conds = append(conds, cc.condition(conditionContext{
					Property: fmt.Sprintf("v%d", tr), Operator: op.String(), Value: json.RawMessage(strconv.Quote(v + ":semver")),
				}))
			}
		}
	}
	e := &engine{keyPrefix: "env_", traitSlots: cc.slots}
	id := &identity{identifier: "someone"}
	for tr, v := range traits {
		id.traits = append(id.traits, trait{key: fmt.Sprintf("v%d", tr), value: coerceString(v)})
	}
	shared := newEvalState(e, id)
	matched := 0
	for i := range conds {
		alone := newEvalState(e, id)
		want := conds[i].matches(&alone, "seg")
		if got := conds[i].matches(&shared, "seg"); got != want {
			t.Fatalf("condition %d (%s %q): %t with the request's parsed versions, %t alone", i, conds[i].op, conds[i].text, got, want)
		}
		if want {
			matched++
		}
	}
	if matched == 0 || matched == len(conds) {
		t.Fatalf("%d of %d conditions matched: the case tells nothing", matched, len(conds))
	}
}
