package main

import (
	"cmp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// semver is a parsed semantic version. Numbers are kept as ASCII digit
// strings because Python's are unbounded; nothing else is allocated for a
// version written in ASCII, since traits are parsed per request.
type semver struct {
	major, minor, patch string
	pre                 string // dot-separated identifiers; empty for a release
	build               string // empty when absent
}

// parseSemver parses strictly as python-semver's Version.parse does:
// MAJOR.MINOR.PATCH, optional -prerelease and +build, no leading zeros.
// Its regular expression's \d is any Unicode decimal digit (after a leading
// ASCII digit in a number), and its $ also matches before a final newline.
func parseSemver(s string) (semver, bool) {
	s = strings.TrimSuffix(s, "\n")
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
	v.major, v.minor, v.patch = asciiDigits(v.major), asciiDigits(v.minor), asciiDigits(v.patch)
	v.pre, v.build = pre, build
	return v, true
}

// isNumericIdent reports whether p is "0" or a number with no leading zero:
// an ASCII 1-9, then decimal digits of any script.
func isNumericIdent(p string) bool {
	return p == "0" || (p != "" && p[0] >= '1' && p[0] <= '9' && (len(p) == 1 || allDecimal(p[1:])))
}

// validIdents checks dot-separated identifiers. A build identifier is ASCII
// letters, digits and hyphens; a prerelease one is a number, or decimal
// digits of any script followed by a letter or hyphen and then ASCII
// letters, digits and hyphens.
func validIdents(s string, prerelease bool) bool {
	for rest, more := s, true; more; {
		var id string
		id, rest, more = strings.Cut(rest, ".")
		if id == "" {
			return false
		}
		if prerelease {
			if isNumericIdent(id) {
				continue
			}
			id = strings.TrimLeftFunc(id, isDecimal)
			if id == "" || !isAlnumOrHyphen(id[0]) {
				return false
			}
		}
		for i := 0; i < len(id); i++ {
			if !isAlnumOrHyphen(id[i]) {
				return false
			}
		}
	}
	return true
}

func isAlnumOrHyphen(c byte) bool {
	return isDigit(c) || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isDecimal is Python's idea of a decimal digit (\d, str.isdigit on what a
// version may hold): Unicode category Nd.
func isDecimal(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= '0' && r <= '9'
	}
	return unicode.Is(unicode.Nd, r)
}

// allDecimal reports whether s is non-empty and all decimal digits.
func allDecimal(s string) bool {
	for _, r := range s {
		if !isDecimal(r) {
			return false
		}
	}
	return s != ""
}

// compareNumeric orders two numbers written in ASCII digits without
// leading zeros.
func compareNumeric(a, b string) int {
	if len(a) != len(b) {
		return cmp.Compare(len(a), len(b))
	}
	return strings.Compare(a, b)
}

// compareSemver orders versions as python-semver does: numbers, then a
// release above any pre-release, then pre-release identifiers one by one
// (numbers below text), then the one with more identifiers. Build is
// ignored.
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
	moreA, moreB := true, true
	for moreA && moreB {
		var x, y string
		x, restA, moreA = strings.Cut(restA, ".")
		y, restB, moreB = strings.Cut(restB, ".")
		xNum, yNum := allDecimal(x), allDecimal(y)
		var c int
		switch {
		case xNum && yNum:
			c = compareNumeric(asciiDigits(x), asciiDigits(y)) // no leading zeros: validated
		case xNum:
			c = -1
		case yNum:
			c = 1
		default:
			c = strings.Compare(x, y) // code point order, as Python compares str
		}
		if c != 0 {
			return c
		}
	}
	switch {
	case moreA:
		return 1
	case moreB:
		return -1
	}
	return 0
}
