package main

import (
	"crypto/md5"
	"encoding/binary"
	"math/bits"
)

// This file is Flagsmith's percentage hash (multivariate splits and
// PERCENTAGE_SPLIT conditions) and the batching of an evaluation's splits.
//
// An identity's multivariate splits each hash "<feature state key>,<identity
// key>" with MD5: a document with a hundred multivariate features costs a
// hundred hashes per identity, the largest single part of evaluating it.
// On amd64 with AVX2 the hashes of one evaluation are gathered
// (pendingSplits) and computed eight at a time by md5x8 (hash_amd64.s),
// one lane per message, in about the time of two single hashes. Elsewhere,
// and for texts too long for the lanes, each is crypto/md5's. It stays
// because the 10x document's identities target (SPEC 8: half the ceiling)
// holds with it and not without (bench/RESULTS.md, 2026-12-07).

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

// lanes is how many messages md5x8 hashes at once.
const lanes = 8

// md5Lanes holds up to eight messages of the same number of blocks, padded
// as MD5 pads them and laid out the way md5x8 reads them: words[k][w][l]
// is word w of block k of lane l's message.
type md5Lanes struct {
	n, blocks int
	words     [maxLaneBlocks][16][lanes]uint32
}

// maxLaneBlocks bounds a lane's message to two MD5 blocks (119 bytes): a
// numeric feature state key and an identity key of up to about 90
// characters. Longer messages are hashed one at a time.
const maxLaneBlocks = 2

// add puts msg in the next lane; false when the lanes are full or msg has
// another number of blocks than the messages already held.
func (m *md5Lanes) add(msg []byte) bool {
	blocks := (len(msg) + 1 + 8 + 63) / 64 // the message, 0x80, its bit length
	if m.n == lanes || blocks > maxLaneBlocks || m.n > 0 && blocks != m.blocks {
		return false
	}
	var padded [maxLaneBlocks * 64]byte
	copy(padded[:], msg)
	padded[len(msg)] = 0x80
	binary.LittleEndian.PutUint64(padded[blocks*64-8:], uint64(len(msg))*8)
	l := m.n
	for k := range blocks {
		for w := range 16 {
			m.words[k][w][l] = binary.LittleEndian.Uint32(padded[k*64+4*w:])
		}
	}
	m.blocks = blocks
	m.n++
	return true
}

// sums returns each lane's digest as a 128-bit big-endian number, hi and
// lo 64 bits, the way percentageOf reads a digest; and empties the lanes.
func (m *md5Lanes) sums(hi, lo *[lanes]uint64) {
	var d [4][lanes]uint32
	md5x8(&m.words, m.blocks, &md5x8Table, &d)
	for l := range m.n {
		// The digest's bytes are a, b, c, d little-endian.
		hi[l] = uint64(bits.ReverseBytes32(d[0][l]))<<32 | uint64(bits.ReverseBytes32(d[1][l]))
		lo[l] = uint64(bits.ReverseBytes32(d[2][l]))<<32 | uint64(bits.ReverseBytes32(d[3][l]))
	}
	m.n, m.blocks = 0, 0
}

// md5x8Table is what md5x8 adds, each value repeated for the eight lanes:
// the 64 round constants of RFC 1321 (rows 0-63), then the initial state
// a, b, c, d (rows 64-67).
var md5x8Table = func() (t [68][lanes]uint32) {
	k := [64]uint32{
		0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee,
		0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
		0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
		0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
		0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa,
		0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
		0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
		0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
		0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
		0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
		0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05,
		0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
		0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039,
		0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
		0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
		0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
	}
	for i, v := range append(k[:], 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476) {
		for l := range lanes {
			t[i][l] = v
		}
	}
	return t
}()

// pendingSplits are the splits of a range of flags not yet hashed: the
// flags they decide (indices in the caller's slice) and their messages.
type pendingSplits struct {
	lanes md5Lanes
	at    [lanes]int32
}

// add queues flag at's split of f; false when the caller must split it
// now: the CPU has no md5x8, or the message does not fit the lanes.
func (p *pendingSplits) add(f *flagSource, st *evalState, at int) bool {
	if !haveMD5x8 || len(f.key)+1+len(st.keyPrefix)+len(st.keyBody) > maxLaneBlocks*64 {
		return false
	}
	var buf [maxLaneBlocks * 64]byte
	if !p.lanes.add(st.appendHashed(buf[:0], f.key)) {
		return false
	}
	p.at[p.lanes.n-1] = int32(at)
	return true
}

func (p *pendingSplits) full() bool { return p.lanes.n == lanes }

// settle hashes the queued splits and sets their flags' variants.
func (p *pendingSplits) settle(flags []evalFlag, st *evalState) {
	if p.lanes.n == 0 {
		return
	}
	n := p.lanes.n
	var hi, lo [lanes]uint64
	p.lanes.sums(&hi, &lo)
	for l := range n {
		fl := &flags[p.at[l]]
		pct := percentageOfSum(hi[l], lo[l])
		if pct == 100 { // hashPercentage hashes a longer text then
			var buf [maxLaneBlocks * 64]byte
			pct = hashPercentage(fl.source.key, st.appendIdentityKey(buf[:0]))
		}
		fl.variant = pickVariant(fl.source, pct)
	}
}
