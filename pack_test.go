package main

import (
	"encoding/json"
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
