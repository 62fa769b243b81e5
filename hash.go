package main

import (
	"crypto/md5"
	"encoding/binary"
)

// This file is Flagsmith's percentage hash, which multivariate splits and
// PERCENTAGE_SPLIT conditions share. (Hashing eight splits at once with
// AVX2 was tried and removed: under 10% end to end, bench/RESULTS.md.)

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
		if p := percentageOf(joined); p != 100 {
			return p
		}
	}
}

// hashJoined is hashPercentage of the ids already joined, "a,b" with a of
// aLen bytes: the callers that hash once per feature build the text once.
func hashJoined(joined []byte, aLen int) float64 {
	if p := percentageOf(joined); p != 100 {
		return p
	}
	return hashPercentage(string(joined[:aLen]), joined[aLen+1:])
}

// percentageOf is one hash of hashPercentage's.
func percentageOf(joined []byte) float64 {
	sum := md5.Sum(joined)
	return percentageOfSum(binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:]))
}

// percentageOfSum maps a digest, as the 128-bit integer hi·2^64 + lo, to
// [0, 100]: reduced modulo 9999 from its two halves instead of byte by byte.
func percentageOfSum(hi, lo uint64) float64 {
	r := ((hi%9999)*pow64Mod9999 + lo%9999) % 9999
	return float64(r) / 9998 * 100
}

// split picks a multivariate value for an identity: the variant whose
// cumulative weight range, walked in priority order, holds the identity's
// percentage for this feature.
func split(f *flagSource, st *evalState) int32 {
	var buf [192]byte
	return pickVariant(f, hashJoined(st.appendHashed(buf[:0], f.key), len(f.key)))
}

// pickVariant is the variant of f whose range holds percentage p.
func pickVariant(f *flagSource, p float64) int32 {
	start := 0.0
	for i := range f.variants {
		limit := f.variants[i].weight + start
		if start <= p && p < limit {
			return int32(i)
		}
		start = limit
	}
	return controlValue
}
