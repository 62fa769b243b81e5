package main

import (
	"crypto/md5"
	"math"
	"math/big"
	"strconv"
	"testing"
)

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
