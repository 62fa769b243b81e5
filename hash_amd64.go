//go:build amd64

package main

// md5x8 computes the MD5 digests of eight messages of blocks blocks each
// (md5Lanes), digests[i][l] being word i (a, b, c, d) of lane l's.
//
//go:noescape
func md5x8(words *[maxLaneBlocks][16][lanes]uint32, blocks int, table *[68][lanes]uint32, digests *[4][lanes]uint32)

func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)
func xgetbv() (eax uint32)

// haveMD5x8 says the CPU has AVX2 and the operating system saves the
// 256-bit registers across context switches.
var haveMD5x8 = func() bool {
	if maxLeaf, _, _, _ := cpuid(0, 0); maxLeaf < 7 {
		return false
	}
	const osxsave, avx = 1 << 27, 1 << 28
	if _, _, ecx, _ := cpuid(1, 0); ecx&osxsave == 0 || ecx&avx == 0 {
		return false
	}
	const sseAndAVXState = 0b110
	if xgetbv()&sseAndAVXState != sseAndAVXState {
		return false
	}
	const avx2 = 1 << 5
	_, ebx, _, _ := cpuid(7, 0)
	return ebx&avx2 != 0
}()
