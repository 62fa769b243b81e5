package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// soakDuration opts into a long soak; by default the test runs a short form
// that CI can afford.
var soakDuration = flag.Duration("soak", 3*time.Second, "how long TestSoak drives load (e.g. -soak 10m)")

// soakDocument is a document that exercises the whole engine: a segment
// override, a multivariate flag, a server-only feature and an identity
// override. TestSoak changes its values with every version.
const soakDocument = `{"api_key":"` + clientKeyA + `","name":"Soak","updated_at":"",
	"project":{"hide_disabled_flags":false,"server_key_only_feature_ids":[3],"segments":[
	 {"id":1,"name":"premium","rules":[{"type":"ALL","rules":[{"type":"ANY","conditions":[{"operator":"EQUAL","property_":"plan","value":"premium"}],"rules":[]}],"conditions":[]}],
	  "feature_states":[{"feature":{"id":1,"name":"banner","type":"STANDARD"},"enabled":true,"django_id":901,"featurestate_uuid":"a0000000-0000-0000-0000-000000000001","feature_state_value":"premium","feature_segment":{"priority":0},"multivariate_feature_state_values":[]}]}]},
	"feature_states":[
	 {"feature":{"id":1,"name":"banner","type":"STANDARD"},"enabled":true,"django_id":1,"featurestate_uuid":"b0000000-0000-0000-0000-000000000001","feature_state_value":"v","multivariate_feature_state_values":[]},
	 {"feature":{"id":2,"name":"colour","type":"MULTIVARIATE"},"enabled":true,"django_id":2,"featurestate_uuid":"b0000000-0000-0000-0000-000000000002","feature_state_value":"red","multivariate_feature_state_values":[
	   {"multivariate_feature_option":{"value":"blue"},"percentage_allocation":50,"id":11,"mv_fs_value_uuid":"c0000000-0000-0000-0000-000000000001"}]},
	 {"feature":{"id":3,"name":"secret","type":"STANDARD"},"enabled":true,"django_id":3,"featurestate_uuid":"b0000000-0000-0000-0000-000000000003","feature_state_value":0,"multivariate_feature_state_values":[]}],
	"identity_overrides":[{"identifier":"vip","identity_features":[{"feature":{"id":1,"name":"banner"},"enabled":false,"django_id":5,"featurestate_uuid":"d0000000-0000-0000-0000-000000000001","feature_state_value":"vip","multivariate_feature_state_values":[]}]}]}`

// soakVersion is version n of soakDocument, n microseconds and seconds after
// the first.
func soakVersion(n int) []byte {
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC).Add(time.Duration(n) * (time.Second + time.Microsecond))
	return buildDocument([]byte(soakDocument), withUpdatedAt(testTime(at)),
		withValue("banner", fmt.Sprint("v", n)), withValue("secret", n),
		func(doc map[string]any) {
			segment := doc["project"].(map[string]any)["segments"].([]any)[0].(map[string]any)
			segment["feature_states"].([]any)[0].(map[string]any)["feature_state_value"] = fmt.Sprint("premium-", n)
		})
}

// soakFaults makes the upstream misbehave on most requests: 500s, truncated
// JSON, answers slower than the poll timeout, and 304s whatever changed.
func soakFaults(injected *atomic.Int64) fault {
	return func(w http.ResponseWriter, r *http.Request, _ int) bool {
		switch rand.IntN(10) {
		case 0:
			injected.Add(1)
			w.WriteHeader(http.StatusInternalServerError)
			return true
		case 1:
			injected.Add(1)
			_, _ = io.WriteString(w, `{"api_key": "`+clientKeyA+`", "project": `) // truncated
			return true
		case 2:
			injected.Add(1)
			time.Sleep(300 * time.Millisecond) // over the poll timeout
		case 3:
			if r.Header.Get("If-Modified-Since") != "" || r.Header.Get("If-None-Match") != "" {
				w.WriteHeader(http.StatusNotModified)
				return true
			}
		}
		return false
	}
}

// TestSoak drives every endpoint while the upstream changes its document and
// injects faults, and checks: no 5xx on the SDK endpoints, no goroutine
// growth, bounded memory. Run long with: go test -run TestSoak -soak 10m -v
func TestSoak(t *testing.T) {
	skipIfShort(t, "a scenario: seconds of load with upstream faults")
	var faults, versions atomic.Int64
	up := newUpstream(t)
	up.set(serverKeyA, soakVersion(0))
	up.setFault(soakFaults(&faults))
	s := newTestServer(t, withUpstream(up), withPairs(pairA), func(c *Config) {
		c.PollTimeout = 0.2
		c.SSE.HeartbeatSeconds = minTimeoutSeconds
	})
	s.listen(t, nil)
	s.poll(t, pollClient(t))
	eventually(t, "a document arrived", func() bool { return s.environments()[0].snap.Load() != nil })

	runtime.GC()
	baseGoroutines := runtime.NumGoroutine()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	// The upstream changes its document every 250 ms (every second in a
	// long soak, as a busy Flagsmith project might).
	period := 250 * time.Millisecond
	if *soakDuration > time.Minute {
		period = time.Second
	}
	loadCtx, stopLoad := context.WithTimeout(t.Context(), *soakDuration)
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
				up.set(serverKeyA, soakVersion(int(versions.Add(1))))
				// Polls come no closer than a second (the configuration's
				// bound); a push brings each version at once.
				s.environments()[0].triggerRefresh()
			}
		}
	}()

	transport := &http.Transport{MaxIdleConnsPerHost: 16}
	client := &http.Client{Transport: transport, Timeout: 5 * time.Second}
	type request struct {
		method, path, key, body string
	}
	requests := []request{
		{"GET", "/api/v1/flags/", clientKeyA, ""},
		{"GET", "/api/v1/flags/?feature=banner", serverKeyA, ""},
		{"POST", "/api/v1/identities/", clientKeyA, `{"identifier":"u%d","traits":[{"trait_key":"plan","trait_value":"premium"},{"trait_key":"age","trait_value":%d}]}`},
		{"GET", "/api/v1/identities/?identifier=vip", clientKeyA, ""},
		{"GET", "/api/v1/environment-document/", serverKeyA, ""},
		{"POST", "/api/v1/identities/", clientKeyA, `{"identifier": 5}`},
		{"GET", "/api/v1/flags/", "unknown-key", ""},
		{"GET", "/proxy/health/liveness", "", ""},
		{"GET", "/metrics", "", ""},
	}
	var total, serverErrors, streamEvents atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; loadCtx.Err() == nil; i++ {
				rq := requests[i%len(requests)]
				body := rq.body
				if strings.Contains(body, "%d") {
					body = fmt.Sprintf(body, i, i%90)
				}
				req, _ := http.NewRequestWithContext(loadCtx, rq.method, s.url+rq.path, strings.NewReader(body))
				if rq.key != "" {
					req.Header.Set("X-Environment-Key", rq.key)
				}
				resp, err := client.Do(req)
				if err != nil {
					continue // the load's own deadline
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				total.Add(1)
				if resp.StatusCode >= 500 {
					serverErrors.Add(1)
					t.Errorf("%s %s = %d", rq.method, rq.path, resp.StatusCode)
				}
			}
		}()
	}
	// Streams come and go during the soak.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for loadCtx.Err() == nil {
			streamCtx, done := context.WithTimeout(loadCtx, 500*time.Millisecond)
			req, _ := http.NewRequestWithContext(streamCtx, "GET", s.url+"/sse/environments/"+clientKeyA+"/stream", nil)
			if resp, err := client.Do(req); err == nil {
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "data: ") {
						streamEvents.Add(1)
					}
				}
				resp.Body.Close()
			}
			done()
		}
	}()
	wg.Wait()
	transport.CloseIdleConnections()

	var after runtime.MemStats
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		if runtime.NumGoroutine() <= baseGoroutines+5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	runtime.ReadMemStats(&after)
	if g := runtime.NumGoroutine(); g > baseGoroutines+5 {
		t.Errorf("goroutines after the soak = %d; want at most %d (started with %d)", g, baseGoroutines+5, baseGoroutines)
	}
	const heapBound = 64 << 20
	if after.HeapInuse > heapBound {
		t.Errorf("heap in use after the soak = %d MiB; want under %d MiB", after.HeapInuse>>20, heapBound>>20)
	}
	if total.Load() == 0 || streamEvents.Load() == 0 {
		t.Fatalf("soak made %d requests and saw %d stream events; want both > 0", total.Load(), streamEvents.Load())
	}
	if s.environments()[0].snap.Load() == nil {
		t.Fatal("no document held after the soak")
	}
	t.Logf("soak %v: %d requests (%.0f/s), %d 5xx, %d stream events, %d upstream faults injected, %d document versions; goroutines %d -> %d; heap in use %d -> %d KiB",
		*soakDuration, total.Load(), float64(total.Load())/soakDuration.Seconds(), serverErrors.Load(), streamEvents.Load(),
		faults.Load(), versions.Load(), baseGoroutines, runtime.NumGoroutine(), before.HeapInuse>>10, after.HeapInuse>>10)
}
