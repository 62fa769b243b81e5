package main

import (
	"hash/fnv"
	"testing"
	"time"
)

// TestBackoff: the wait doubles from a second until it reaches the limit,
// spread within [0.8, 1] of it (never above the limit) by a jitter that is
// the key's FNV-1a hash, the same for the same key in every loop and process.
func TestBackoff(t *testing.T) {
	for _, key := range []string{"", "BmXh8kQv3TzLp2Wn9RcYaE", "env" + "analytics", "é"} {
		h := fnv.New32a()
		_, _ = h.Write([]byte(key))
		want := float64(h.Sum32()%1000) / 1000
		if got := jitterFraction(key); got != want {
			t.Errorf("jitterFraction(%q) = %v; want hash/fnv's %v", key, got, want)
		}
	}
	const limit = 30 * time.Second
	key := "BmXh8kQv3TzLp2Wn9RcYaE"
	spread := 0.8 + 0.2*jitterFraction(key)
	for n, base := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, 32 * time.Second} {
		want := min(time.Duration(float64(base)*spread), limit)
		if got := backoff(n+1, limit, key); got != want {
			t.Errorf("backoff(%d, %v) = %v; want %v", n+1, limit, got, want)
		}
	}
	if a, b := backoff(3, limit, "env-a"), backoff(3, limit, "env-b"); a == b {
		t.Errorf("backoff is %v for two environments; want their jitters to differ", a)
	}
}
