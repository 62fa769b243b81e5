package main

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestSlabSlicesStayApart: slices taken from a slab have exactly the room
// asked for, so filling one never writes into the next.
func TestSlabSlicesStayApart(t *testing.T) {
	var s slab[int]
	var taken [][]int
	for n := 1; n <= slabBlock; n++ {
		sl := s.take(n)
		if len(sl) != 0 || cap(sl) != n {
			t.Fatalf("take(%d): len %d, cap %d", n, len(sl), cap(sl))
		}
		for i := 0; i < n; i++ {
			sl = append(sl, n)
		}
		taken = append(taken, sl)
	}
	for i, sl := range taken {
		for _, v := range sl {
			if v != i+1 {
				t.Fatalf("slice %d holds %d: another slice wrote into it", i, v)
			}
		}
	}
	a, b := s.add(1), s.add(2)
	if *a != 1 || *b != 2 {
		t.Fatalf("add: %d, %d", *a, *b)
	}
}

// TestPackSharesIdenticalBytes: after compiling, equal names and values
// point at one copy, and the engine still finds every feature by name.
func TestPackSharesIdenticalBytes(t *testing.T) {
	raw := scaleDocument(t, demoDocument(t, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), "hi"), 3, 10, false)
	snap, err := newSnapshot(raw)
	if err != nil {
		t.Fatal(err)
	}
	e := snap.engine
	byValue := map[string]json.RawMessage{}
	for _, f := range e.sources {
		if prev, ok := byValue[string(f.value)]; ok && &prev[0] != &f.value[0] {
			t.Fatalf("value %s is held twice", f.value)
		}
		byValue[string(f.value)] = f.value
	}
	for i, f := range e.features {
		if got, ok := e.featureIndex[f.name]; !ok || got != i {
			t.Fatalf("featureIndex[%q] = %d, %t; want %d", f.name, got, ok, i)
		}
	}
}

// TestRepeatedOperandsCompiledOnce: conditions with the same regex or the
// same IN list (as a JSON array or as its text) share one compiled form, and
// an invalid regex stays one that never matches.
func TestRepeatedOperandsCompiledOnce(t *testing.T) {
	cc := newConditionCompiler(nil)
	compile := func(op, value string) *operand {
		return cc.condition(conditionContext{Property: "plan", Operator: op, Value: json.RawMessage(value)}).more
	}
	re1, re2, other := compile("REGEX", `"^pro"`), compile("REGEX", `"^pro"`), compile("REGEX", `"^free"`)
	if re1.re == nil || re1.re != re2.re || re1.re == other.re {
		t.Errorf("regexes: %p %p %p; want the first two shared, the third its own", re1.re, re2.re, other.re)
	}
	if bad1, bad2 := compile("REGEX", `"("`), compile("REGEX", `"("`); bad1.re != nil || bad2.re != nil {
		t.Errorf("an invalid regex compiled to %v, %v", bad1.re, bad2.re)
	}
	array, text, comma := compile("IN", `["a","b"]`), compile("IN", `"[\"a\",\"b\"]"`), compile("IN", `"a,b,c"`)
	if len(array.inSet) != 2 || reflect.ValueOf(array.inSet).Pointer() != reflect.ValueOf(text.inSet).Pointer() {
		t.Errorf("IN sets %v and %v: want one shared set of 2", array.inSet, text.inSet)
	}
	if len(comma.inSet) != 3 {
		t.Errorf("IN a,b,c: %v", comma.inSet)
	}
	if none := compile("IN", `null`); none.inSet != nil {
		t.Errorf("IN null: %v; want no set", none.inSet)
	}
}
