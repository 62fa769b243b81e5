//go:build !amd64

package main

// Without amd64's vector instructions splits are never queued for the
// lanes (pendingSplits.add): each is hashed by crypto/md5.
var haveMD5x8 = false

func md5x8(*[maxLaneBlocks][16][lanes]uint32, int, *[68][lanes]uint32, *[4][lanes]uint32) {
	panic("md5x8 is amd64 only")
}
