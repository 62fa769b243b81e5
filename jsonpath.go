package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

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
// next document, so it is resolved here; tree returns a top-level member of
// that context as JSON values (a nil tree: there is no context).
func resolvePath(path []pathSegment, tree func(member string) any) (propertyKind, string, value) {
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
	if len(path) == 0 || path[0].isIndex || tree == nil {
		return propNone, "", value{}
	}
	node := tree(path[0].name)
	for _, seg := range path[1:] {
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
