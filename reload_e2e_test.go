package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Tests of live configuration on the built binary, under load: reloads that add,
// rotate and remove keys, a key rotation upstream, and SIGTERM.

// e2eLoad sends GET /api/v1/flags/ from several clients, each on its own
// keep-alive connections, cycling through the keys in use, until stop. It
// records every answer.
type e2eLoad struct {
	url  string
	keys atomic.Pointer[[]string]
	stop atomic.Bool
	wg   sync.WaitGroup

	mu      sync.Mutex
	results []e2eResult
}

type e2eResult struct {
	key    string
	start  time.Time
	status int // 0 when err is set
	err    error
}

func startE2ELoad(t testing.TB, base string, clients int, keys ...string) *e2eLoad {
	l := &e2eLoad{url: base + "/api/v1/flags/"}
	l.keys.Store(&keys)
	for c := range clients {
		tr := &http.Transport{}
		client := &http.Client{Transport: tr, Timeout: testWait}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer tr.CloseIdleConnections()
			for i := c; !l.stop.Load(); i++ {
				keys := *l.keys.Load()
				l.record(client, keys[i%len(keys)])
				time.Sleep(time.Millisecond) // two cores are shared: leave room for the proxy
			}
		}()
	}
	t.Cleanup(func() { l.finish() })
	return l
}

func (l *e2eLoad) record(client *http.Client, key string) {
	r := e2eResult{key: key, start: time.Now()}
	req, _ := http.NewRequest(http.MethodGet, l.url, nil)
	req.Header.Set("X-Environment-Key", key)
	resp, err := client.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		r.status = resp.StatusCode
	}
	r.err = err
	l.mu.Lock()
	l.results = append(l.results, r)
	l.mu.Unlock()
}

// use adds keys to those the clients send.
func (l *e2eLoad) use(keys ...string) {
	next := append(slices.Clone(*l.keys.Load()), keys...)
	l.keys.Store(&next)
}

// finish stops the clients and returns every answer.
func (l *e2eLoad) finish() []e2eResult {
	l.stop.Store(true)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.results)
}

// e2eWaitRecord waits for a JSON log line after the first `from` lines that
// match says is the one; it returns the record and the number of lines
// read so far (the next from).
func e2eWaitRecord(t testing.TB, p *proxyProcess, from int, what string, match func(rec map[string]any) bool) (map[string]any, int) {
	t.Helper()
	deadline := time.NewTimer(testWait)
	defer deadline.Stop()
	for {
		lines := p.stderr()
		for i := from; i < len(lines); i++ {
			var rec map[string]any
			if json.Unmarshal([]byte(lines[i]), &rec) == nil && match(rec) {
				return rec, i + 1
			}
		}
		select {
		case <-p.notify:
		case <-p.done:
			t.Fatalf("edge-proxy exited (%v) before logging %s", p.exitErr(), what)
		case <-deadline.C:
			t.Fatalf("edge-proxy logged no %s within %v", what, testWait)
		}
	}
}

// e2eReloaded matches the log of a reload that changed exactly these
// environments (nil matches any).
func e2eReloaded(added, removed, changed []string) func(map[string]any) bool {
	list := func(v any) []string {
		var out []string
		for _, s := range asSlice(v) {
			out = append(out, fmt.Sprint(s))
		}
		return out
	}
	return func(rec map[string]any) bool {
		return rec["message"] == "configuration reloaded" &&
			(added == nil || slices.Equal(list(rec["added"]), added)) &&
			(removed == nil || slices.Equal(list(rec["removed"]), removed)) &&
			(changed == nil || slices.Equal(list(rec["changed"]), changed))
	}
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

// startOnConfig writes cfg as a config file, starts the binary on it and
// waits until it is ready. It returns the process, the config file (to
// rewrite for a reload), the base URL and a client for it.
func startOnConfig(t *testing.T, bin string, cfg any) (*proxyProcess, string, string, *http.Client) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	reloadWriteConfig(t, path, cfg)
	p := startProcess(t, bin, []string{"-config", path}, nil, nil)
	addr, _ := p.waitLog(t, "listening", testWait)["addr"].(string)
	base := "http://" + addr
	client := &http.Client{Timeout: testWait}
	t.Cleanup(client.CloseIdleConnections)
	waitStatus(t, client, base+"/proxy/health/readiness", http.StatusOK, testWait)
	return p, path, base, client
}

// e2eReloadConfig is a config file for the reload tests: these pairs
// against up, JSON logs, no drain.
func e2eReloadConfig(up *fakeUpstream, pairs ...map[string]any) map[string]any {
	return map[string]any{
		"environment_key_pairs":      pairs,
		"api_url":                    up.apiURL,
		"api_poll_frequency_seconds": 1,
		"server":                     map[string]any{"host": "127.0.0.1", "port": 0, "drain_seconds": 0, "shutdown_timeout_seconds": 5},
		"logging":                    map[string]any{"log_format": "json"},
	}
}

func e2ePair(client string, servers ...string) map[string]any {
	if len(servers) == 1 {
		return map[string]any{"client_side_key": client, "server_side_key": servers[0]}
	}
	return map[string]any{"client_side_key": client, "server_side_keys": servers}
}

// TestReloadUnderLoad changes the configuration of a running binary while
// clients keep sending: an environment added (by a file change),
// a server key rotated in (by SIGHUP) and the old key removed, an invalid
// configuration written, an environment removed. No request fails, except
// those with a removed key sent after the change was written; an added key
// answers with flags as soon as its reload is logged; the invalid
// configuration changes nothing; streams of unchanged environments stay
// open, those of removed ones end.
func TestReloadUnderLoad(t *testing.T) {
	skipIfShort(t, "a scenario: the real binary reloaded under load")
	bin := buildEdgeProxy(t)
	up := newUpstream(t)
	for _, d := range []struct{ server, client string }{
		{serverKeyA, clientKeyA}, {serverKeyA2, clientKeyA}, {serverKeyB, clientKeyB}, {serverKeyC, clientKeyC},
	} {
		up.set(d.server, testDocument(d.client, pollerUpdatedAt, "v1"))
	}
	p, path, base, client := startOnConfig(t, bin, e2eReloadConfig(up, e2ePair(clientKeyA, serverKeyA), e2ePair(clientKeyB, serverKeyB)))
	streamA := sseOpenStream(t, client, base+sseStreamPath(clientKeyA), nil)
	streamB := sseOpenStream(t, client, base+sseStreamPath(clientKeyB), nil)
	held, _ := time.Parse(time.RFC3339Nano, pollerUpdatedAt)
	streamA.wantUpdated(t, held) // each stream opens with the current document
	streamB.wantUpdated(t, held)

	load := startE2ELoad(t, base, 4, clientKeyA, serverKeyA, clientKeyB, serverKeyB)
	removedAt := map[string]time.Time{} // when the config removing the key was written
	goneAt := map[string]time.Time{}    // when its reload was logged
	wantFlags := func(step string, keys ...string) {
		t.Helper()
		for _, key := range keys {
			if resp, body := httpDo(t, client, "GET", base+"/api/v1/flags/", key, ""); resp.StatusCode != http.StatusOK {
				t.Errorf("%s: GET /api/v1/flags/ with %s = %d %s; want 200", step, maskedKey(key), resp.StatusCode, body)
			}
		}
	}
	wantUnknown := func(step string, keys ...string) {
		t.Helper()
		for _, key := range keys {
			if resp, body := httpDo(t, client, "GET", base+"/api/v1/flags/", key, ""); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s: GET /api/v1/flags/ with %s = %d %s; want 401", step, maskedKey(key), resp.StatusCode, body)
			}
		}
	}
	time.Sleep(200 * time.Millisecond) // some load before the first change
	from := 0

	// 1. A file change adds C: its keys answer with flags at once.
	wantUnknown("before C is added", clientKeyC)
	reloadWriteConfig(t, path, e2eReloadConfig(up, e2ePair(clientKeyA, serverKeyA), e2ePair(clientKeyB, serverKeyB), e2ePair(clientKeyC, serverKeyC)))
	_, from = e2eWaitRecord(t, p, from, "the reload adding C", e2eReloaded([]string{clientKeyC}, nil, nil))
	wantFlags("C added", clientKeyC, serverKeyC)
	load.use(clientKeyC, serverKeyC)

	// 2. SIGHUP reloads, and a rotation adds A's new server key.
	reloadWriteConfig(t, path, e2eReloadConfig(up, e2ePair(clientKeyA, serverKeyA2, serverKeyA), e2ePair(clientKeyB, serverKeyB), e2ePair(clientKeyC, serverKeyC)))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The file watcher may apply the change before the signal's reload:
	// wait for both, in either order.
	e2eWaitRecord(t, p, from, "the reload rotating A", e2eReloaded(nil, nil, []string{clientKeyA}))
	_, from = e2eWaitRecord(t, p, from, "a reload on SIGHUP", func(rec map[string]any) bool {
		return rec["message"] == "configuration reloaded" && rec["trigger"] == "signal"
	})
	wantFlags("A rotated", serverKeyA2, serverKeyA, clientKeyA)
	load.use(serverKeyA2)

	// 3. The old key of A is removed.
	removedAt[serverKeyA] = time.Now()
	reloadWriteConfig(t, path, e2eReloadConfig(up, e2ePair(clientKeyA, serverKeyA2), e2ePair(clientKeyB, serverKeyB), e2ePair(clientKeyC, serverKeyC)))
	_, from = e2eWaitRecord(t, p, from, "the reload removing A's old key", e2eReloaded(nil, nil, []string{clientKeyA}))
	goneAt[serverKeyA] = time.Now()
	wantUnknown("A's old key removed", serverKeyA)
	wantFlags("A's old key removed", serverKeyA2, clientKeyA)

	// 4. An invalid configuration is rejected whole, every problem logged.
	running := e2eGetBody(t, client, base+"/metrics")
	reloadWriteConfig(t, path, []byte(`{"environment_key_pairs": [{"server_side_key": "`+serverKeyA2+`", "client_side_key": "`+clientKeyA+`"},
		{"server_side_key": "`+serverKeyA2+`", "client_side_key": "other"}], "api_url": "`+up.apiURL+`?x=y"}`))
	rejected, from := e2eWaitRecord(t, p, from, "the rejection", func(rec map[string]any) bool {
		return rec["message"] == "configuration rejected; the running configuration stays"
	})
	if got := asSlice(rejected["problems"]); len(got) != 2 {
		t.Errorf("rejection logged problems %q; want 2: the shared server key and the api_url", got)
	}
	wantFlags("invalid configuration written", clientKeyA, serverKeyA2, clientKeyB, serverKeyB, clientKeyC, serverKeyC)
	wantUnknown("invalid configuration written", serverKeyA, "other")
	if !strings.Contains(running, `edge_proxy_config_reloads_total{result="error"} 0`) ||
		!strings.Contains(e2eGetBody(t, client, base+"/metrics"), `edge_proxy_config_reloads_total{result="error"} 1`) {
		t.Error("/metrics did not count the rejected reload")
	}

	// 5. B is removed: its keys stop working, its stream ends.
	removedAt[clientKeyB], removedAt[serverKeyB] = time.Now(), time.Now()
	reloadWriteConfig(t, path, e2eReloadConfig(up, e2ePair(clientKeyA, serverKeyA2), e2ePair(clientKeyC, serverKeyC)))
	e2eWaitRecord(t, p, from, "the reload removing B", e2eReloaded(nil, []string{clientKeyB}, nil))
	goneAt[clientKeyB], goneAt[serverKeyB] = time.Now(), time.Now()
	streamB.waitEnd(t)
	wantUnknown("B removed", clientKeyB, serverKeyB)
	time.Sleep(200 * time.Millisecond) // load after the last change

	results := load.finish()
	failed, gone, byKey := 0, 0, map[string]int{}
	for _, r := range results {
		byKey[r.key]++
		removed, isRemoved := removedAt[r.key]
		switch {
		case r.err != nil:
			failed++
			t.Errorf("request with %s at %s failed: %v", maskedKey(r.key), r.start.Format("15:04:05.000"), r.err)
		case r.status == http.StatusOK:
			if gone, ok := goneAt[r.key]; ok && r.start.After(gone) {
				t.Errorf("request with removed key %s sent after its reload answered 200", maskedKey(r.key))
			}
		case r.status == http.StatusUnauthorized && isRemoved && !r.start.Before(removed):
			gone++ // a removed key, after the change was written: expected
		default:
			failed++
			t.Errorf("request with %s at %s = %d; want 200", maskedKey(r.key), r.start.Format("15:04:05.000"), r.status)
		}
	}
	t.Logf("%d requests under load during 4 reloads and 1 rejected configuration: %d failed, %d answered 401 for a removed key after its removal; per key %v",
		len(results), failed, gone, byKey)
	if len(results) < 100 {
		t.Errorf("only %d requests under load; want at least 100 for the test to mean something", len(results))
	}

	// A's stream was never ended: not by the rotation, not by the removals.
	select {
	case <-streamA.done:
		t.Errorf("A's stream ended (%v); want it open across reloads that kept A", streamA.err)
	default:
	}
	metrics := e2eGetBody(t, client, base+"/metrics")
	for _, want := range []string{`edge_proxy_config_reloads_total{result="error"} 1`, "edge_proxy_config_last_reload_successful 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(metrics, clientKeyB) {
		t.Error("/metrics still reports the removed environment B")
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t, testWait); err != nil {
		t.Errorf("edge-proxy exit after SIGTERM = %v; want status 0", err)
	}
}

func e2eGetBody(t testing.TB, client *http.Client, url string) string {
	t.Helper()
	resp, body := httpDo(t, client, "GET", url, "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d", url, resp.StatusCode)
	}
	return string(body)
}

// TestRotationEndToEnd rotates a server key on a running binary with the
// upstream doing what Flagsmith does: the config lists the new
// key first before the upstream knows it, so the poller uses the old one;
// then the upstream accepts only the new key, with a new document. The
// poller moves to the new key within one poll, the new document is served,
// and meanwhile no request fails and readiness never drops.
func TestRotationEndToEnd(t *testing.T) {
	bin := buildEdgeProxy(t)
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "old"))
	p, _, base, client := startOnConfig(t, bin, e2eReloadConfig(up, e2ePair(clientKeyA, serverKeyA2, serverKeyA)))

	load := startE2ELoad(t, base, 3, clientKeyA, serverKeyA, serverKeyA2)
	var notReady atomic.Int64
	readinessDone := make(chan struct{})
	go func() {
		defer close(readinessDone)
		for !load.stop.Load() {
			resp, err := client.Get(base + "/proxy/health/readiness")
			if err != nil || resp.StatusCode != http.StatusOK {
				notReady.Add(1)
			}
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	time.Sleep(1500 * time.Millisecond) // a poll or two with the old key

	// The rotation upstream: the new key is created, the old one revoked,
	// and the environment changes, all at once.
	switched := time.Now()
	up.set(serverKeyA2, testDocument(clientKeyA, "2026-11-20T10:05:00Z", "new"))
	up.remove(serverKeyA)
	var took time.Duration
	for {
		_, body := httpDo(t, client, "GET", base+"/api/v1/flags/", clientKeyA, "")
		if strings.Contains(string(body), `"new"`) {
			took = time.Since(switched)
			break
		}
		if time.Since(switched) > testWait {
			t.Fatalf("the document published after the rotation is not served %v later: %s", testWait, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.waitLog(t, "server key in use", testWait)
	time.Sleep(300 * time.Millisecond)
	results := load.finish()
	<-readinessDone
	failed := 0
	for _, r := range results {
		if r.err != nil || r.status != http.StatusOK {
			failed++
			if failed <= 5 {
				t.Errorf("request with %s at %s = %d %v; want 200", maskedKey(r.key), r.start.Format("15:04:05.000"), r.status, r.err)
			}
		}
	}
	t.Logf("rotation: new document served %v after the upstream switched keys (poll period 1s); %d requests, %d failed; readiness not 200 %d times",
		took.Round(time.Millisecond), len(results), failed, notReady.Load())
	if took > 2*time.Second+500*time.Millisecond {
		t.Errorf("new document served %v after the switch; want within about one poll period (1s) plus a retry", took)
	}
	if notReady.Load() != 0 {
		t.Errorf("readiness answered other than 200 %d times during the rotation; want never", notReady.Load())
	}
	var rejected int
	for _, r := range up.recorded() {
		if r.key == serverKeyA2 && r.at.Before(switched) {
			rejected++
		}
	}
	if rejected != 1 {
		t.Errorf("the poller tried the not-yet-valid new key %d times before the switch; want once, then keep the old key", rejected)
	}
}

// TestSIGTERMUnderLoad stops a binary under load: readiness
// turns 503 at once, the proxy keeps serving for drain_seconds, so clients
// that stop sending when they see the 503 have no failed request; a
// request in flight when the listener closes completes; the process exits
// 0 once it has drained.
func TestSIGTERMUnderLoad(t *testing.T) {
	skipIfShort(t, "a scenario: the real binary drained under load")
	const drain = 1500 * time.Millisecond
	bin := buildEdgeProxy(t)
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, pollerUpdatedAt, "v1"))
	cfg := e2eReloadConfig(up, e2ePair(clientKeyA, serverKeyA))
	cfg["server"].(map[string]any)["drain_seconds"] = drain.Seconds()
	p, _, base, client := startOnConfig(t, bin, cfg)

	load := startE2ELoad(t, base, 4, clientKeyA, serverKeyA)
	// The load balancer: it probes readiness and stops the clients at the
	// first answer other than 200.
	probe := &http.Client{Timeout: testWait, Transport: &http.Transport{}}
	var sawNotReady time.Time
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		for {
			resp, err := probe.Get(base + "/proxy/health/readiness")
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if err != nil || resp.StatusCode != http.StatusOK {
				sawNotReady = time.Now()
				load.stop.Store(true)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	// A request whose body is still to come when the listener closes.
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.DialTimeout("tcp", addr, testWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(3 * testWait))
	body := `{"identifier": "in-flight", "traits": []}`
	fmt.Fprintf(conn, "POST /api/v1/identities/ HTTP/1.1\r\nHost: %s\r\nX-Environment-Key: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n",
		addr, clientKeyA, len(body))
	br := bufio.NewReader(conn)
	slowReq, _ := http.NewRequest("POST", base+"/api/v1/identities/", nil)
	if cont, err := http.ReadResponse(br, slowReq); err != nil || cont.StatusCode != http.StatusContinue {
		t.Fatalf("interim response = %v, %v; want 100 Continue", cont, err)
	}
	time.Sleep(500 * time.Millisecond) // load before the signal

	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-probed
	results := load.finish()
	toNotReady := sawNotReady.Sub(sent)

	// During the drain the proxy still answers, telling clients to go.
	resp, _ := httpDo(t, client, "GET", base+"/api/v1/flags/", clientKeyA, "")
	if resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("GET /api/v1/flags/ while draining = %d, Connection: close %v; want 200 and close", resp.StatusCode, resp.Close)
	}
	client.CloseIdleConnections()
	p.waitLog(t, "shutting down", testWait)
	toShutdown := time.Since(sent)
	if _, err := io.WriteString(conn, body); err != nil {
		t.Fatalf("send the in-flight body after the drain: %v", err)
	}
	if resp, err := http.ReadResponse(br, slowReq); err != nil {
		t.Errorf("in-flight request: %v; want its answer", err)
	} else {
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(got), `"flags"`) {
			t.Errorf("in-flight request = %d %s; want 200 with flags", resp.StatusCode, got)
		}
	}
	if err := p.wait(t, testWait); err != nil {
		t.Errorf("edge-proxy exit after SIGTERM = %v; want status 0", err)
	}
	exited := time.Since(sent)

	failed := 0
	for _, r := range results {
		if r.err != nil || r.status != http.StatusOK {
			failed++
			if failed <= 5 {
				t.Errorf("request at %s (SIGTERM at %s) = %d %v; want 200", r.start.Format("15:04:05.000"), sent.Format("15:04:05.000"), r.status, r.err)
			}
		}
	}
	t.Logf("SIGTERM under load: %d requests, %d failed; readiness 503 seen %v after the signal, shutdown began %v after, exit %v after (drain_seconds %v)",
		len(results), failed, toNotReady.Round(time.Millisecond), toShutdown.Round(time.Millisecond), exited.Round(time.Millisecond), drain)
	if len(results) < 100 {
		t.Errorf("only %d requests under load; want at least 100", len(results))
	}
	if toNotReady > drain/2 {
		t.Errorf("readiness turned 503 %v after SIGTERM; want at once (well within the %v drain)", toNotReady, drain)
	}
	if toShutdown < drain {
		t.Errorf("shutdown began %v after SIGTERM; want after the %v drain", toShutdown, drain)
	}
}
