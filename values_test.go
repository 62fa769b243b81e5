package main

import (
	"math"
	"testing"
)

func TestPyFloatRepr(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{1, "1.0"}, {1e16, "1e+16"}, {1e15, "1000000000000000.0"}, {0.0001, "0.0001"},
		{0.00001, "1e-05"}, {1.5e-7, "1.5e-07"}, {math.Copysign(0, -1), "-0.0"}, {123.456, "123.456"},
		{1e22, "1e+22"}, {1.2345678901234567e+16, "1.2345678901234568e+16"}, {0.1, "0.1"},
		{math.NaN(), "nan"}, {math.Inf(1), "inf"}, {math.Inf(-1), "-inf"}, {-2.5, "-2.5"}, {12.34, "12.34"},
	}
	for _, tc := range tests {
		if got := string(appendPyFloat(nil, tc.in)); got != tc.want {
			t.Errorf("appendPyFloat(%v) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestPyNumberParsing(t *testing.T) {
	ints := []struct {
		in string
		ok bool
	}{{"42", true}, {" 42 ", true}, {"+42", true}, {"-0", true}, {"1_000", true}, {"1__0", false}, {"_1", false}, {"1_", false}, {"4.0", false}, {"", false}, {"0x10", false}, {"٣", true}, {"1_٣", true}, {" ٣\u00a0", true}, {"\x1c5", false}}
	for _, tc := range ints {
		if _, ok := pyInt(tc.in); ok != tc.ok {
			t.Errorf("pyInt(%q) ok = %t; want %t", tc.in, ok, tc.ok)
		}
	}
	floats := []struct {
		in   string
		want float64
		ok   bool
	}{{"1e5", 1e5, true}, {" 2.5 ", 2.5, true}, {"inf", math.Inf(1), true}, {"-Infinity", math.Inf(-1), true}, {"1_0.5", 10.5, true}, {"0x1p3", 0, false}, {"1,5", 0, false}, {".5", 0.5, true}, {"5.", 5, true}, {"", 0, false}, {"1e400", math.Inf(1), true}}
	for _, tc := range floats {
		got, ok := pyFloat(tc.in)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("pyFloat(%q) = %v, %t; want %v, %t", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
