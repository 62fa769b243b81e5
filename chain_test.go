package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestChain runs a chain of proxies with real binaries: a fake
// Flagsmith API → proxy A → proxies B and C (api_url and realtime_api_url
// pointing at A; B's realtime stream goes through a relay the test can cut)
// → one realtime client on each of B and C, which refetches flags on every
// event announcing a newer version, as Flagsmith's SDKs do. It measures what
// the README's "Staying in sync" section reports:
//
//   - the time from a push into A (queue-change, as self-hosted Flagsmith
//     sends it) to every client holding the new flag (bound: 1 s);
//   - upstream body bytes per idle poll at each hop (bound: 0, all 304);
//   - with B's stream cut, the time for B's client to see a change (bound:
//     B's poll period, plus a second).
//
// Run it alone with: go test -run TestChain -v -count=1 .
func TestChain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three proxy processes and runs for about 30 s")
	}
	const (
		token      = "chain-queue-change-token-0001"
		pushRounds = 5
		aPoll      = 5 // seconds: A relies on pushes
		edgePoll   = 2 // seconds: B and C
	)
	bin := buildEdgeProxy(t)
	up := newUpstream(t)
	up.sendValidators(upstreamLastModified) // as Flagsmith's API
	version := time.Now().Add(-time.Hour)
	up.set(demoServerKey, demoDocument(t, version, "v0"))

	dir := t.TempDir()
	start := func(name, apiURL, realtimeURL string, poll int) string {
		t.Helper()
		cfg := map[string]any{
			"environment_key_pairs":      []any{map[string]any{"server_side_key": demoServerKey, "client_side_key": demoClientKey}},
			"api_url":                    apiURL,
			"api_poll_frequency_seconds": poll,
			"sse":                        map[string]any{"authentication_token": token, "heartbeat_seconds": 1},
			"server":                     map[string]any{"host": "127.0.0.1", "port": 0},
			"logging":                    map[string]any{"log_format": "json", "log_level": "INFO"},
		}
		if realtimeURL != "" {
			cfg["realtime_api_url"] = realtimeURL
		}
		path := e2eWriteFile(t, dir, name+".json", cfg)
		p := startProcess(t, bin, []string{"-config", path}, nil, nil)
		addr, _ := p.waitLog(t, "listening", 10*time.Second)["addr"].(string)
		base := "http://" + addr
		waitStatus(t, http.DefaultClient, base+"/proxy/health/readiness", http.StatusOK, 10*time.Second)
		return base
	}
	a := start("a", up.apiURL, "", aPoll)

	// The relay carries B's realtime stream from A, until it is cut.
	var cut atomic.Bool
	aURL, _ := url.Parse(a)
	relay := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(aURL) },
		FlushInterval: -1,
		ErrorHandler:  func(w http.ResponseWriter, r *http.Request, err error) { w.WriteHeader(http.StatusBadGateway) },
	})
	relay.Config.Handler = chainCuttable(&cut, relay.Config.Handler)
	t.Cleanup(relay.Close)

	b := start("b", a+"/api/v1", relay.URL, edgePoll)
	c := start("c", a+"/api/v1", a, edgePoll)
	clients := []*chainClient{newChainClient(t, "B", b), newChainClient(t, "C", c)}
	for _, cl := range clients {
		if _, err := cl.waitFor("v0", time.Now(), testWait); err != nil {
			t.Fatal(err)
		}
	}
	for _, base := range []string{b, c} {
		chainWaitMetric(t, base, `edge_proxy_upstream_stream_connected{environment="`+demoClientKey+`"}`, 1)
	}

	change := func(value string) time.Time {
		version = version.Add(time.Minute)
		up.set(demoServerKey, demoDocument(t, version, value))
		return time.Now()
	}
	push := func() {
		t.Helper()
		req, _ := http.NewRequest("POST", a+"/sse/environments/"+demoClientKey+"/queue-change",
			strings.NewReader(`{"updated_at": "`+testTime(version)+`"}`))
		req.Header.Set("Authorization", "Token "+token)
		if resp, body := roundTrip(t, http.DefaultClient, req); resp.StatusCode != http.StatusOK {
			t.Fatalf("queue-change = %d %s; want 200", resp.StatusCode, body)
		}
	}
	// waitAll waits for every client to hold value and returns the slowest
	// client's time since t0.
	waitAll := func(value string, t0 time.Time, bound time.Duration, which ...*chainClient) time.Duration {
		t.Helper()
		var slowest time.Duration
		errs := make(chan error, len(which))
		took := make(chan time.Duration, len(which))
		for _, cl := range which {
			go func() {
				d, err := cl.waitFor(value, t0, testWait)
				errs <- err
				took <- d
			}()
		}
		for range which {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
			slowest = max(slowest, <-took)
		}
		if slowest > bound {
			t.Errorf("%q reached every client in %v; want at most %v", value, slowest, bound)
		}
		return slowest
	}

	// 1. Pushes: a change and a queue-change into A, a round per 1.5 s (a
	// proxy polls an environment at most once a second).
	var pushTimes []time.Duration
	for i := range pushRounds {
		time.Sleep(1500 * time.Millisecond)
		value := fmt.Sprintf("pushed-%d", i)
		t0 := change(value)
		push()
		pushTimes = append(pushTimes, waitAll(value, t0, time.Second, clients...))
	}
	slices.Sort(pushTimes)
	t.Logf("push into A → every client holds the new flag: min %v, median %v, max %v over %d rounds",
		pushTimes[0].Round(time.Millisecond), pushTimes[len(pushTimes)/2].Round(time.Millisecond),
		pushTimes[len(pushTimes)-1].Round(time.Millisecond), len(pushTimes))

	// 2. Idle: no change for 11 s; every poll on every hop must be a 304.
	time.Sleep(2 * time.Second) // the polls after the last change settle
	type hop struct{ name, base string }
	hops := []hop{{"Flagsmith → A", a}, {"A → B", b}, {"A → C", c}}
	bytesBefore, pollsBefore := map[string]float64{}, map[string]float64{}
	polls := func(base string) float64 {
		n := 0.0
		for _, r := range []string{"ok", "not_modified", "error", "invalid"} {
			n += chainMetric(t, base, `edge_proxy_polls_total{environment="`+demoClientKey+`",result="`+r+`"}`)
		}
		return n
	}
	bodyBytes := func(base string) float64 {
		return chainMetric(t, base, `edge_proxy_upstream_body_bytes_total{environment="`+demoClientKey+`"}`)
	}
	for _, h := range hops {
		bytesBefore[h.name], pollsBefore[h.name] = bodyBytes(h.base), polls(h.base)
	}
	time.Sleep(11 * time.Second)
	for _, h := range hops {
		n := polls(h.base) - pollsBefore[h.name]
		bytes := bodyBytes(h.base) - bytesBefore[h.name]
		t.Logf("idle %s: %v polls, %v body bytes (%v per poll)", h.name, n, bytes, bytes/max(n, 1))
		if n < 2 || bytes != 0 {
			t.Errorf("idle %s: %v polls read %v body bytes; want at least 2 polls and 0 bytes", h.name, n, bytes)
		}
	}

	// 3. B's stream cut: C still hears the push at once; B's poll brings
	// the change within its poll period.
	cut.Store(true)
	relay.CloseClientConnections()
	chainWaitMetric(t, b, `edge_proxy_upstream_stream_connected{environment="`+demoClientKey+`"}`, 0)
	time.Sleep(1500 * time.Millisecond)
	t0 := change("while-cut")
	push()
	viaStream := waitAll("while-cut", t0, time.Second, clients[1])
	viaPoll := waitAll("while-cut", t0, edgePoll*time.Second+time.Second, clients[0])
	t.Logf("B's stream cut: C (stream) saw the change in %v, B (its poll, every %d s) in %v",
		viaStream.Round(time.Millisecond), edgePoll, viaPoll.Round(time.Millisecond))

	// The stream comes back on its own, and pushes reach B at once again.
	cut.Store(false)
	chainWaitMetric(t, b, `edge_proxy_upstream_stream_connected{environment="`+demoClientKey+`"}`, 1)
	time.Sleep(1500 * time.Millisecond)
	t0 = change("reconnected")
	push()
	t.Logf("B's stream back: every client saw the next push in %v",
		waitAll("reconnected", t0, time.Second, clients...).Round(time.Millisecond))
}

// chainCuttable answers 503 and serves nothing while cut is set.
func chainCuttable(cut *atomic.Bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cut.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// chainClient is a realtime SDK client of a proxy, as Flagsmith's JS client
// behaves: it holds the flags and their X-Flagsmith-Document-Updated-At, and
// refetches the flags when an event announces a newer updated_at.
type chainClient struct {
	name, base string
	stream     *sseStream
	values     chan chainValue // every flags fetch, in order
}

type chainValue struct {
	value string
	at    time.Time
	err   error
}

func newChainClient(t *testing.T, name, base string) *chainClient {
	t.Helper()
	cl := &chainClient{name: name, base: base, values: make(chan chainValue, 64)}
	cl.stream = sseOpenStream(t, http.DefaultClient, base+sseStreamPath(demoClientKey), nil)
	held := cl.fetch()
	go func() {
		heldAt, _ := strconv.ParseFloat(held, 64)
		for {
			var it sseItem
			select {
			case it = <-cl.stream.items:
			case <-cl.stream.done:
				return
			}
			if !it.isEvent || it.event != "environment_updated" {
				continue
			}
			var ev struct {
				UpdatedAt float64 `json:"updated_at"`
			}
			if json.Unmarshal([]byte(it.data), &ev) != nil || ev.UpdatedAt <= heldAt {
				continue
			}
			heldAt, _ = strconv.ParseFloat(cl.fetch(), 64)
		}
	}()
	return cl
}

// fetch gets the flags, reports the welcome message on values and returns
// the version header.
func (cl *chainClient) fetch() string {
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", cl.base+"/api/v1/flags/", nil)
	req.Header.Set("X-Environment-Key", demoClientKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cl.values <- chainValue{err: err}
		return ""
	}
	defer resp.Body.Close()
	var flags []apiFlag
	var value string
	if err := json.NewDecoder(resp.Body).Decode(&flags); err == nil {
		_ = json.Unmarshal(flagsByName(flags)["welcome_message"].Value, &value)
	}
	cl.values <- chainValue{value: value, at: time.Now()}
	return resp.Header.Get(updatedAtHeader)
}

// waitFor waits until the client holds value and returns when it got it,
// counted from t0.
func (cl *chainClient) waitFor(value string, t0 time.Time, timeout time.Duration) (time.Duration, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	last := ""
	for {
		select {
		case v := <-cl.values:
			if v.err != nil {
				return 0, fmt.Errorf("client of %s: %v", cl.name, v.err)
			}
			if last = v.value; v.value == value {
				return v.at.Sub(t0), nil
			}
		case <-timer.C:
			return 0, fmt.Errorf("client of %s holds %q %v after the change; want %q", cl.name, last, timeout, value)
		}
	}
}

// chainMetric reads one sample of a proxy's /metrics; 0 when absent.
func chainMetric(t testing.TB, base, sample string) float64 {
	t.Helper()
	resp, body := httpDo(t, http.DefaultClient, "GET", base+"/metrics", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics = %d", base, resp.StatusCode)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, found := strings.CutPrefix(line, sample+" "); found {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// chainWaitMetric waits for a sample of a proxy's /metrics to equal want.
func chainWaitMetric(t testing.TB, base, sample string, want float64) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s %s = %v", base, sample, want), func() bool { return chainMetric(t, base, sample) == want })
}
