package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// verifyUpdatedAt is the demo document's version in these tests.
var verifyUpdatedAt = time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)

// verifyCase is one identity request: a GET when traits is "", else a POST
// with that traits list.
type verifyCase struct {
	key, identifier, traits string
}

func (c verifyCase) send(t testing.TB, s *testServer) {
	t.Helper()
	method, path, body := http.MethodGet, "/api/v1/identities/?identifier="+url.QueryEscape(c.identifier), ""
	if c.traits != "" {
		method, path = http.MethodPost, "/api/v1/identities/"
		body = fmt.Sprintf(`{"identifier": %q, "traits": %s}`, c.identifier, c.traits)
	}
	if rec := callHandler(t, s.handler(), method, path, withKey(c.key), body); rec.Code != http.StatusOK {
		t.Fatalf("%s %s = %d %s; want 200", method, path, rec.Code, rec.Body)
	}
}

// identityWorkersServer serves the demo document (doc) with cfg edited by
// edit, its shadow verification and write-back workers running through
// client until the test ends.
func identityWorkersServer(t testing.TB, doc []byte, client *http.Client, edit func(*Config)) *testServer {
	t.Helper()
	s := newTestServer(t, withPairs(demoPair), edit)
	s.publishDoc(t, demoClientKey, doc)
	ctx, cancel := context.WithCancel(context.Background())
	done := s.startIdentityWorkers(ctx, client)
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s
}

// verifyCounts is what /metrics counts of one environment's verification.
type verifyCounts struct {
	Checks, Matches, Mismatches, MismatchedFlags, Rechecks uint64
	Skipped, Dropped                                       map[string]uint64
}

func countsOf(env *environment) verifyCounts {
	v := &env.verify
	c := verifyCounts{Checks: v.checks.Load(), Matches: v.matches.Load(), Mismatches: v.mismatches.Load(),
		MismatchedFlags: v.mismatchedFlags.Load(), Rechecks: v.rechecks.Load(),
		Skipped: map[string]uint64{}, Dropped: map[string]uint64{}}
	for i, r := range verifySkipReasons {
		if n := v.skipped[i].Load(); n > 0 {
			c.Skipped[r] = n
		}
	}
	for i, r := range verifyDropReasons {
		if n := v.dropped[i].Load(); n > 0 {
			c.Dropped[r] = n
		}
	}
	return c
}

// TestVerifyDifferential asks a reference upstream (the proxy's own engine
// on the same document) what the proxy answered, for identities of every
// kind: honest answers match, every answer made wrong on purpose is a
// counted and logged mismatch, identities Flagsmith holds traits for are
// skipped. Every shadow request is transient and carries the server key;
// no log line holds an identifier or a trait value.
func TestVerifyDifferential(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		doc := demoDocument(t, verifyUpdatedAt, "Welcome")
		up := newUpstreamInMemory(t)
		up.set(demoServerKey, doc)
		wrong := map[string]string{
			"id-secret-wrong-1": "dark_mode",
			"id-secret-wrong-2": "welcome_message",
			"id-secret-wrong-3": "checkout_button_colour",
			"id-secret-wrong-4": "max_upload_mb",
			"id-secret-wrong-5": "dark_mode", // a flag already logged: counted, not logged again
			// A server-only feature: a client key never sees it, so its
			// being wrong is no mismatch of what the key was answered.
			"id-secret-hidden-wrong": "billing_provider",
		}
		up.answerIdentities(&identityReference{wrong: wrong,
			wrongVariant: map[string]string{"id-secret-wrong-variant": "checkout_button_colour"},
			stored:       map[string]bool{"id-secret-stored-1": true, "id-secret-stored-2": true}})
		s := identityWorkersServer(t, doc, &http.Client{Transport: up}, func(c *Config) { c.Verify.SampleRate = 1 })

		traits := `[{"trait_key": "plan", "trait_value": "premium"}, {"trait_key": "country", "trait_value": "GB"},
			{"trait_key": "nickname", "trait_value": "tv-secret-nick"}]`
		cases := []verifyCase{
			{demoServerKey, "id-secret-honest-1", traits},
			{demoClientKey, "id-secret-honest-2", `[{"trait_key": "logins", "trait_value": 150}, {"trait_key": "beta_tester", "trait_value": "true"},
				{"trait_key": "app_version", "trait_value": "2.1.0"}]`},
			{demoClientKey, "vip@example.com", ""}, // an identity override
			{demoServerKey, "id-secret-honest-4", ""},
			{demoClientKey, "id-secret-honest-5", `[{"trait_key": "country", "trait_value": "tv-secret-FR", "transient": true}]`},
			{demoClientKey, "id-secret-hidden-wrong", traits},
			{demoClientKey, "id-secret-wrong-1", traits},
			{demoServerKey, "id-secret-wrong-2", `[]`},
			{demoClientKey, "id-secret-wrong-3", traits},
			{demoServerKey, "id-secret-wrong-4", ""},
			{demoClientKey, "id-secret-wrong-5", traits},
			{demoClientKey, "id-secret-stored-1", traits},
			// Logged already (wrong-3): counted only.
			{demoClientKey, "id-secret-wrong-variant", traits},
			{demoServerKey, "id-secret-stored-2", ""},
		}
		// Multivariate splits land differently for different identities.
		for i := range 8 {
			cases = append(cases, verifyCase{demoClientKey, fmt.Sprintf("id-secret-split-%d", i), `[{"trait_key": "team_size", "trait_value": 12}]`})
		}
		for _, c := range cases {
			c.send(t, s)
			synctest.Wait()
			time.Sleep(time.Second) // verify.max_per_second is 1
		}

		env := s.env(t, demoClientKey)
		want := verifyCounts{Checks: uint64(len(cases)), Matches: uint64(len(cases) - 6 - 2), Mismatches: 6, MismatchedFlags: 6,
			Skipped: map[string]uint64{"stored_traits": 2}, Dropped: map[string]uint64{}}
		if diff := cmp.Diff(want, countsOf(env)); diff != "" {
			t.Errorf("counts (-want +got):\n%s\nlog:\n%s", diff, s.logs)
		}

		// Logged once per flag and document version, naming the identity
		// by its hash.
		var logged []string
		for _, rec := range s.logs.records(t) {
			if rec["msg"] != "shadow verification mismatch" {
				continue
			}
			feature, _ := rec["feature"].(string)
			logged = append(logged, feature)
			var id string
			for ident, f := range wrong {
				if f == feature && ident != "id-secret-wrong-5" {
					id = ident
				}
			}
			if got, want := rec["identity_hash"], identityHash(env, id); got != want {
				t.Errorf("mismatch of %s logged with identity_hash %v; want %v", feature, got, want)
			}
			proxy, _ := rec["proxy"].(map[string]any)
			upstream, _ := rec["upstream"].(map[string]any)
			if proxy == nil || upstream == nil || proxy["enabled"] == upstream["enabled"] {
				t.Errorf("mismatch of %s logged with proxy %v and upstream %v; want both answers, enabled apart", feature, proxy, upstream)
			}
		}
		slices.Sort(logged)
		if diff := cmp.Diff([]string{"checkout_button_colour", "dark_mode", "max_upload_mb", "welcome_message"}, logged); diff != "" {
			t.Errorf("mismatches logged (-want +got):\n%s", diff)
		}
		recent := s.verifyMismatches()
		if len(recent) != 6 {
			t.Fatalf("verifyMismatches() holds %d; want 6", len(recent))
		}
		if m := recent[5]; m.Feature != "checkout_button_colour" || m.Proxy == nil || m.Upstream == nil ||
			string(m.Upstream.Variant) != `"not-the-option-chosen"` || len(m.Proxy.Variant) == 0 || m.Proxy.Enabled != m.Upstream.Enabled {
			t.Errorf("verifyMismatches()[5] = %+v (variants %s, %s); want the variant apart", m, m.Proxy.Variant, m.Upstream.Variant)
		}
		if m := recent[0]; m.Feature != "dark_mode" || m.Identity != identityHash(env, "id-secret-wrong-1") ||
			m.Proxy == nil || m.Upstream == nil || m.Proxy.Enabled == m.Upstream.Enabled || m.Environment != demoClientKey {
			t.Errorf("verifyMismatches()[0] = %+v; want dark_mode of id-secret-wrong-1 by hash, both answers", m)
		}
		if raw, err := json.Marshal(recent); err != nil || strings.Contains(string(raw), "id-secret") {
			t.Errorf("verifyMismatches() as JSON = %s, %v; want no identifier", raw, err)
		}

		// Every shadow request asks the same question, transient, with
		// the server key.
		reqs := up.identityRequests()
		if len(reqs) != len(cases) {
			t.Fatalf("upstream received %d identities requests; want %d", len(reqs), len(cases))
		}
		for i, req := range reqs {
			var body struct {
				Identifier string            `json:"identifier"`
				Transient  *bool             `json:"transient"`
				Traits     []json.RawMessage `json:"traits"`
			}
			mustUnmarshal(t, req.body, &body)
			if req.key != demoServerKey || req.method != http.MethodPost || body.Transient == nil || !*body.Transient ||
				body.Identifier != cases[i].identifier {
				t.Errorf("shadow request %d: %s with key %q, body %s; want POST with %q, transient, identifier %q",
					i, req.method, req.key, req.body, demoServerKey, cases[i].identifier)
			}
		}

		verifyNoIdentityInLogs(t, s.logs.String(), cases)
	})
}

// verifyNoIdentityInLogs fails when a log line holds an identifier or a
// trait value of the cases, as a substring or as a whole attribute value.
func verifyNoIdentityInLogs(t *testing.T, out string, cases []verifyCase) {
	t.Helper()
	secrets := map[string]bool{}
	for _, c := range cases {
		secrets[c.identifier] = true
		var traits []struct {
			Value any `json:"trait_value"`
		}
		if c.traits != "" {
			mustUnmarshal(t, []byte(c.traits), &traits)
		}
		for _, tr := range traits {
			secrets[fmt.Sprint(tr.Value)] = true
		}
	}
	var walk func(v any) []string
	walk = func(v any) []string {
		switch v := v.(type) {
		case map[string]any:
			var out []string
			for _, x := range v {
				out = append(out, walk(x)...)
			}
			return out
		case string:
			return []string{v}
		}
		return nil // booleans and numbers are the answers' own
	}
	for _, rec := range logRecords(t, out) {
		for _, v := range walk(rec) {
			if secrets[v] {
				t.Errorf("log record %v holds %q, an identifier or trait value", rec, v)
			}
		}
	}
	for secret := range secrets {
		if strings.Contains(secret, "secret") && strings.Contains(out, secret) {
			t.Errorf("log holds %q:\n%s", secret, out)
		}
	}
}

// TestVerifyDocumentChanged: answers of another document than the proxy's
// are skipped, not mismatches. An upstream that names its document version
// is compared by it; one that does not is asked again once the proxy has
// had the time to poll, and a mismatch that then disappears was a change.
func TestVerifyDocumentChanged(t *testing.T) {
	traits := `[{"trait_key": "plan", "trait_value": "premium"}]`
	t.Run("version header names another document", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			doc := demoDocument(t, verifyUpdatedAt, "Welcome")
			up := newUpstreamInMemory(t)
			up.set(demoServerKey, doc)
			up.answerIdentities(&identityReference{version: unixSeconds(verifyUpdatedAt.Add(time.Minute)),
				wrong: map[string]string{"id-wrong": "dark_mode"}})
			s := identityWorkersServer(t, doc, &http.Client{Transport: up}, func(c *Config) { c.Verify.SampleRate = 1 })
			for _, id := range []string{"id-honest", "id-wrong"} {
				verifyCase{demoClientKey, id, traits}.send(t, s)
				synctest.Wait()
				time.Sleep(time.Second)
			}
			want := verifyCounts{Checks: 2, Skipped: map[string]uint64{"document_changed": 2}, Dropped: map[string]uint64{}}
			if diff := cmp.Diff(want, countsOf(s.env(t, demoClientKey))); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
		})
	})
	t.Run("no version header", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			oldDoc := demoDocument(t, verifyUpdatedAt, "Welcome")
			newDoc := demoDocument(t, verifyUpdatedAt.Add(time.Minute), "Welcome back")
			up := newUpstreamInMemory(t)
			up.set(demoServerKey, oldDoc)
			up.answerIdentities(&identityReference{version: "-", wrong: map[string]string{"id-wrong": "dark_mode"}})
			s := identityWorkersServer(t, oldDoc, &http.Client{Transport: up}, func(c *Config) { c.Verify.SampleRate = 1 })
			freq := s.config().pollFrequency()

			// An honest answer matches; a wrong one is a mismatch after
			// its re-check.
			for _, id := range []string{"id-honest", "id-wrong"} {
				verifyCase{demoClientKey, id, traits}.send(t, s)
				synctest.Wait()
				time.Sleep(time.Second)
			}
			time.Sleep(freq + 2*time.Second)
			synctest.Wait()
			want := verifyCounts{Checks: 2, Matches: 1, Mismatches: 1, MismatchedFlags: 1, Rechecks: 1,
				Skipped: map[string]uint64{}, Dropped: map[string]uint64{}}
			if diff := cmp.Diff(want, countsOf(s.env(t, demoClientKey))); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}

			// Flagsmith changes first; the proxy has the change by the
			// re-check: skipped, no mismatch.
			up.set(demoServerKey, newDoc)
			verifyCase{demoClientKey, "id-honest-2", traits}.send(t, s)
			synctest.Wait()
			s.publishDoc(t, demoClientKey, newDoc)
			time.Sleep(freq + 2*time.Second)
			synctest.Wait()
			want.Checks, want.Rechecks, want.Skipped["document_changed"] = 3, 2, 1
			if diff := cmp.Diff(want, countsOf(s.env(t, demoClientKey))); diff != "" {
				t.Errorf("counts after a change (-want +got):\n%s", diff)
			}
			if n := len(up.identityRequests()); n != 5 {
				t.Errorf("upstream received %d identities requests; want 5 (3 checks, 2 re-checks)", n)
			}
		})
	})
}

// TestVerifyBounds: sampling takes about the configured share, the rate
// caps checks, a full queue drops and counts, and with verification off
// nothing is asked.
func TestVerifyBounds(t *testing.T) {
	traits := `[{"trait_key": "plan", "trait_value": "premium"}]`
	run := func(t *testing.T, rate, perSecond float64, n int, gap time.Duration, upstreamHangs bool) verifyCounts {
		var counts verifyCounts
		synctest.Test(t, func(t *testing.T) {
			doc := demoDocument(t, verifyUpdatedAt, "Welcome")
			up := newUpstreamInMemory(t)
			up.set(demoServerKey, doc)
			up.answerIdentities(&identityReference{})
			if upstreamHangs {
				up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
					return r.URL.Path == identitiesPath && hang(w, r, n)
				})
			}
			s := identityWorkersServer(t, doc, &http.Client{Transport: up}, func(c *Config) {
				c.Verify.SampleRate, c.Verify.MaxPerSecond = rate, perSecond
				c.PollTimeout = 3600
			})
			for i := range n {
				verifyCase{demoClientKey, fmt.Sprintf("id-%d", i), traits}.send(t, s)
				synctest.Wait()
				time.Sleep(gap)
			}
			counts = countsOf(s.env(t, demoClientKey))
			if got := s.verify.pending.Load(); !upstreamHangs && got != 0 {
				t.Errorf("pending bytes = %d after the queue drained; want 0", got)
			}
		})
		return counts
	}
	t.Run("off", func(t *testing.T) {
		got := run(t, 0, 1, 20, 0, false)
		if diff := cmp.Diff(verifyCounts{Skipped: map[string]uint64{}, Dropped: map[string]uint64{}}, got); diff != "" {
			t.Errorf("counts (-want +got):\n%s", diff)
		}
	})
	t.Run("rate", func(t *testing.T) {
		// Ten requests at one instant: one is checked.
		got := run(t, 1, 2, 10, 0, false)
		want := verifyCounts{Checks: 1, Matches: 1, Skipped: map[string]uint64{}, Dropped: map[string]uint64{"rate_limited": 9}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("counts (-want +got):\n%s", diff)
		}
	})
	t.Run("sample rate", func(t *testing.T) {
		got := run(t, 0.25, 100, 400, 10*time.Millisecond, false)
		// 100 expected; 40 is over four standard deviations away.
		if sampled := got.Checks + got.Dropped["rate_limited"]; sampled < 60 || sampled > 140 || got.Mismatches != 0 {
			t.Errorf("sampled %d of 400 at 0.25 (%+v); want about 100, no mismatch", sampled, got)
		}
	})
	t.Run("queue full", func(t *testing.T) {
		// The first check waits on an upstream that does not answer; the
		// queue takes verifyQueueLen more.
		got := run(t, 1, 100, 40, 10*time.Millisecond, true)
		want := verifyCounts{Skipped: map[string]uint64{}, Dropped: map[string]uint64{"queue_full": uint64(40 - 1 - verifyQueueLen)}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("counts (-want +got):\n%s", diff)
		}
	})
}

// TestSameJSON compares flag values as the API's JSON gives them.
func TestSameJSON(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{`"blue"`, `"blue"`, true},
		{`"blue"`, `"green"`, false},
		{`10`, `10.0`, true},
		{`10`, `"10"`, false},
		{``, `null`, true},
		{`null`, `false`, false},
		{`true`, `true`, true},
		{`"a\u0062"`, `"ab"`, true},
	}
	for _, tt := range tests {
		if got := sameJSON(json.RawMessage(tt.a), json.RawMessage(tt.b)); got != tt.want {
			t.Errorf("sameJSON(%s, %s) = %v; want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
