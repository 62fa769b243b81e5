#include "textflag.h"

// Eight MD5 computations side by side, one per 32-bit lane of the AVX2
// registers, each over the same number of padded 64-byte blocks: the rounds
// of RFC 1321, with lane-wise instructions.
//
// Y0-Y3 hold a, b, c, d; each step leaves its result in a, and the next
// step takes the registers rotated (d, a, b, c), so the step lines below
// rotate their arguments instead of moving registers.

// a = b + ((a + f(b, c, d) + K[i] + M[g]) <<< s), f in Y4.
#define FINISH(a, b, i, g, s) \
	VPADDD (i*32)(R8), a, a; \
	VPADDD (g*32)(SI), a, a; \
	VPADDD Y4, a, a; \
	VPSLLD $s, a, Y5; \
	VPSRLD $(32-s), a, a; \
	VPOR Y5, a, a; \
	VPADDD b, a, a

// F = (b AND c) OR (NOT b AND d) = d XOR (b AND (c XOR d))
#define STEP1(a, b, c, d, i, g, s) \
	VPXOR c, d, Y4; \
	VPAND b, Y4, Y4; \
	VPXOR d, Y4, Y4; \
	FINISH(a, b, i, g, s)

// G = (b AND d) OR (c AND NOT d) = c XOR (d AND (b XOR c))
#define STEP2(a, b, c, d, i, g, s) \
	VPXOR b, c, Y4; \
	VPAND d, Y4, Y4; \
	VPXOR c, Y4, Y4; \
	FINISH(a, b, i, g, s)

// H = b XOR c XOR d
#define STEP3(a, b, c, d, i, g, s) \
	VPXOR b, c, Y4; \
	VPXOR d, Y4, Y4; \
	FINISH(a, b, i, g, s)

// I = c XOR (b OR NOT d); Y15 is all ones.
#define STEP4(a, b, c, d, i, g, s) \
	VPXOR Y15, d, Y4; \
	VPOR b, Y4, Y4; \
	VPXOR c, Y4, Y4; \
	FINISH(a, b, i, g, s)

// func md5x8(words *[maxLaneBlocks][16][8]uint32, blocks int, table *[68][8]uint32, digests *[4][8]uint32)
TEXT ·md5x8(SB), NOSPLIT, $0-32
	MOVQ words+0(FP), SI
	MOVQ blocks+8(FP), CX
	MOVQ table+16(FP), R8
	MOVQ digests+24(FP), DI
	VPCMPEQD Y15, Y15, Y15
	VMOVDQU (64*32)(R8), Y0
	VMOVDQU (65*32)(R8), Y1
	VMOVDQU (66*32)(R8), Y2
	VMOVDQU (67*32)(R8), Y3

block:
	VMOVDQU Y0, Y6
	VMOVDQU Y1, Y7
	VMOVDQU Y2, Y8
	VMOVDQU Y3, Y9

	STEP1(Y0, Y1, Y2, Y3, 0, 0, 7)
	STEP1(Y3, Y0, Y1, Y2, 1, 1, 12)
	STEP1(Y2, Y3, Y0, Y1, 2, 2, 17)
	STEP1(Y1, Y2, Y3, Y0, 3, 3, 22)
	STEP1(Y0, Y1, Y2, Y3, 4, 4, 7)
	STEP1(Y3, Y0, Y1, Y2, 5, 5, 12)
	STEP1(Y2, Y3, Y0, Y1, 6, 6, 17)
	STEP1(Y1, Y2, Y3, Y0, 7, 7, 22)
	STEP1(Y0, Y1, Y2, Y3, 8, 8, 7)
	STEP1(Y3, Y0, Y1, Y2, 9, 9, 12)
	STEP1(Y2, Y3, Y0, Y1, 10, 10, 17)
	STEP1(Y1, Y2, Y3, Y0, 11, 11, 22)
	STEP1(Y0, Y1, Y2, Y3, 12, 12, 7)
	STEP1(Y3, Y0, Y1, Y2, 13, 13, 12)
	STEP1(Y2, Y3, Y0, Y1, 14, 14, 17)
	STEP1(Y1, Y2, Y3, Y0, 15, 15, 22)

	STEP2(Y0, Y1, Y2, Y3, 16, 1, 5)
	STEP2(Y3, Y0, Y1, Y2, 17, 6, 9)
	STEP2(Y2, Y3, Y0, Y1, 18, 11, 14)
	STEP2(Y1, Y2, Y3, Y0, 19, 0, 20)
	STEP2(Y0, Y1, Y2, Y3, 20, 5, 5)
	STEP2(Y3, Y0, Y1, Y2, 21, 10, 9)
	STEP2(Y2, Y3, Y0, Y1, 22, 15, 14)
	STEP2(Y1, Y2, Y3, Y0, 23, 4, 20)
	STEP2(Y0, Y1, Y2, Y3, 24, 9, 5)
	STEP2(Y3, Y0, Y1, Y2, 25, 14, 9)
	STEP2(Y2, Y3, Y0, Y1, 26, 3, 14)
	STEP2(Y1, Y2, Y3, Y0, 27, 8, 20)
	STEP2(Y0, Y1, Y2, Y3, 28, 13, 5)
	STEP2(Y3, Y0, Y1, Y2, 29, 2, 9)
	STEP2(Y2, Y3, Y0, Y1, 30, 7, 14)
	STEP2(Y1, Y2, Y3, Y0, 31, 12, 20)

	STEP3(Y0, Y1, Y2, Y3, 32, 5, 4)
	STEP3(Y3, Y0, Y1, Y2, 33, 8, 11)
	STEP3(Y2, Y3, Y0, Y1, 34, 11, 16)
	STEP3(Y1, Y2, Y3, Y0, 35, 14, 23)
	STEP3(Y0, Y1, Y2, Y3, 36, 1, 4)
	STEP3(Y3, Y0, Y1, Y2, 37, 4, 11)
	STEP3(Y2, Y3, Y0, Y1, 38, 7, 16)
	STEP3(Y1, Y2, Y3, Y0, 39, 10, 23)
	STEP3(Y0, Y1, Y2, Y3, 40, 13, 4)
	STEP3(Y3, Y0, Y1, Y2, 41, 0, 11)
	STEP3(Y2, Y3, Y0, Y1, 42, 3, 16)
	STEP3(Y1, Y2, Y3, Y0, 43, 6, 23)
	STEP3(Y0, Y1, Y2, Y3, 44, 9, 4)
	STEP3(Y3, Y0, Y1, Y2, 45, 12, 11)
	STEP3(Y2, Y3, Y0, Y1, 46, 15, 16)
	STEP3(Y1, Y2, Y3, Y0, 47, 2, 23)

	STEP4(Y0, Y1, Y2, Y3, 48, 0, 6)
	STEP4(Y3, Y0, Y1, Y2, 49, 7, 10)
	STEP4(Y2, Y3, Y0, Y1, 50, 14, 15)
	STEP4(Y1, Y2, Y3, Y0, 51, 5, 21)
	STEP4(Y0, Y1, Y2, Y3, 52, 12, 6)
	STEP4(Y3, Y0, Y1, Y2, 53, 3, 10)
	STEP4(Y2, Y3, Y0, Y1, 54, 10, 15)
	STEP4(Y1, Y2, Y3, Y0, 55, 1, 21)
	STEP4(Y0, Y1, Y2, Y3, 56, 8, 6)
	STEP4(Y3, Y0, Y1, Y2, 57, 15, 10)
	STEP4(Y2, Y3, Y0, Y1, 58, 6, 15)
	STEP4(Y1, Y2, Y3, Y0, 59, 13, 21)
	STEP4(Y0, Y1, Y2, Y3, 60, 4, 6)
	STEP4(Y3, Y0, Y1, Y2, 61, 11, 10)
	STEP4(Y2, Y3, Y0, Y1, 62, 2, 15)
	STEP4(Y1, Y2, Y3, Y0, 63, 9, 21)

	VPADDD Y6, Y0, Y0
	VPADDD Y7, Y1, Y1
	VPADDD Y8, Y2, Y2
	VPADDD Y9, Y3, Y3
	ADDQ $(16*32), SI
	DECQ CX
	JNZ block

	VMOVDQU Y0, 0(DI)
	VMOVDQU Y1, 32(DI)
	VMOVDQU Y2, 64(DI)
	VMOVDQU Y3, 96(DI)
	VZEROUPPER
	RET

// func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL subleaf+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET

// func xgetbv() (eax uint32)
TEXT ·xgetbv(SB), NOSPLIT, $0-4
	MOVL $0, CX
	XGETBV
	MOVL AX, eax+0(FP)
	RET
