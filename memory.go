package main

import (
	"os"
	"runtime/debug"
	runtimemetrics "runtime/metrics"
	"sync"
)

// Go's collector lets the heap grow to twice what was live at the last
// collection (GOGC=100) before collecting again. Most of what is live here
// is the environments' snapshots, which stay live until their next document:
// with large documents, doubling them buys nothing but resident memory. So
// once the live heap is large, the proxy keeps the room to grow at
// gcHeadroom bytes instead, never less than minGCPercent of the live heap
// (collections stay rare: requests allocate little), never more than Go's
// default. An operator's GOGC wins. It is what keeps a large document's RSS
// within 4x its size (bench/RESULTS.md, 2026-12-07: 28-29 MiB against 34-36
// with GOGC=100 for a 7.6 MiB document).
const (
	gcHeadroom   = 2 << 20
	minGCPercent = 25
)

var gcTuning struct {
	sync.Mutex
	percent int
}

// tuneGC sets the collector's percentage for the live heap as of the last
// collection. Publishing a snapshot calls it; a large publish collects first.
func tuneGC() {
	if _, chosen := os.LookupEnv("GOGC"); chosen {
		return
	}
	sample := []runtimemetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	runtimemetrics.Read(sample)
	if sample[0].Value.Kind() != runtimemetrics.KindUint64 {
		return
	}
	percent := gcPercentFor(sample[0].Value.Uint64())
	gcTuning.Lock()
	defer gcTuning.Unlock()
	if percent != gcTuning.percent {
		debug.SetGCPercent(percent)
		gcTuning.percent = percent
	}
}

// gcPercentFor is the GOGC that gives a live heap of live bytes about
// gcHeadroom bytes to grow, within [minGCPercent, 100].
func gcPercentFor(live uint64) int {
	if live == 0 {
		return 100
	}
	return min(100, max(minGCPercent, int(100*gcHeadroom/live)))
}
