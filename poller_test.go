package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// pollerUpdatedAt is the updated_at of the test documents unless a test
// says otherwise, and pollerIMS the If-Modified-Since it must produce.
const (
	pollerUpdatedAt = "2026-11-20T10:00:00.123456Z"
	pollerIMS       = "Fri, 20 Nov 2026 10:00:00 GMT"
)

// pollerFlags is the body GET /api/v1/flags/ answers for a testDocument.
func pollerFlags(value string) string {
	return `[{"feature":{"id":1,"name":"banner","type":"STANDARD"},"enabled":true,"feature_state_value":"` + value + `"}]`
}

// pollerFlagsBody is the status and body of GET /api/v1/flags/ for key.
func pollerFlagsBody(t testing.TB, s *testServer, key string) (int, string) {
	t.Helper()
	rec := callHandler(t, s.handler(), http.MethodGet, "/api/v1/flags/", withKey(key), "")
	return rec.Code, rec.Body.String()
}

// pollerWantFlags fails unless key is served flags with body want.
func pollerWantFlags(t testing.TB, s *testServer, key, want string) {
	t.Helper()
	if code, body := pollerFlagsBody(t, s, key); code != http.StatusOK || body != want {
		t.Errorf("GET /api/v1/flags/ (%s) = %d %s; want 200 %s", key, code, body, want)
	}
}

// pollerWantNoFlags fails unless key is answered 503: no document yet.
func pollerWantNoFlags(t testing.TB, s *testServer, key string) {
	t.Helper()
	if code, body := pollerFlagsBody(t, s, key); code != http.StatusServiceUnavailable {
		t.Errorf("GET /api/v1/flags/ (%s) = %d %s; want 503", key, code, body)
	}
}

func pollerMustPoll(t testing.TB, s *testServer, env *environment, client *http.Client) {
	t.Helper()
	if err := s.pollNow(context.Background(), env, client); err != nil {
		t.Fatalf("poll of %s = %v; want nil", env.pair.ClientSideKey, err)
	}
}

// TestPollConditionalGet follows one environment through a first fetch, a
// 304 and a changed document, against an upstream that sends each kind of
// validator: the poller sends back what the upstream sent.
func TestPollConditionalGet(t *testing.T) {
	doc1 := testDocument(clientKeyA, pollerUpdatedAt, "blue")
	doc2 := testDocument(clientKeyA, "2026-11-21T08:30:15Z", "green")
	tests := []struct {
		name       string
		validators upstreamValidators
		// The conditions of the polls after doc1 and after doc2.
		wantINM1, wantIMS1, wantINM2, wantIMS2 string
	}{
		{name: "etag", validators: upstreamETag,
			wantINM1: pollerETag(doc1), wantINM2: pollerETag(doc2)},
		{name: "last-modified, as Flagsmith", validators: upstreamLastModified,
			wantIMS1: pollerIMS, wantIMS2: "Sat, 21 Nov 2026 08:30:15 GMT"},
		{name: "neither: the document's updated_at", validators: upstreamNoValidators,
			wantIMS1: pollerIMS, wantIMS2: "Sat, 21 Nov 2026 08:30:15 GMT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t)
			up.sendValidators(tt.validators)
			up.set(serverKeyA, doc1)
			s := newTestServer(t, withUpstream(up), withPairs(pairA))
			client, env := pollClient(t), s.environments()[0]
			wantConditions := func(step, inm, ims string) {
				t.Helper()
				h := up.last(t)
				if got := h.Get("If-None-Match"); got != inm {
					t.Errorf("%s: If-None-Match = %q; want %q", step, got, inm)
				}
				if got := h.Get("If-Modified-Since"); got != ims {
					t.Errorf("%s: If-Modified-Since = %q; want %q", step, got, ims)
				}
				if got := h.Get("X-Environment-Key"); got != serverKeyA {
					t.Errorf("%s: X-Environment-Key = %q; want the server key %q", step, got, serverKeyA)
				}
			}

			pollerWantNoFlags(t, s, clientKeyA)
			pollerMustPoll(t, s, env, client)
			pollerWantFlags(t, s, clientKeyA, pollerFlags("blue"))
			wantConditions("first poll (no document held)", "", "")
			s.logs.mustHave(t, logRecord{level: "INFO", msg: "environment updated", env: clientKeyA})

			// 304: the held document stays, as the very same snapshot.
			held := env.snap.Load()
			pollerMustPoll(t, s, env, client)
			if n := up.notModified(); n != 1 {
				t.Errorf("the upstream answered %d 304s to the second poll; want 1", n)
			}
			wantConditions("second poll", tt.wantINM1, tt.wantIMS1)
			if env.snap.Load() != held {
				t.Error("a 304 replaced the held snapshot; want it kept")
			}
			pollerWantFlags(t, s, clientKeyA, pollerFlags("blue"))

			// A changed document is published, and the next poll asks from it.
			up.set(serverKeyA, doc2)
			pollerMustPoll(t, s, env, client)
			pollerWantFlags(t, s, clientKeyA, pollerFlags("green"))
			pollerMustPoll(t, s, env, client)
			wantConditions("after a new document", tt.wantINM2, tt.wantIMS2)
			if n := up.notModified(); n != 2 {
				t.Errorf("the upstream answered %d 304s; want 2", n)
			}
			pollerWantFlags(t, s, clientKeyA, pollerFlags("green"))
			s.logs.noServerKeys(t)
		})
	}
}

// pollerETag is the fake upstream's ETag of doc.
func pollerETag(doc []byte) string {
	sum := sha256.Sum256(doc)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}

// TestPollIfModifiedSince checks the HTTP date built from the forms of
// updated_at that Flagsmith's Python API can produce, for an upstream that
// sends no validator of its own.
func TestPollIfModifiedSince(t *testing.T) {
	tests := []struct {
		name, updatedAt, want string
	}{
		{"utc with microseconds", "2026-11-20T10:00:00.123456Z", "Fri, 20 Nov 2026 10:00:00 GMT"},
		{"positive offset", "2026-11-20T12:00:00+02:00", "Fri, 20 Nov 2026 10:00:00 GMT"},
		{"negative offset crossing midnight", "2026-11-19T23:30:00-05:00", "Fri, 20 Nov 2026 04:30:00 GMT"},
		{"no zone is utc", "2026-11-20T10:00:00.5", "Fri, 20 Nov 2026 10:00:00 GMT"},
		{"python isoformat with a space", "2026-11-20 10:00:00.123456+00:00", "Fri, 20 Nov 2026 10:00:00 GMT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t)
			up.sendValidators(upstreamNoValidators)
			up.set(serverKeyA, testDocument(clientKeyA, tt.updatedAt, "blue"))
			s := newTestServer(t, withUpstream(up), withPairs(pairA))
			client := pollClient(t)
			pollerMustPoll(t, s, s.environments()[0], client)
			up.setFault(failWith(http.StatusNotModified))
			pollerMustPoll(t, s, s.environments()[0], client)
			if got := up.last(t).Get("If-Modified-Since"); got != tt.want {
				t.Errorf("updated_at %q: If-Modified-Since = %q; want %q", tt.updatedAt, got, tt.want)
			}
		})
	}
}

// pollerHugeBody is the size of the runaway body: above maxDocumentBytes,
// streamed so the test never holds it.
const pollerHugeBody = 50 << 20

// pollerStreamHuge writes a JSON string of pollerHugeBody bytes, chunk by
// chunk, and reports how much the client let it write.
func pollerStreamHuge(sent chan<- int64) fault {
	return func(w http.ResponseWriter, r *http.Request, _ int) bool {
		var n int64
		defer func() {
			select {
			case sent <- n:
			default:
			}
		}()
		w.Header().Set("Content-Type", "application/json")
		chunk := bytes.Repeat([]byte("a"), 64<<10)
		m, err := io.WriteString(w, `{"api_key":"`)
		n += int64(m)
		for err == nil && n < pollerHugeBody {
			m, err = w.Write(chunk)
			n += int64(m)
		}
		return true
	}
}

// TestPollFaults checks that each kind of upstream fault makes the poll fail,
// is logged with the environment's client key, and leaves the last good
// document served unchanged.
func TestPollFaults(t *testing.T) {
	good := testDocument(clientKeyA, pollerUpdatedAt, "blue")
	hugeSent := make(chan int64, 4)
	tests := []struct {
		name    string
		fault   fault   // nil: the upstream is down (closed)
		timeout float64 // api_poll_timeout_seconds for the faulty polls, when not the default
		wantErr string  // part of the poll's error and of the logged error
		wantIs  error   // when set, errors.Is(err, wantIs) must hold
		// rejected: the key was refused, which is logged at ERROR.
		rejected bool
		// check, when set, runs after the failed poll.
		check func(t testing.TB)
	}{
		{name: "connection refused", wantErr: "connection refused"},
		{
			name: "timeout, slow headers", timeout: 0.2, wantErr: "deadline exceeded", wantIs: context.DeadlineExceeded,
			fault: hang,
		},
		{
			name: "timeout, slow body", timeout: 0.2, wantErr: "deadline exceeded", wantIs: context.DeadlineExceeded,
			fault: func(w http.ResponseWriter, r *http.Request, _ int) bool {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"api_key": "`+clientKeyA)
				http.NewResponseController(w).Flush()
				return hang(w, r, 0)
			},
		},
		{name: "status 500", fault: failWith(http.StatusInternalServerError), wantErr: "500"},
		{name: "status 502", fault: failWith(http.StatusBadGateway), wantErr: "502"},
		{name: "status 404", fault: failWith(http.StatusNotFound), wantErr: "404"},
		{name: "status 401", fault: failWith(http.StatusUnauthorized), wantErr: "401", rejected: true},
		{name: "status 403", fault: failWith(http.StatusForbidden), wantErr: "403", rejected: true},
		{name: "invalid JSON", fault: answerWith([]byte("<html>captive portal</html>")), wantErr: "parse environment document"},
		{name: "truncated JSON", fault: answerWith(good[:len(good)/2]), wantErr: "unexpected EOF"},
		{name: "empty 200 body", fault: answerWith(nil), wantErr: "parse environment document"},
		{name: "JSON array", fault: answerWith([]byte("[]")), wantErr: "parse environment document"},
		{name: "empty object", fault: answerWith([]byte("{}")), wantErr: "api_key"},
		{name: "api_key a number", fault: answerWith([]byte(`{"api_key": 5}`)), wantErr: "parse environment document"},
		{name: "no project", fault: answerWith([]byte(`{"api_key": "` + clientKeyA + `"}`)), wantErr: "project"},
		{
			name: "feature without id", wantErr: "feature_states[0]",
			fault: answerWith([]byte(`{"api_key": "` + clientKeyA + `", "project": {}, "feature_states": [{"feature": {"name": "x"}, "django_id": 1}]}`)),
		},
		{
			name: "redirect loop", wantErr: "redirect",
			fault: func(w http.ResponseWriter, r *http.Request, _ int) bool {
				http.Redirect(w, r, r.URL.Path, http.StatusFound)
				return true
			},
		},
		{
			// The timeout only bounds the test: reading 32 MiB under the race
			// detector on a busy machine takes seconds.
			name: "50 MB body", fault: pollerStreamHuge(hugeSent), timeout: 120,
			wantErr: "larger than", wantIs: errDocumentSize,
			check: func(t testing.TB) {
				select {
				case n := <-hugeSent:
					if n >= pollerHugeBody {
						t.Errorf("the upstream wrote all %d bytes; want the read stopped near %d", n, maxDocumentBytes)
					}
				case <-time.After(60 * time.Second):
					t.Fatal("the 50 MB handler did not return after the poll gave up")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t)
			up.set(serverKeyA, good)
			s := newTestServer(t, withUpstream(up), withPairs(pairA))
			client, env := pollClient(t), s.environments()[0]
			pollerMustPoll(t, s, env, client)
			if tt.timeout != 0 {
				// Set after the good poll, so that a loaded machine cannot
				// make that one time out.
				s.config().PollTimeout = tt.timeout
			}
			held := env.snap.Load()
			_, before := pollerFlagsBody(t, s, clientKeyA)

			if tt.fault == nil {
				up.close()
			} else {
				up.setFault(tt.fault)
			}
			err := s.pollNow(context.Background(), env, client)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("pollOnce after the fault = %v; want an error containing %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("pollOnce after the fault = %v; want errors.Is %v", err, tt.wantIs)
			}
			if tt.check != nil {
				tt.check(t)
			}
			if env.snap.Load() != held {
				t.Error("the fault replaced the held snapshot; want the last good one kept")
			}
			pollerWantFlags(t, s, clientKeyA, before)

			// The poll loop logs the failure with the client key.
			stop := s.poll(t, client)
			s.logs.waitFor(t, logRecord{level: "WARN", msg: "poll failed", env: clientKeyA, err: tt.wantErr})
			stop()
			if tt.rejected {
				s.logs.mustHave(t, logRecord{level: "ERROR", msg: "rejected", env: clientKeyA})
			}
			pollerWantFlags(t, s, clientKeyA, before)
			s.logs.noServerKeys(t)
		})
	}
}

// TestPollRejectedKeyMasked checks that the ERROR for a rejected key names
// the server key only masked.
func TestPollRejectedKeyMasked(t *testing.T) {
	up := newUpstream(t)
	up.setFault(failWith(http.StatusUnauthorized))
	s := newTestServer(t, withUpstream(up), withPairs(pairA))
	if err := s.pollNow(context.Background(), s.environments()[0], pollClient(t)); err == nil {
		t.Fatal("pollOnce against a 401 = nil; want an error")
	}
	for _, rec := range s.logs.records(t) {
		if rec["level"] != "ERROR" {
			continue
		}
		if got, want := rec["server_key"], secret(serverKeyA).String(); got != nil && got != want {
			t.Errorf("logged server_key = %v; want the masked %q", got, want)
		}
	}
	s.logs.mustHave(t, logRecord{level: "ERROR", msg: "rejected", env: clientKeyA})
	s.logs.noServerKeys(t)
}

// TestPollNotModifiedWithoutDocument: a 304 is only meaningful for a held
// document; without one it is a failure and publishes nothing.
func TestPollNotModifiedWithoutDocument(t *testing.T) {
	up := newUpstream(t)
	up.setFault(failWith(http.StatusNotModified))
	s := newTestServer(t, withUpstream(up), withPairs(pairA))
	client := pollClient(t)
	err := s.pollNow(context.Background(), s.environments()[0], client)
	if err == nil {
		t.Error("pollOnce answered 304 with no document held = nil; want an error")
	}
	if s.environments()[0].snap.Load() != nil {
		t.Error("a 304 with no document held published a snapshot")
	}
	pollerWantNoFlags(t, s, clientKeyA)
	if code, r := s.readiness(); code != http.StatusServiceUnavailable || r.Reason == nil || *r.Reason != reasonNotUpdated {
		t.Errorf("readiness() = %d %+v; want 503 %q", code, r, reasonNotUpdated)
	}
	s.poll(t, client)
	s.logs.waitFor(t, logRecord{level: "WARN", msg: "poll failed", env: clientKeyA, err: "304"})
}

// TestPollFollowsRedirect: a redirect to a good document is followed and the
// document published.
func TestPollFollowsRedirect(t *testing.T) {
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "blue"))
	s := newTestServer(t, withUpstream(up), withPairs(pairA))
	client, env := pollClient(t), s.environments()[0]
	pollerMustPoll(t, s, env, client)

	// The document has moved: the endpoint redirects to where it now is.
	const moved = "/moved/api/v1/environment-document/"
	green := answerWith(testDocument(clientKeyA, "2026-11-21T00:00:00Z", "green"))
	up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
		if r.URL.Path == documentPath {
			http.Redirect(w, r, moved, http.StatusMovedPermanently)
			return true
		}
		return r.URL.Path == moved && green(w, r, n)
	})
	pollerMustPoll(t, s, env, client)
	pollerWantFlags(t, s, clientKeyA, pollerFlags("green"))
	if got := up.last(t).Get("X-Environment-Key"); got != serverKeyA {
		t.Errorf("redirected request: X-Environment-Key = %q; want %q", got, serverKeyA)
	}
}

// TestPollRedirectToAnotherHost: a redirect to another host is followed,
// but the server key, a secret, is not sent there.
func TestPollRedirectToAnotherHost(t *testing.T) {
	other := newUpstream(t)
	other.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "stolen"))
	up := newUpstream(t)
	up.setFault(func(w http.ResponseWriter, r *http.Request, _ int) bool {
		http.Redirect(w, r, other.apiURL+"/environment-document/", http.StatusFound)
		return true
	})
	s := newTestServer(t, withUpstream(up), withPairs(pairA))
	if err := s.pollNow(t.Context(), s.environments()[0], pollClient(t)); err == nil {
		t.Fatal("pollOnce through a cross-host redirect = nil error; want the other host's 401")
	}
	if got := other.last(t).Get("X-Environment-Key"); got != "" {
		t.Errorf("X-Environment-Key sent to another host = %q; want none", got)
	}
	pollerWantNoFlags(t, s, clientKeyA)
}

// TestPollUnparsableUpdatedAt: a document whose updated_at does not parse is
// still served, but no If-Modified-Since can be built from it.
func TestPollUnparsableUpdatedAt(t *testing.T) {
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, "last tuesday", "blue"))
	s := newTestServer(t, withUpstream(up), withPairs(pairA))
	client, env := pollClient(t), s.environments()[0]
	pollerMustPoll(t, s, env, client)
	pollerWantFlags(t, s, clientKeyA, pollerFlags("blue"))
	s.logs.mustHave(t, logRecord{level: "WARN", msg: "updated_at", env: clientKeyA})

	pollerMustPoll(t, s, env, client)
	if got := up.last(t).Values("If-Modified-Since"); got != nil {
		t.Errorf("after a document with an unparsable updated_at: If-Modified-Since = %q; want none", got)
	}
	pollerWantFlags(t, s, clientKeyA, pollerFlags("blue"))
}

func pollerSeconds(d ...float64) []time.Duration {
	out := make([]time.Duration, len(d))
	for i, s := range d {
		out[i] = seconds(s)
	}
	return out
}

// TestPollIndependence: an environment whose upstream never answers does not
// delay another, which is fetched and refreshed on schedule.
func TestPollIndependence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := newUpstreamInMemory(t)
		up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
			if r.Header.Get("X-Environment-Key") == serverKeyA {
				return hang(w, r, n)
			}
			updated := time.Date(2026, 11, 20, 10, 0, n, 0, time.UTC).Format(time.RFC3339)
			return answerWith(testDocument(clientKeyB, updated, fmt.Sprintf("v%d", n)))(w, r, n)
		})
		start := time.Now()
		s := newTestServer(t, func(c *Config) {
			c.PollFrequency = 10
			c.PollTimeout = 3600 // A's request outlives the test
		})
		s.poll(t, &http.Client{Transport: up})

		synctest.Wait()
		pollerWantFlags(t, s, clientKeyB, pollerFlags("v0"))
		pollerWantNoFlags(t, s, clientKeyA)

		time.Sleep(35 * time.Second)
		synctest.Wait()
		if diff := cmp.Diff(pollerSeconds(0, 10, 20, 30), up.offsets(serverKeyB, start)); diff != "" {
			t.Errorf("B's polls while A hangs (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(pollerSeconds(0), up.offsets(serverKeyA, start)); diff != "" {
			t.Errorf("A's polls (-want +got):\n%s", diff)
		}
		pollerWantFlags(t, s, clientKeyB, pollerFlags("v3"))
		pollerWantNoFlags(t, s, clientKeyA)
		if code, r := s.readiness(); code != http.StatusServiceUnavailable || r.Reason == nil || *r.Reason != reasonNotUpdated {
			t.Errorf("readiness() with A never updated = %d %+v; want 503 %q", code, r, reasonNotUpdated)
		}
	})
}

// TestPollBackoff checks the waits after failures: doubling from about a
// second (a fixed per-environment jitter of at most 20% below), never above
// the poll frequency, back to the poll frequency after a success, and from
// the start again after the next failure.
func TestPollBackoff(t *testing.T) {
	// failing lists which polls fail (by index); the others succeed.
	failing := map[int]bool{0: true, 1: true, 2: true, 3: true, 4: true, 5: true, 6: true, 8: true}
	tests := []struct {
		name string
		freq float64
	}{
		{"default frequency", 10},
		{"frequency 3s", 3},
		{"frequency 7s", 7},
		{"frequency at its minimum, 1s", minPollSeconds},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				up := newUpstreamInMemory(t)
				up.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "blue"))
				up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
					return failing[n] && failWith(http.StatusServiceUnavailable)(w, r, n)
				})
				start := time.Now()
				freq := seconds(tt.freq)
				s := newTestServer(t, withPairs(pairA), func(c *Config) { c.PollFrequency = tt.freq })
				s.poll(t, &http.Client{Transport: up})
				time.Sleep(11*freq + 16*time.Second)
				synctest.Wait()

				at := up.offsets(serverKeyA, start)
				if len(at) < 11 {
					t.Fatalf("polls at %v; want at least 11", at)
				}
				gaps := make([]time.Duration, 10)
				for i := range gaps {
					gaps[i] = at[i+1] - at[i]
				}
				// The first retry waits about a second, or the frequency when
				// that is shorter.
				if lo, hi := min(800*time.Millisecond, freq), min(time.Second, freq); gaps[0] < lo || gaps[0] > hi {
					t.Errorf("first retry after %v; want within [%v, %v] (gaps %v)", gaps[0], lo, hi, gaps)
				}
				const slack = time.Microsecond // float rounding of the jitter
				for i := 1; i < 7; i++ {
					prev, got := gaps[i-1], gaps[i]
					switch {
					case got > freq:
						t.Errorf("retry %d after %v; want at most the poll frequency %v (gaps %v)", i+1, got, freq, gaps)
					case 2*prev <= freq && (got < 2*prev-slack || got > 2*prev+slack):
						t.Errorf("retry %d after %v; want double the previous %v (gaps %v)", i+1, got, prev, gaps)
					case got < prev:
						t.Errorf("retry %d after %v; want no shorter than the previous %v (gaps %v)", i+1, got, prev, gaps)
					}
				}
				if gaps[7] != freq {
					t.Errorf("after a success the next poll came after %v; want the poll frequency %v (gaps %v)", gaps[7], freq, gaps)
				}
				if d := gaps[8] - gaps[0]; d < -slack || d > slack {
					t.Errorf("after a success then a failure the retry came after %v; want the first backoff %v again (gaps %v)", gaps[8], gaps[0], gaps)
				}
				if gaps[9] != freq {
					t.Errorf("after the last success the next poll came after %v; want %v (gaps %v)", gaps[9], freq, gaps)
				}
			})
		})
	}
}

// TestPollRefreshTrigger: a refresh request polls at once, and the schedule
// restarts from that poll.
func TestPollRefreshTrigger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := newUpstreamInMemory(t)
		up.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "blue"))
		start := time.Now()
		s := newTestServer(t, withPairs(pairA), func(c *Config) { c.PollFrequency = 10 })
		s.poll(t, &http.Client{Transport: up})
		time.Sleep(3 * time.Second)
		s.environments()[0].triggerRefresh()
		synctest.Wait()
		if diff := cmp.Diff(pollerSeconds(0, 3), up.offsets(serverKeyA, start)); diff != "" {
			t.Errorf("polls after a trigger at 3s (-want +got):\n%s", diff)
		}
		time.Sleep(11 * time.Second)
		synctest.Wait()
		if diff := cmp.Diff(pollerSeconds(0, 3, 13), up.offsets(serverKeyA, start)); diff != "" {
			t.Errorf("polls by 14s (-want +got):\n%s", diff)
		}
	})
}

// TestPollRefreshCoalesces: triggers that arrive while a poll is in flight
// make one more poll, not one each.
func TestPollRefreshCoalesces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := newUpstreamInMemory(t)
		up.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "blue"))
		up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
			if n == 1 {
				time.Sleep(2 * time.Second) // a slow answer: the poll at 10s ends at 12s
			}
			return false
		})
		start := time.Now()
		s := newTestServer(t, withPairs(pairA), func(c *Config) { c.PollFrequency = 10 })
		s.poll(t, &http.Client{Transport: up})
		time.Sleep(11 * time.Second)
		for range 3 {
			s.environments()[0].triggerRefresh()
		}
		time.Sleep(4 * time.Second)
		synctest.Wait()
		if diff := cmp.Diff(pollerSeconds(0, 10, 12), up.offsets(serverKeyA, start)); diff != "" {
			t.Errorf("polls by 15s, with three triggers at 11s (-want +got):\n%s", diff)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if diff := cmp.Diff(pollerSeconds(0, 10, 12, 22), up.offsets(serverKeyA, start)); diff != "" {
			t.Errorf("polls by 25s (-want +got):\n%s", diff)
		}
	})
}

// TestPollReadiness follows readiness through not updated, ok, stale and ok
// again with a fake clock.
func TestPollReadiness(t *testing.T) {
	const freq, grace = 10, 30
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "blue"))
	up.set(serverKeyB, testDocument(clientKeyB, pollerUpdatedAt, "blue"))
	s := newTestServer(t, withUpstream(up), func(c *Config) {
		c.PollFrequency = freq
		g := float64(grace)
		c.HealthCheck.GracePeriod = &g
	})
	clock := t0
	s.now = func() time.Time { return clock }
	client := pollClient(t)
	envA, envB := s.environments()[0], s.environments()[1]
	// limit is poll_frequency + grace × number_of_environments.
	limit := seconds(freq + grace*2)

	str := func(s string) *string { return &s }
	check := func(step string, wantCode int, want readiness) {
		t.Helper()
		code, got := s.readiness()
		if code != wantCode {
			t.Errorf("%s: readiness() code = %d; want %d", step, code, wantCode)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: readiness() (-want +got):\n%s", step, diff)
		}
		rec := callHandler(t, s.handler(), http.MethodGet, "/proxy/health/readiness", nil, "")
		wantBody, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(wantBody), rec.Body.String()); rec.Code != wantCode || diff != "" {
			t.Errorf("%s: GET /proxy/health/readiness = %d; want %d; body (-want +got):\n%s", step, rec.Code, wantCode, diff)
		}
	}
	notUpdated := readiness{Status: "error", Reason: str(reasonNotUpdated)}
	ok := func(last time.Time) readiness {
		return readiness{Status: "ok", LastSuccessfulUpdate: str(last.Format(time.RFC3339Nano))}
	}
	stale := func(last time.Time) readiness {
		return readiness{Status: "error", Reason: str(reasonStale), LastSuccessfulUpdate: str(last.Format(time.RFC3339Nano))}
	}

	check("nothing fetched", http.StatusServiceUnavailable, notUpdated)
	pollerMustPoll(t, s, envA, client)
	check("only A fetched", http.StatusServiceUnavailable, notUpdated)
	clock = t0.Add(time.Second)
	pollerMustPoll(t, s, envB, client)
	check("both fetched", http.StatusOK, ok(t0)) // the oldest success counts

	clock = t0.Add(limit)
	check("at the limit", http.StatusOK, ok(t0))
	clock = t0.Add(limit + time.Nanosecond)
	check("past the limit", http.StatusServiceUnavailable, stale(t0))

	// A failed poll confirms nothing.
	up.setFault(failWith(http.StatusInternalServerError))
	if err := s.pollNow(context.Background(), envA, client); err == nil {
		t.Fatal("pollOnce against a 500 = nil; want an error")
	}
	check("after a failed poll", http.StatusServiceUnavailable, stale(t0))

	// A 304 is a success: the oldest success is now B's.
	up.setFault(failWith(http.StatusNotModified))
	pollerMustPoll(t, s, envA, client)
	check("A confirmed by a 304", http.StatusOK, ok(t0.Add(time.Second)))

	clock = t0.Add(time.Second + limit + time.Nanosecond)
	check("B stale", http.StatusServiceUnavailable, stale(t0.Add(time.Second)))
	pollerMustPoll(t, s, envB, client)
	check("B confirmed", http.StatusOK, ok(t0.Add(limit+time.Nanosecond)))

	t.Run("grace null disables staleness", func(t *testing.T) {
		s.config().HealthCheck.GracePeriod = nil
		clock = t0.Add(365 * 24 * time.Hour)
		code, got := s.readiness()
		if code != http.StatusOK || got.Status != "ok" || got.LastSuccessfulUpdate == nil {
			t.Errorf("readiness() a year later with grace null = %d %+v; want 200 ok with last_successful_update", code, got)
		}
	})
}

// TestPollLongCompileKeepsReadiness: while a large document compiles, the
// environment still serves its previous document and readiness does not turn
// stale, however long the compile takes.
func TestPollLongCompileKeepsReadiness(t *testing.T) {
	const freq, grace = 10, 30
	s := newTestServer(t, withPairs(demoPair), func(c *Config) {
		c.PollFrequency = freq
		g := float64(grace)
		c.HealthCheck.GracePeriod = &g
	})
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	s.now = func() time.Time { return time.Unix(0, clock.Load()) }
	env := s.environments()[0]
	s.publishDoc(t, demoClientKey, demoDocument(t, t0, "before"))
	limit := seconds(freq + grace)

	// Thousands of features: long enough to be seen compiling.
	large := scaleDocument(t, demoDocument(t, t0.Add(time.Hour), "after"), 150, 0, false)
	clock.Store(t0.Add(limit - time.Second).UnixNano())
	done := make(chan error, 1)
	go func() { _, err := s.publish(env, large, "test"); done <- err }()
	for !env.compiling.Load() {
		select {
		case err := <-done:
			t.Fatalf("publish returned (%v) without marking its compile for readiness", err)
		default:
			runtime.Gosched()
		}
	}
	// The held document was confirmed longer ago than the limit allows,
	// and the compile has been running for a minute.
	clock.Store(t0.Add(limit + time.Minute).UnixNano())
	if code, r := s.readiness(); code != http.StatusOK {
		t.Errorf("readiness() during a compile = %d %+v; want 200", code, r)
	}
	if got := env.snap.Load().updatedAt; !got.Equal(t0) {
		t.Errorf("document served during the compile updated at %v; want the previous one, %v", got, t0)
	}
	if err := <-done; err != nil {
		t.Fatalf("publish(large) = %v", err)
	}
	if env.compiling.Load() {
		t.Error("compiling still set after the compile")
	}
	if code, r := s.readiness(); code != http.StatusOK || *r.LastSuccessfulUpdate != t0.Add(limit+time.Minute).Format(time.RFC3339Nano) {
		t.Errorf("readiness() after the compile = %d %+v; want 200 confirmed at the compile's end", code, r)
	}
}

// TestPollCacheWarmStart: a restarted proxy with the upstream down serves the
// cached document at once (cache_dir).
func TestPollCacheWarmStart(t *testing.T) {
	dir := t.TempDir()
	doc := testDocument(clientKeyA, pollerUpdatedAt, "blue")
	up := newUpstream(t)
	up.set(serverKeyA, doc)
	cacheDir := func(c *Config) { c.CacheDir = dir }
	first := newTestServer(t, withUpstream(up), withPairs(pairA), cacheDir)
	pollerMustPoll(t, first, first.environments()[0], pollClient(t))

	path := cachePath(dir, clientKeyA)
	cached, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("cache file after a poll: %v", err)
	}
	if !bytes.Equal(cached, doc) {
		t.Errorf("cache file = %s; want the document as received %s", cached, doc)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{filepath.Base(path)}, names); diff != "" {
		t.Errorf("cache dir holds (-want +got):\n%s", diff)
	}

	up.close() // the upstream is down for the restart
	s := newTestServer(t, withUpstream(up), withPairs(pairA), cacheDir)
	s.loadCache()
	pollerWantFlags(t, s, clientKeyA, pollerFlags("blue"))
	if code, r := s.readiness(); code != http.StatusOK {
		t.Errorf("readiness() after loadCache = %d %+v; want 200", code, r)
	}
	client := pollClient(t)
	if err := s.pollNow(context.Background(), s.environments()[0], client); err == nil {
		t.Error("pollOnce with the upstream down = nil; want an error")
	}
	pollerWantFlags(t, s, clientKeyA, pollerFlags("blue"))
	s.logs.mustHave(t, logRecord{level: "INFO", msg: "environment updated", env: clientKeyA})
	s.logs.noServerKeys(t)
}

// TestPollCacheConditionalAfterWarmStart: the first poll after a warm start asks
// from the cached document's date, so an unchanged upstream answers 304.
func TestPollCacheConditionalAfterWarmStart(t *testing.T) {
	dir := t.TempDir()
	if err := writeCache(dir, clientKeyA, testDocument(clientKeyA, pollerUpdatedAt, "blue")); err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t)
	up.setFault(failWith(http.StatusNotModified))
	s := newTestServer(t, withUpstream(up), withPairs(pairA), func(c *Config) { c.CacheDir = dir })
	s.loadCache()
	pollerMustPoll(t, s, s.environments()[0], pollClient(t))
	if got := up.last(t).Get("If-Modified-Since"); got != pollerIMS {
		t.Errorf("first poll after a warm start: If-Modified-Since = %q; want %q", got, pollerIMS)
	}
	pollerWantFlags(t, s, clientKeyA, pollerFlags("blue"))
}

// TestPollCacheBadFiles: a cache file that cannot be used is logged and ignored;
// the server answers 503 until a document arrives, and the next good
// document replaces the file.
func TestPollCacheBadFiles(t *testing.T) {
	tests := []struct {
		name    string
		content []byte
	}{
		{"corrupt", []byte(`{"api_key": "` + clientKeyA + `", "proj`)},
		{"another environment", testDocument("SomeOtherEnvironment", pollerUpdatedAt, "red")},
		{"empty", nil},
		{"not a document", []byte(`[]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := cachePath(dir, clientKeyA)
			if err := os.WriteFile(path, tt.content, 0o644); err != nil {
				t.Fatal(err)
			}
			up := newUpstream(t)
			up.setFault(failWith(http.StatusBadGateway))
			s := newTestServer(t, withUpstream(up), withPairs(pairA), func(c *Config) { c.CacheDir = dir })
			s.loadCache()
			s.logs.mustHave(t, logRecord{level: "WARN", msg: "cache", env: clientKeyA})
			pollerWantNoFlags(t, s, clientKeyA)
			if code, r := s.readiness(); code != http.StatusServiceUnavailable {
				t.Errorf("readiness() after an ignored cache file = %d %+v; want 503", code, r)
			}

			client := pollClient(t)
			if err := s.pollNow(context.Background(), s.environments()[0], client); err == nil {
				t.Error("pollOnce against a 502 = nil; want an error")
			}
			pollerWantNoFlags(t, s, clientKeyA)

			doc := testDocument(clientKeyA, pollerUpdatedAt, "blue")
			up.setFault(nil)
			up.set(serverKeyA, doc)
			pollerMustPoll(t, s, s.environments()[0], client)
			pollerWantFlags(t, s, clientKeyA, pollerFlags("blue"))
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, doc) {
				t.Errorf("cache file after a good poll = %q, %v; want the new document", got, err)
			}
		})
	}
}

// TestPollCacheUnwritableDir: a cache dir that cannot be created is logged, and
// serving continues.
func TestPollCacheUnwritableDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plain-file")
	if err := os.WriteFile(file, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "blue"))
	s := newTestServer(t, withUpstream(up), withPairs(pairA), func(c *Config) { c.CacheDir = filepath.Join(file, "cache") })
	s.loadCache() // must not stop the start
	pollerWantNoFlags(t, s, clientKeyA)
	pollerMustPoll(t, s, s.environments()[0], pollClient(t))
	pollerWantFlags(t, s, clientKeyA, pollerFlags("blue"))
	s.logs.mustHave(t, logRecord{level: "WARN", msg: "cache write failed", env: clientKeyA})
	if code, r := s.readiness(); code != http.StatusOK {
		t.Errorf("readiness() with an unwritable cache dir = %d %+v; want 200", code, r)
	}
}

// TestPollWatchFile serves an environment from a local document: published at
// start, reloaded when it changes, the last good one kept when the file turns
// invalid or disappears (environment_document_path).
func TestPollWatchFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "environment.json")
		mtime := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
		write := func(content []byte) {
			t.Helper()
			if err := os.WriteFile(path, content, 0o644); err != nil {
				t.Fatal(err)
			}
			// A distinct modification time for every version, so the change
			// is seen whatever the file system's timestamp resolution.
			mtime = mtime.Add(time.Minute)
			if err := os.Chtimes(path, mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
		write(testDocument(clientKeyA, pollerUpdatedAt, "blue"))
		pair := pairA
		pair.DocumentPath = path
		up := newUpstreamInMemory(t)
		up.setFault(func(w http.ResponseWriter, r *http.Request, _ int) bool {
			t.Errorf("an offline environment made a request to %s", r.URL)
			return false
		})
		s := newTestServer(t, withPairs(pair))
		s.poll(t, &http.Client{Transport: up})

		synctest.Wait()
		pollerWantFlags(t, s, clientKeyA, pollerFlags("blue"))
		if code, r := s.readiness(); code != http.StatusOK {
			t.Errorf("readiness() with a document file = %d %+v; want 200", code, r)
		}

		// Each step changes the file, waits one check, and says which
		// banner must be served then and which ERROR must have been logged.
		steps := []struct {
			content   []byte // nil: the file is removed
			want, err string
		}{
			{content: testDocument(clientKeyA, "2026-11-21T00:00:00Z", "green"), want: "green"},
			{content: []byte(`{"api_key": "` + clientKeyA + `", "project": {`), want: "green", err: "document file not loaded"},
			{content: testDocument(clientKeyA, "2026-11-22T00:00:00Z", "purple"), want: "purple"},
			{content: nil, want: "purple", err: "document file not loaded"},
			{content: testDocument(clientKeyA, "2026-11-23T00:00:00Z", "orange"), want: "orange"},
		}
		for _, step := range steps {
			if step.content != nil {
				write(step.content)
			} else if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			time.Sleep(fileCheckInterval)
			synctest.Wait()
			pollerWantFlags(t, s, clientKeyA, pollerFlags(step.want))
			if step.err != "" {
				s.logs.mustHave(t, logRecord{level: "ERROR", msg: step.err, env: clientKeyA})
			}
		}
		s.logs.noServerKeys(t)
	})
}

// TestPollForeignDocumentRefused: a document whose api_key is not the
// configured client key is refused, keeping the last good one, so a
// misconfigured pair is loud and never reaches the cache.
func TestPollForeignDocumentRefused(t *testing.T) {
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "blue"))
	s := newTestServer(t, withUpstream(up), withPairs(pairA), func(c *Config) { c.CacheDir = t.TempDir() })
	client, env := pollClient(t), s.environments()[0]
	pollerMustPoll(t, s, env, client)
	up.setFault(nil)
	up.set(serverKeyA, testDocument("SomeOtherEnvironmentKey", "2026-11-22T00:00:00Z", "red"))
	if err := s.pollNow(t.Context(), env, client); err == nil || !strings.Contains(err.Error(), "belongs to environment") {
		t.Fatalf("pollOnce of a foreign document = %v; want a refusal", err)
	}
	pollerWantFlags(t, s, clientKeyA, pollerFlags("blue"))
	cached, err := os.ReadFile(cachePath(s.config().CacheDir, clientKeyA))
	if err != nil || !strings.Contains(string(cached), `"blue"`) {
		t.Errorf("cache after a foreign document = %q, %v; want the last good document", cached, err)
	}
}
