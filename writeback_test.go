package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// writeBackCounts is what /metrics counts of one environment's write-back.
type writeBackCounts struct {
	Queued, Unchanged, Transient, Written, Retries uint64
	Dropped                                        map[string]uint64
}

func writeBackCountsOf(env *environment) writeBackCounts {
	w := &env.writeBack
	c := writeBackCounts{Queued: w.queued.Load(), Unchanged: w.unchanged.Load(), Transient: w.transient.Load(),
		Written: w.written.Load(), Retries: w.retries.Load(), Dropped: map[string]uint64{}}
	for i, r := range writeBackDropReasons {
		if n := w.dropped[i].Load(); n > 0 {
			c.Dropped[r] = n
		}
	}
	return c
}

// writeBackServer is identityWorkersServer with write-back on, writing to
// an in-memory upstream that holds the demo document.
func writeBackServer(t testing.TB, edit func(*Config)) (*testServer, *fakeUpstream) {
	doc := demoDocument(t, verifyUpdatedAt, "Welcome")
	up := newUpstreamInMemory(t)
	up.set(demoServerKey, doc)
	up.answerIdentities(&identityReference{})
	s := identityWorkersServer(t, doc, &http.Client{Transport: up}, func(c *Config) {
		c.WriteBack.Enabled = true
		if edit != nil {
			edit(c)
		}
	})
	return s, up
}

// writtenBodies decodes the bodies of the identities requests the upstream
// received, failing unless each carried the server key.
func writtenBodies(t testing.TB, up *fakeUpstream) []any {
	t.Helper()
	var out []any
	for _, req := range up.identityRequests() {
		if req.key != demoServerKey {
			t.Errorf("write-back sent with key %q; want the server key %q", req.key, demoServerKey)
		}
		var body any
		mustUnmarshal(t, req.body, &body)
		out = append(out, body)
	}
	return out
}

func jsonValue(t testing.TB, s string) any {
	t.Helper()
	var v any
	mustUnmarshal(t, []byte(s), &v)
	return v
}

// TestWriteBackOncePerChange: each identity reaches the upstream once per
// change of its traits, with the server key, as the SDK sent it less what
// is transient; transient identities never do.
func TestWriteBackOncePerChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, up := writeBackServer(t, nil)
		steps := []struct {
			c     verifyCase
			wrote string // the body written, "" for none
		}{
			{verifyCase{demoClientKey, "id-a", `[{"trait_key": "plan", "trait_value": "premium"}, {"trait_key": "logins", "trait_value": 3}]`},
				`{"identifier": "id-a", "traits": [{"trait_key": "plan", "trait_value": "premium"}, {"trait_key": "logins", "trait_value": 3}]}`},
			{verifyCase{demoClientKey, "id-a", `[{"trait_key": "plan", "trait_value": "premium"}, {"trait_key": "logins", "trait_value": 3}]`}, ""},
			// The same traits in another order are no change.
			{verifyCase{demoServerKey, "id-a", `[{"trait_key": "logins", "trait_value": 3}, {"trait_key": "plan", "trait_value": "premium"}]`}, ""},
			{verifyCase{demoClientKey, "id-a", ""}, ""},
			{verifyCase{demoClientKey, "id-a", `[{"trait_key": "plan", "trait_value": "enterprise"}]`},
				`{"identifier": "id-a", "traits": [{"trait_key": "plan", "trait_value": "enterprise"}]}`},
			// A GET creates the identity, as it would at Flagsmith.
			{verifyCase{demoServerKey, "id-b", ""}, `{"identifier": "id-b"}`},
			{verifyCase{demoServerKey, "id-b", ""}, ""},
			// Transient traits are never written; changing only them is no
			// change.
			{verifyCase{demoClientKey, "id-d", `[{"trait_key": "email", "trait_value": "tv-a@example.com", "transient": true},
				{"trait_key": "phone", "trait_value": "tv-555", "transient": "true"}, {"trait_key": "plan", "trait_value": "free", "transient": false}]`},
				`{"identifier": "id-d", "traits": [{"trait_key": "plan", "trait_value": "free", "transient": false}]}`},
			{verifyCase{demoClientKey, "id-d", `[{"trait_key": "email", "trait_value": "tv-b@example.com", "transient": true},
				{"trait_key": "plan", "trait_value": "free"}]`}, ""},
		}
		var want []any
		for _, step := range steps {
			step.c.send(t, s)
			synctest.Wait()
			time.Sleep(time.Second)
			if step.wrote != "" {
				want = append(want, jsonValue(t, step.wrote))
			}
		}
		// A transient identity is never written, whatever its traits.
		transient := `{"identifier": "id-c", "transient": true, "traits": [{"trait_key": "plan", "trait_value": "premium"}]}`
		if rec := callHandler(t, s.handler(), "POST", "/api/v1/identities/", withKey(demoClientKey), transient); rec.Code != http.StatusOK {
			t.Fatalf("POST transient identity = %d %s", rec.Code, rec.Body)
		}
		synctest.Wait()
		time.Sleep(time.Second)

		if diff := cmp.Diff(want, writtenBodies(t, up)); diff != "" {
			t.Errorf("bodies written (-want +got):\n%s", diff)
		}
		wantCounts := writeBackCounts{Queued: 4, Written: 4, Unchanged: 5, Transient: 1, Dropped: map[string]uint64{}}
		if diff := cmp.Diff(wantCounts, writeBackCountsOf(s.env(t, demoClientKey))); diff != "" {
			t.Errorf("counts (-want +got):\n%s", diff)
		}
		if out := s.logs.String(); strings.Contains(out, "tv-") {
			t.Errorf("log holds a trait value:\n%s", out)
		}
	})
}

// TestWriteBackPaced: writes leave at write_back.max_per_second at most.
func TestWriteBackPaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, up := writeBackServer(t, func(c *Config) { c.WriteBack.MaxPerSecond = 2 })
		start := time.Now()
		for i := range 5 {
			verifyCase{demoClientKey, fmt.Sprintf("id-%d", i), `[]`}.send(t, s)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		var at []time.Duration
		for _, req := range up.identityRequests() {
			at = append(at, req.at.Sub(start))
		}
		if diff := cmp.Diff(pollerSeconds(0, 0.5, 1, 1.5, 2), at); diff != "" {
			t.Errorf("writes at (-want +got):\n%s", diff)
		}
	})
}

// TestWriteBackFailingUpstream: a failing upstream is retried with backoff
// (about 1, 2, 4 s), a bounded number of times; the write is then dropped
// and counted, and the identity's next request tries again. A refused body
// (a 4xx) is not retried.
func TestWriteBackFailingUpstream(t *testing.T) {
	t.Run("failing", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s, up := writeBackServer(t, nil)
			up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
				return r.URL.Path == identitiesPath && failWith(http.StatusServiceUnavailable)(w, r, n)
			})
			start := time.Now()
			c := verifyCase{demoClientKey, "id-a", `[{"trait_key": "plan", "trait_value": "premium"}]`}
			c.send(t, s)
			time.Sleep(time.Minute)
			synctest.Wait()
			var at []time.Duration
			for _, req := range up.identityRequests() {
				at = append(at, req.at.Sub(start))
			}
			if len(at) != writeBackAttempts {
				t.Fatalf("tries at %v; want %d", at, writeBackAttempts)
			}
			for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
				if gap := at[i+1] - at[i]; gap < want*8/10 || gap > want {
					t.Errorf("try %d came %v after the one before; want within [%v, %v] (tries at %v)", i+2, gap, want*8/10, want, at)
				}
			}
			want := writeBackCounts{Queued: 1, Retries: writeBackAttempts - 1, Dropped: map[string]uint64{"failed": 1}}
			if diff := cmp.Diff(want, writeBackCountsOf(s.env(t, demoClientKey))); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
			s.logs.mustHave(t, logRecord{level: "ERROR", msg: "write-back failed; dropped", env: demoClientKey, err: "503"})

			// Forgotten: the next request queues it again, and the upstream,
			// still failing, is not hammered: the backoff goes on from where
			// it was.
			c.send(t, s)
			time.Sleep(time.Minute)
			synctest.Wait()
			reqs := up.identityRequests()
			if len(reqs) < writeBackAttempts+2 {
				t.Fatalf("%d tries; want the second write tried at least twice", len(reqs))
			}
			if gap := reqs[writeBackAttempts+1].at.Sub(reqs[writeBackAttempts].at); gap < 6*time.Second {
				t.Errorf("second write retried %v after its first try; want the backoff to go on (>= 6.4 s)", gap)
			}
			if got := s.env(t, demoClientKey).writeBack.queued.Load(); got != 2 {
				t.Errorf("queued = %d; want 2", got)
			}
		})
	})
	t.Run("recovering", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s, up := writeBackServer(t, nil)
			up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
				return r.URL.Path == identitiesPath && n < 2 && failWith(http.StatusBadGateway)(w, r, n)
			})
			verifyCase{demoClientKey, "id-a", `[]`}.send(t, s)
			time.Sleep(time.Minute)
			synctest.Wait()
			want := writeBackCounts{Queued: 1, Written: 1, Retries: 2, Dropped: map[string]uint64{}}
			if diff := cmp.Diff(want, writeBackCountsOf(s.env(t, demoClientKey))); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
		})
	})
	t.Run("refused", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s, up := writeBackServer(t, nil)
			up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
				return r.URL.Path == identitiesPath && failWith(http.StatusBadRequest)(w, r, n)
			})
			verifyCase{demoClientKey, "id-a", `[]`}.send(t, s)
			time.Sleep(time.Minute)
			synctest.Wait()
			if n := len(up.identityRequests()); n != 1 {
				t.Errorf("%d tries of a refused write; want 1", n)
			}
			want := writeBackCounts{Queued: 1, Dropped: map[string]uint64{"refused": 1}}
			if diff := cmp.Diff(want, writeBackCountsOf(s.env(t, demoClientKey))); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
		})
	})
}

// TestWriteBackQueueBounds: while the upstream does not answer, the queue
// holds at most writeBackQueueLen writes and writeBackQueueBytes of bodies;
// the rest are dropped and counted, and forgotten so that they are tried
// again.
func TestWriteBackQueueBounds(t *testing.T) {
	hanging := func(up *fakeUpstream) {
		up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
			return r.URL.Path == identitiesPath && hang(w, r, n)
		})
	}
	t.Run("count", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s, up := writeBackServer(t, func(c *Config) { c.PollTimeout = 3600 })
			hanging(up)
			n := writeBackQueueLen + 10
			for i := range n {
				verifyCase{demoClientKey, fmt.Sprintf("id-%d", i), `[]`}.send(t, s)
				synctest.Wait()
			}
			want := writeBackCounts{Queued: uint64(writeBackQueueLen + 1), Dropped: map[string]uint64{"queue_full": 9}}
			if diff := cmp.Diff(want, writeBackCountsOf(s.env(t, demoClientKey))); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
		})
	})
	t.Run("bytes", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s, up := writeBackServer(t, func(c *Config) { c.PollTimeout = 3600 })
			hanging(up)
			var traits []string
			for i := range 30 {
				traits = append(traits, fmt.Sprintf(`{"trait_key": "k%d", "trait_value": %q}`, i, strings.Repeat("x", 1900)))
			}
			list := "[" + strings.Join(traits, ",") + "]"
			const n = 100
			for i := range n {
				verifyCase{demoClientKey, fmt.Sprintf("id-%d", i), list}.send(t, s)
				synctest.Wait()
			}
			got := writeBackCountsOf(s.env(t, demoClientKey))
			if got.Queued+got.Dropped["queue_full"] != n || got.Dropped["queue_full"] == 0 {
				t.Errorf("counts %+v; want %d queued or dropped, some dropped", got, n)
			}
			if p := s.writeBack.pending.Load(); p > writeBackQueueBytes {
				t.Errorf("pending bytes = %d; want at most %d", p, writeBackQueueBytes)
			}
			// A dropped write was forgotten: asked again, it is not
			// "unchanged".
			verifyCase{demoClientKey, fmt.Sprintf("id-%d", n-1), list}.send(t, s)
			if got := s.env(t, demoClientKey).writeBack.unchanged.Load(); got != 0 {
				t.Errorf("unchanged = %d after a dropped identity came again; want 0", got)
			}
		})
	})
}

// TestWriteBackOff: with write-back off, identity requests write nothing.
func TestWriteBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, up := writeBackServer(t, func(c *Config) { c.WriteBack.Enabled = false })
		verifyCase{demoClientKey, "id-a", `[{"trait_key": "plan", "trait_value": "premium"}]`}.send(t, s)
		verifyCase{demoClientKey, "id-b", ""}.send(t, s)
		time.Sleep(time.Minute)
		synctest.Wait()
		if reqs := up.identityRequests(); len(reqs) != 0 {
			t.Errorf("upstream received %d identities requests with write-back off; want 0", len(reqs))
		}
	})
}

// TestWriteBackBody: the body written is the SDK's less the identity's
// transient flag and its transient traits, as Flagsmith reads "transient".
func TestWriteBackBody(t *testing.T) {
	tests := []struct {
		name, sent, want string
	}{
		{"GET", "", `{"identifier": "u"}`},
		{"no traits", `{"identifier": "u"}`, `{"identifier": "u"}`},
		{"null traits", `{"identifier": "u", "traits": null}`, `{"identifier": "u", "traits": null}`},
		{"kept as sent", `{"identifier": "u", "traits": [{"trait_key": "a", "trait_value": 1.50}]}`,
			`{"identifier": "u", "traits": [{"trait_key": "a", "trait_value": 1.50}]}`},
		{"transient identity flag false dropped", `{"identifier": "u", "transient": false}`, `{"identifier": "u"}`},
		{"transient traits", `{"identifier": "u", "traits": [
			{"trait_key": "a", "trait_value": 1, "transient": true},
			{"trait_key": "b", "trait_value": 2, "transient": "True"},
			{"trait_key": "c", "trait_value": 3, "transient": 1},
			{"trait_key": "d", "trait_value": 4, "transient": "yes"},
			{"trait_key": "e", "trait_value": 5, "transient": false},
			{"trait_key": "f", "trait_value": 6, "transient": null},
			{"trait_key": "g", "trait_value": 7, "transient": "no"}]}`,
			`{"identifier": "u", "traits": [{"trait_key": "e", "trait_value": 5, "transient": false},
			{"trait_key": "f", "trait_value": 6, "transient": null}, {"trait_key": "g", "trait_value": 7, "transient": "no"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := writeBackJob{identifier: "u"}
			if tt.sent != "" {
				job.body = []byte(tt.sent)
			}
			got, err := writeBackBody(job)
			if err != nil {
				t.Fatalf("writeBackBody(%s) = %v", tt.sent, err)
			}
			var gotV, wantV any
			dec := json.NewDecoder(bytes.NewReader(got))
			dec.UseNumber()
			if err := dec.Decode(&gotV); err != nil {
				t.Fatalf("writeBackBody(%s) = %s, not JSON: %v", tt.sent, got, err)
			}
			dec = json.NewDecoder(strings.NewReader(tt.want))
			dec.UseNumber()
			if err := dec.Decode(&wantV); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantV, gotV); diff != "" {
				t.Errorf("writeBackBody(%s) (-want +got):\n%s", tt.sent, diff)
			}
		})
	}
}

// TestWriteBackLatency measures what write-back costs SDK requests when
// the upstream is slow (2 s an answer) or failing: the p99 of
// writeBackLatencyRequests identity requests, each a new identity (so
// each offers a write), against the same server without write-back. The
// bound is generous (timing on a shared machine); a write on the request
// path would take the upstream's 2 s.
func TestWriteBackLatency(t *testing.T) {
	doc := demoDocument(t, verifyUpdatedAt, "Welcome")
	up := newUpstream(t)
	up.set(demoServerKey, doc)
	up.answerIdentities(&identityReference{})
	var upstreamFailing atomic.Bool
	up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
		if r.URL.Path != identitiesPath {
			return false
		}
		if upstreamFailing.Load() {
			return failWith(http.StatusServiceUnavailable)(w, r, n)
		}
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
			return true
		}
		return false
	})
	body := `{"identifier": %q, "traits": [{"trait_key": "plan", "trait_value": "premium"}, {"trait_key": "country", "trait_value": "GB"},
		{"trait_key": "logins", "trait_value": 150}, {"trait_key": "beta_tester", "trait_value": "true"}, {"trait_key": "app_version", "trait_value": "2.1.0"}]}`
	p99 := func(t *testing.T, writeBack, failing bool) time.Duration {
		upstreamFailing.Store(failing)
		s := identityWorkersServer(t, doc, pollClient(t), func(c *Config) {
			c.APIURL = up.apiURL
			c.WriteBack.Enabled = writeBack
			c.WriteBack.MaxPerSecond = maxWriteBackMaxPerSecond
		})
		s.listen(t, nil)
		// A request that waited on the upstream would fail here at once,
		// rather than make the test wait 2 s a request.
		s.client.Timeout = time.Second
		lat := make([]time.Duration, writeBackLatencyRequests)
		for i := range lat {
			start := time.Now()
			resp, _ := httpDo(t, s.client, "POST", s.url+"/api/v1/identities/", demoClientKey, fmt.Sprintf(body, fmt.Sprintf("latency-%d", i)))
			lat[i] = time.Since(start)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("POST identities = %d", resp.StatusCode)
			}
		}
		if writeBack && s.env(t, demoClientKey).writeBack.queued.Load() == 0 {
			t.Fatal("no write was queued: the measurement would not measure write-back")
		}
		slices.Sort(lat)
		return lat[len(lat)*99/100]
	}
	var without, slow, failing time.Duration
	t.Run("without", func(t *testing.T) { without = p99(t, false, false) })
	t.Run("slow upstream", func(t *testing.T) { slow = p99(t, true, false) })
	t.Run("failing upstream", func(t *testing.T) { failing = p99(t, true, true) })
	t.Logf("p99 of %d identity requests: without write-back %v; with write-back, upstream answering in 2 s %v, upstream failing %v",
		writeBackLatencyRequests, without, slow, failing)
	bound := max(3*without, without+20*time.Millisecond)
	for _, m := range []struct {
		name string
		p99  time.Duration
	}{{"slow", slow}, {"failing", failing}} {
		if m.p99 > bound {
			t.Errorf("p99 with write-back to a %s upstream = %v; want at most %v (without: %v)", m.name, m.p99, bound, without)
		}
	}
}

// writeBackLatencyRequests is how many requests TestWriteBackLatency
// measures each way.
const writeBackLatencyRequests = 2000

// TestHandUpstreamCheap: what an identity request pays for shadow
// verification and write-back when they have nothing to send: no
// allocation, whether they are off, the traits are unchanged, or the
// sample is over the rate.
func TestHandUpstreamCheap(t *testing.T) {
	body := []byte(`{"identifier": "id-a", "traits": [{"trait_key": "plan", "trait_value": "premium"}]}`)
	for _, tt := range []struct {
		name string
		edit func(*Config)
	}{
		{"off", func(*Config) {}},
		{"write-back, unchanged traits", func(c *Config) { c.WriteBack.Enabled = true }},
		{"verify, over the rate", func(c *Config) { c.Verify.SampleRate, c.Verify.MaxPerSecond = 1, minVerifyMaxPerSecond }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, withPairs(demoPair), withUpstream(newUpstream(t)), tt.edit)
			ref, _ := s.lookup(demoClientKey)
			var traits decodedTraits
			if _, err := decodeIdentityBody(body, &traits, identityLimits{maxTraits: 10, maxTraitKeyLength: 10}); err != nil {
				t.Fatal(err)
			}
			s.handUpstream(ref, "id-a", body, &traits) // the first is queued, or sampled
			if n := testing.AllocsPerRun(100, func() { s.handUpstream(ref, "id-a", body, &traits) }); n != 0 {
				t.Errorf("handUpstream allocates %v times a request; want 0", n)
			}
		})
	}
}

// TestWriteBackShutdown: writes still queued when the proxy stops are
// counted as dropped, not lost silently.
func TestWriteBackShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		doc := demoDocument(t, verifyUpdatedAt, "Welcome")
		up := newUpstreamInMemory(t)
		up.set(demoServerKey, doc)
		up.answerIdentities(&identityReference{})
		up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
			return r.URL.Path == identitiesPath && hang(w, r, n)
		})
		s := newTestServer(t, withPairs(demoPair), func(c *Config) { c.WriteBack.Enabled, c.PollTimeout = true, 3600 })
		s.publishDoc(t, demoClientKey, doc)
		ctx, cancel := context.WithCancel(context.Background())
		done := s.startIdentityWorkers(ctx, &http.Client{Transport: up})
		for i := range 5 {
			verifyCase{demoClientKey, fmt.Sprintf("id-%d", i), `[]`}.send(t, s)
		}
		synctest.Wait()
		cancel()
		<-done
		want := writeBackCounts{Queued: 5, Dropped: map[string]uint64{"shutdown": 5}}
		if diff := cmp.Diff(want, writeBackCountsOf(s.env(t, demoClientKey))); diff != "" {
			t.Errorf("counts (-want +got):\n%s", diff)
		}
	})
}
