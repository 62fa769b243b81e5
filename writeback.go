package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"math/bits"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Trait write-back (write_back.enabled): the identities and traits SDKs
// send reach Flagsmith as they would without the proxy, POST
// {api_url}/identities/ with the server key, less what is transient. The
// request path hashes the identity and its traits, checks a fixed table of
// what was last written (one atomic swap), and only for a change copies the
// body into a bounded queue; one worker writes, paced by
// write_back.max_per_second, retrying a failing upstream with backoff.

const (
	// writeBackQueueLen and writeBackQueueBytes bound the writes waiting
	// for the worker; past either, new ones are dropped and counted.
	writeBackQueueLen   = 1024
	writeBackQueueBytes = 4 << 20
	// writeBackSlots is the size of the memory of recent writes: 8 bytes
	// a slot, 1 MiB in all.
	writeBackSlots = 1 << 17
	// writeBackAttempts bounds the tries of one write.
	writeBackAttempts = 4
	// maxWriteBackBackoff caps the wait between tries.
	maxWriteBackBackoff = 30 * time.Second
)

// Why a write was not made, as /metrics names it.
const (
	wbDropQueueFull = iota
	wbDropFailed
	wbDropRefused
	wbDropShutdown
)

var writeBackDropReasons = [...]string{"queue_full", "failed", "refused", "shutdown"}

// writeBackStats are one environment's write-back counters.
type writeBackStats struct {
	queued, unchanged, transient, written, retries atomic.Uint64
	dropped                                        [len(writeBackDropReasons)]atomic.Uint64
}

// writeBackSeed seeds the hashes of the memory of recent writes: fixed for
// the process, so equal identities and traits always hash alike.
var writeBackSeed = maphash.MakeSeed()

// writeBack is the queue of writes and the memory of recent ones. Safe for
// concurrent use.
type writeBack struct {
	queue   chan writeBackJob
	pending atomic.Int64 // bytes of the bodies in queue
	// memory holds, per slot, the tag of the identity last queued there
	// (the high 32 bits of its hash) and a 32-bit hash of its traits; 0 is
	// an empty slot. An identity lands on the slot its hash names: a newer
	// one on the same slot evicts it, and it is written again at its next
	// request. A traits hash that collides skips one change (one in 2^32).
	memory []atomic.Uint64
}

func newWriteBack() *writeBack {
	return &writeBack{queue: make(chan writeBackJob, writeBackQueueLen), memory: make([]atomic.Uint64, writeBackSlots)}
}

// writeBackJob is one identity to write.
type writeBackJob struct {
	env        *environment
	identifier string
	body       []byte // as the SDK posted it; nil for GET
	slot       uint32
	remembered uint64 // the memory's value for it
}

// offerWriteBack is called by the identity handlers once they have
// answered: it queues the identity for writing unless its traits are those
// last queued. traits is nil for GET. It never blocks, and copies the body
// only for a write it queues.
func (s *server) offerWriteBack(cfg *Config, env *environment, identifier string, body []byte, traits *decodedTraits) {
	if !cfg.WriteBack.Enabled || env.pair.DocumentPath != "" {
		return
	}
	st, wb := &env.writeBack, s.writeBack
	if traits != nil && traits.transient {
		st.transient.Add(1)
		return
	}
	id := maphash.String(writeBackSeed, identifier) ^ env.hashSalt
	slot := uint32(id % writeBackSlots)
	value := id>>32<<32 | uint64(traitsHash(traits))
	if value == 0 {
		value = 1
	}
	var prev uint64
	if traits == nil {
		// A GET sends no traits: the identity is written when it is new
		// to the memory, and its traits are left as they are.
		prev = wb.memory[slot].Load()
		if prev>>32 == id>>32 && prev != 0 {
			st.unchanged.Add(1)
			return
		}
		wb.memory[slot].Store(value)
	} else if prev = wb.memory[slot].Swap(value); prev == value {
		st.unchanged.Add(1)
		return
	}
	n := int64(len(body))
	if wb.pending.Add(n) <= writeBackQueueBytes {
		select {
		case wb.queue <- writeBackJob{env, strings.Clone(identifier), bytes.Clone(body), slot, value}:
			st.queued.Add(1)
			return
		default:
		}
	}
	wb.pending.Add(-n)
	// Not queued: forget it, so that the identity's next request tries
	// again.
	wb.memory[slot].CompareAndSwap(value, prev)
	st.dropped[wbDropQueueFull].Add(1)
}

// traitsHash hashes the traits that would be written (transient ones are
// not), whatever their order.
func traitsHash(traits *decodedTraits) uint32 {
	if traits == nil {
		return 0
	}
	var sum uint64
	for _, t := range traits.sent {
		if t.transient {
			continue
		}
		k := maphash.Bytes(writeBackSeed, t.key)
		v := maphash.Bytes(writeBackSeed, t.value)
		sum += k ^ bits.RotateLeft64(v, 29) ^ 0x9e3779b97f4a7c15
	}
	return uint32(sum ^ sum>>32)
}

// forget clears the memory of a write that was not made.
func (wb *writeBack) forget(job writeBackJob) {
	wb.memory[job.slot].CompareAndSwap(job.remembered, 0)
}

// runWriteBack writes queued identities, one at a time and at most
// write_back.max_per_second, until ctx ends; what is left then is counted
// as dropped.
func (s *server) runWriteBack(ctx context.Context, client *http.Client) {
	wb := s.writeBack
	var last time.Time // when the last request was sent
	failures := 0      // in a row, across writes: a down upstream is not hammered by the next
	defer func() {
		for {
			select {
			case job := <-wb.queue:
				wb.pending.Add(-int64(len(job.body)))
				job.env.writeBack.dropped[wbDropShutdown].Add(1)
			default:
				return
			}
		}
	}()
	for {
		var job writeBackJob
		select {
		case <-ctx.Done():
			return
		case job = <-wb.queue:
			wb.pending.Add(-int64(len(job.body)))
		}
		body, err := writeBackBody(job)
		if err != nil {
			wb.forget(job)
			job.env.writeBack.dropped[wbDropRefused].Add(1)
			continue
		}
		st := &job.env.writeBack
		for attempt := 1; ; attempt++ {
			if !sleepCtx(ctx, time.Until(last.Add(seconds(1/s.config().WriteBack.MaxPerSecond)))) {
				wb.forget(job)
				st.dropped[wbDropShutdown].Add(1)
				return
			}
			last = time.Now()
			_, err := s.postIdentities(ctx, client, job.env, body, false)
			if err == nil {
				failures = 0
				st.written.Add(1)
				break
			}
			if ctx.Err() != nil {
				wb.forget(job)
				st.dropped[wbDropShutdown].Add(1)
				return
			}
			if !retryable(err) {
				wb.forget(job)
				st.dropped[wbDropRefused].Add(1)
				s.log.Error("write-back refused by the upstream; dropped", "env", job.env.pair.ClientSideKey, "error", err.Error())
				break
			}
			failures++
			if attempt == writeBackAttempts {
				wb.forget(job)
				st.dropped[wbDropFailed].Add(1)
				s.log.Error("write-back failed; dropped", "env", job.env.pair.ClientSideKey, "error", err.Error(), "attempts", attempt)
				break
			}
			st.retries.Add(1)
			wait := backoff(failures, maxWriteBackBackoff, job.env.pair.ClientSideKey)
			s.log.Warn("write-back failed; retrying", "env", job.env.pair.ClientSideKey, "error", err.Error(),
				"attempt", attempt, "retry_in", wait.String())
			if !sleepCtx(ctx, wait) {
				wb.forget(job)
				st.dropped[wbDropShutdown].Add(1)
				return
			}
		}
	}
}

// writeBackBody is what is written for a job: the SDK's body less the
// identity's transient flag and its transient traits; for GET, the
// identifier alone.
func writeBackBody(job writeBackJob) ([]byte, error) {
	if job.body == nil {
		return json.Marshal(map[string]string{"identifier": job.identifier})
	}
	fields := map[string]json.RawMessage{}
	if err := json.Unmarshal(job.body, &fields); err != nil {
		return nil, fmt.Errorf("decode identities body: %w", err)
	}
	delete(fields, "transient")
	if raw := fields["traits"]; raw != nil && string(raw) != "null" {
		var traits []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &traits); err != nil {
			return nil, fmt.Errorf("decode traits: %w", err)
		}
		kept := traits[:0]
		for _, t := range traits {
			if !transientValue(t["transient"]) {
				kept = append(kept, t)
			}
		}
		var err error
		if fields["traits"], err = json.Marshal(kept); err != nil {
			return nil, err
		}
	}
	return json.Marshal(fields)
}

// transientValue reports whether a trait's "transient" value (JSON text;
// nil when absent) marks it transient. Flagsmith reads the field as Django
// REST framework's BooleanField does, so the strings and numbers it takes
// for false are false; anything else, true or a value Flagsmith would
// refuse, counts as transient: a trait whose sender may have meant it to
// stay private is never written.
func transientValue(lit []byte) bool {
	s := strings.TrimSpace(string(lit))
	switch s {
	case "", "null", "false", `"f"`, `"F"`, `"n"`, `"N"`, `"no"`, `"No"`, `"NO"`, `"false"`, `"False"`, `"FALSE"`,
		`"off"`, `"Off"`, `"OFF"`, `"0"`:
		return false
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return f != 0
	}
	return true
}
