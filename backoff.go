package main

import (
	"context"
	"time"
)

// Retry timing shared by every loop that calls the upstream or waits for
// a change: the poller, the upstream stream, the analytics and events
// flushers, trait write-back and the document file watcher.

// sleepCtx sleeps for d (nothing when d <= 0); false once ctx has ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// backoff is the wait after the n-th failure in a row: doubling from a
// second, never above limit, spread by a jitter fixed per key (an
// environment, a relay) so that loops failing together do not retry
// together.
func backoff(n int, limit time.Duration, key string) time.Duration {
	d := time.Second
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = time.Duration(float64(d) * (0.8 + 0.2*jitterFraction(key)))
	return min(d, limit)
}

// jitterFraction is a stable number in [0, 1) derived from the key: its
// 32-bit FNV-1a hash, reduced.
func jitterFraction(key string) float64 {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return float64(h%1000) / 1000
}

// wait sleeps for d or until a refresh is requested; refreshed says which.
// ok is false once ctx has ended. The status page shows when it ends.
func (e *environment) wait(ctx context.Context, d time.Duration) (refreshed, ok bool) {
	e.nextPoll.Store(time.Now().Add(d).UnixNano())
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false, false
	case <-timer.C:
		return false, true
	case <-e.refresh:
		return true, true
	}
}
