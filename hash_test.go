package main

import (
	"crypto/md5"
	"encoding/binary"
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestMD5LanesMatchCryptoMD5: every lane's digest from md5x8 is
// crypto/md5's, for messages of every length that fits one or two blocks,
// with the lanes full and partly used.
func TestMD5LanesMatchCryptoMD5(t *testing.T) {
	if !haveMD5x8 {
		t.Skip("no AVX2 here: md5x8 never runs (splits are hashed by crypto/md5)")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for size := 0; size <= maxLaneBlocks*64-9; size++ {
		for _, n := range []int{1, 3, lanes} {
			var m md5Lanes
			msgs := make([][]byte, n)
			for l := range msgs {
				msgs[l] = make([]byte, size)
				for i := range msgs[l] {
					msgs[l][i] = byte(rng.IntN(256))
				}
				if !m.add(msgs[l]) {
					t.Fatalf("add: a %d-byte message did not fit lane %d", size, l)
				}
			}
			var hi, lo [lanes]uint64
			m.sums(&hi, &lo)
			for l, msg := range msgs {
				want := md5.Sum(msg)
				if hi[l] != binary.BigEndian.Uint64(want[:8]) || lo[l] != binary.BigEndian.Uint64(want[8:]) {
					t.Fatalf("%d bytes, lane %d of %d: %016x%016x; want %x", size, l, n, hi[l], lo[l], want)
				}
			}
		}
	}
}

// TestMD5LanesRefuse: the lanes take no ninth message, no message longer
// than two blocks hold, and none of another block count than the first.
func TestMD5LanesRefuse(t *testing.T) {
	var m md5Lanes
	if m.add(make([]byte, maxLaneBlocks*64-8)) {
		t.Error("took a message of three blocks")
	}
	if !m.add(make([]byte, 55)) || m.add(make([]byte, 56)) {
		t.Error("a one-block message then a two-block one: want the first taken, the second refused")
	}
	for m.n < lanes {
		if !m.add([]byte("x")) {
			t.Fatalf("lane %d refused", m.n)
		}
	}
	if m.add([]byte("x")) {
		t.Error("took a ninth message")
	}
}

// TestBatchedSplitsMatchSingleOnes: the variants an evaluation picks with
// its splits hashed together are those split picks one at a time, for
// identity keys that fit the lanes and ones that do not, and for more
// multivariate features than one batch holds.
func TestBatchedSplitsMatchSingleOnes(t *testing.T) {
	if !haveMD5x8 {
		t.Skip("no AVX2 here: splits are never batched (md5x8 is tested against crypto/md5 above)")
	}
	snap, err := newSnapshot(scaleDocument(t, benchDocument(t), 3, 10, false))
	if err != nil {
		t.Fatal(err)
	}
	e := snap.engine
	multivariate := 0
	for i := range e.features {
		if len(e.features[i].variants) > 0 {
			multivariate++
		}
	}
	if multivariate <= lanes {
		t.Fatalf("%d multivariate features: the document must fill more than one batch", multivariate)
	}
	for _, identifier := range []string{"u", "user_42", string(make([]byte, 60)), string(make([]byte, 200))} {
		id := &identity{identifier: identifier}
		flags := e.evaluate(nil, id, nil)
		st := newEvalState(e, id)
		for _, fl := range flags {
			if len(fl.source.variants) == 0 {
				continue
			}
			if want := split(fl.source, &st); fl.variant != want {
				t.Fatalf("identifier of %d bytes, %s: variant %d; want %d", len(identifier), fl.source.name, fl.variant, want)
			}
		}
	}
}

// TestPercentageSplitBoundary checks that the threshold is inclusive, at the
// identity's exact percentage.
func TestPercentageSplitBoundary(t *testing.T) {
	p := hashPercentage("7", []byte("envkey_user-1"))
	exact := strconv.FormatFloat(p, 'g', -1, 64)
	below := strconv.FormatFloat(math.Nextafter(p, 0), 'g', -1, 64)
	if !conditionHolds(t, "PERCENTAGE_SPLIT", "", `"`+exact+`"`, map[string]string{}) {
		t.Errorf("split at exactly %s = false; want true", exact)
	}
	if conditionHolds(t, "PERCENTAGE_SPLIT", "", `"`+below+`"`, map[string]string{}) {
		t.Errorf("split just below %s = true; want false", exact)
	}
}

// referencePercentage is the hash written the slow, obvious way, with a
// big.Int, as Flagsmith's Python does.
func referencePercentage(ids []string, iterations int) float64 {
	joined := ""
	for i := 0; i < iterations; i++ {
		for j, id := range ids {
			if i > 0 || j > 0 {
				joined += ","
			}
			joined += id
		}
	}
	sum := md5.Sum([]byte(joined))
	n := new(big.Int).SetBytes(sum[:])
	r := new(big.Int).Mod(n, big.NewInt(9999)).Int64()
	return float64(r) / 9998 * 100
}

func TestHashPercentage(t *testing.T) {
	for i := 0; i < 2000; i++ {
		a, b := strconv.Itoa(i), "identity-"+strconv.Itoa(i*7)
		if got, want := hashPercentage(a, []byte(b)), referencePercentage([]string{a, b}, 1); got != want && want != 100 {
			t.Fatalf("hashPercentage(%q, %q) = %v; want %v", a, b, got, want)
		}
		if got, want := hashJoined([]byte(a+","+b), len(a)), hashPercentage(a, []byte(b)); got != want {
			t.Fatalf("hashJoined(%q) = %v; hashPercentage gives %v", a+","+b, got, want)
		}
	}
}

// TestHashExactly100 finds ids whose first hash is exactly 100 and checks
// that they are hashed again with the ids repeated.
func TestHashExactly100(t *testing.T) {
	found := 0
	for i := 0; i < 200000 && found < 3; i++ {
		b := strconv.Itoa(i)
		if referencePercentage([]string{"seg", b}, 1) != 100 {
			continue
		}
		found++
		want := referencePercentage([]string{"seg", b}, 2)
		for it := 3; want == 100; it++ {
			want = referencePercentage([]string{"seg", b}, it)
		}
		if got := hashPercentage("seg", []byte(b)); got != want {
			t.Errorf("hashPercentage(seg, %s) = %v; want the re-hash %v", b, got, want)
		}
		if got := hashJoined([]byte("seg,"+b), len("seg")); got != want {
			t.Errorf("hashJoined(seg,%s) = %v; want the re-hash %v", b, got, want)
		}
	}
	if found == 0 {
		t.Fatal("no ids hashing to exactly 100 found; widen the search")
	}
}
