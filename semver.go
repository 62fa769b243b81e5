package main

import "strings"

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
