package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The scenario suite of SPEC §17's memory bounds: the built binary runs as
// the default Kubernetes pod runs it (deploy/kubernetes: a 64 MiB memory
// limit, GOMEMLIMIT=54MiB, every other setting at its default) and is
// attacked over loopback with what a public client key can send. Its peak
// resident set (VmHWM) must stay under the pod's limit, the excess must be
// refused or dropped and counted in /metrics, and flags must still be
// answered. Every load loop is bounded in requests and in seconds. Heavy:
// skipped under -short; CI runs them.

const (
	podGOMEMLIMIT  = "54MiB"
	podMemoryLimit = 64 << 20

	boundsClientKey = "BoundsAttackClientKey01"
	boundsServerKey = "ser.bounds-attack-server-key"
)

// longText is chars characters, all 4-byte UTF-8 but the ASCII tag at the
// end that makes it distinct: the most bytes a capped name can hold.
func longText(tag string, chars int) string {
	return strings.Repeat("𝔸", chars-len(tag)) + tag
}

// boundsLongFeature is a feature of the attacked environment whose name is
// as long as Flagsmith allows, so that analytics can name it.
var boundsLongFeature = longText("-feature", maxAnalyticsNameChars)

// podProxy is the binary under attack.
type podProxy struct {
	base   string
	proc   *proxyProcess
	client *http.Client
}

// startPodProxy runs the binary with the default settings under the pod's
// GOMEMLIMIT, serving one environment from up. extra adds analytics
// settings (the events API URL, which must stay on loopback).
func startPodProxy(t *testing.T, up *fakeUpstream, analytics map[string]any) *podProxy {
	t.Helper()
	if testing.Short() {
		t.Skip("heavy: attacks the binary for seconds")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("reads the resident set from /proc: Linux only")
	}
	up.set(boundsServerKey, testDocument(boundsClientKey, testTime(time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)), "blue",
		func(doc map[string]any) {
			fs := doc["feature_states"].([]any)
			long := map[string]any{}
			for k, v := range fs[0].(map[string]any) {
				long[k] = v
			}
			long["feature"] = map[string]any{"id": 2, "name": boundsLongFeature, "type": "STANDARD"}
			long["django_id"] = 12
			long["featurestate_uuid"] = "5b1a3c1e-0000-4000-8000-000000000002"
			doc["feature_states"] = append(fs, long)
		}))
	dir := t.TempDir()
	port := freePort(t)
	cfg := map[string]any{
		"environment_key_pairs": []any{map[string]any{"server_side_key": boundsServerKey, "client_side_key": boundsClientKey}},
		"api_url":               up.apiURL,
		"server":                map[string]any{"host": "127.0.0.1", "port": port},
		"logging":               map[string]any{"log_format": "json", "log_level": "ERROR"},
	}
	if analytics != nil {
		cfg["analytics"] = analytics
	}
	path := e2eWriteFile(t, dir, "config.json", cfg)
	p := &podProxy{
		base: "http://127.0.0.1:" + strconv.Itoa(port),
		proc: startProcess(t, buildEdgeProxy(t), []string{"-config", path}, []string{"GOMEMLIMIT=" + podGOMEMLIMIT}, nil),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 16, Proxy: nil,
		}},
	}
	t.Cleanup(p.client.CloseIdleConnections)
	waitStatus(t, p.client, p.base+"/proxy/health/readiness", http.StatusOK, 15*time.Second)
	t.Logf("ready: RSS %.1f MiB", float64(memoryStatus(t, p.proc.cmd.Process.Pid)["VmRSS"])/(1<<20))
	return p
}

// flagsAnswered reports whether the proxy answers the environment's flags.
func (p *podProxy) flagsAnswered() bool {
	req, err := http.NewRequest(http.MethodGet, p.base+"/api/v1/flags/", nil)
	if err != nil {
		return false
	}
	req.Header.Set("X-Environment-Key", boundsClientKey)
	resp, err := p.client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// watchFlags asks for the flags every 200 ms until ctx ends and returns
// how many of those requests failed, once ctx has ended.
func (p *podProxy) watchFlags(ctx context.Context) func() (asked, failed int) {
	var asked, failed int
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			asked++
			if !p.flagsAnswered() && ctx.Err() == nil {
				failed++
			}
		}
	}()
	return func() (int, int) { <-done; return asked, failed }
}

// metric is the sum of the /metrics samples whose series starts with
// series (a name, or a name and the start of its labels); -1 when there is
// none.
func (p *podProxy) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, body := httpDo(t, p.client, http.MethodGet, p.base+"/metrics", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d", resp.StatusCode)
	}
	sum, found := 0.0, false
	for line := range strings.Lines(string(body)) {
		if !strings.HasPrefix(line, series) || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		return -1
	}
	return sum
}

// checkPeak fails the test when the process's peak resident set reached
// the pod's limit, and logs it either way.
func (p *podProxy) checkPeak(t *testing.T, what string) {
	t.Helper()
	mem := memoryStatus(t, p.proc.cmd.Process.Pid)
	t.Logf("%s: peak RSS (VmHWM) %.1f MiB, RSS now %.1f MiB (GOMEMLIMIT=%s)", what,
		float64(mem["VmHWM"])/(1<<20), float64(mem["VmRSS"])/(1<<20), podGOMEMLIMIT)
	if mem["VmHWM"] >= podMemoryLimit {
		t.Errorf("%s: peak RSS %.1f MiB; want under the pod's %d MiB", what, float64(mem["VmHWM"])/(1<<20), podMemoryLimit>>20)
	}
}

// attack runs send from workers goroutines until each has sent perWorker
// requests or d has passed, and returns the status codes answered.
func attack(d time.Duration, workers, perWorker int, send func(worker, n int) (int, error)) map[int]int {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for n := 0; n < perWorker && ctx.Err() == nil; n++ {
				code, err := send(w, n)
				if err != nil {
					code = -1
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return codes
}

// post sends body to path with the client key and extra headers.
func (p *podProxy) post(path, body string, header map[string]string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, p.base+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-Environment-Key", boundsClientKey)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// acceptPosts makes the fake upstream accept every POST (analytics, events)
// with status, reading its body; documents are served as usual.
func acceptPosts(status int) fault {
	return func(w http.ResponseWriter, r *http.Request, _ int) bool {
		if r.Method != http.MethodPost {
			return false
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(status)
		return true
	}
}

// TestBoundsAnalyticsAttack posts analytics of the longest names and
// identifiers Flagsmith allows, all in 4-byte UTF-8, with long label
// headers and a new identifier every time: v2 posts naming a feature the
// environment has, v1 posts of names it does not have. With the upstream
// reachable the proxy forwards at its pace; with it down nothing leaves.
// Either way memory stays bounded and the excess is counted.
func TestBoundsAnalyticsAttack(t *testing.T) {
	for _, down := range []bool{false, true} {
		name := "upstream reachable"
		if down {
			name = "upstream down"
		}
		t.Run(name, func(t *testing.T) {
			up := newUpstream(t)
			up.setFault(acceptPosts(http.StatusOK))
			p := startPodProxy(t, up, nil)
			if down {
				up.close()
			}
			ctx, stop := context.WithCancel(context.Background())
			flags := p.watchFlags(ctx)
			const evaluations = 50 // 50 × (8 KB name + 8 KB identifier): under the 1 MiB body limit
			codes := attack(11*time.Second, 4, 300, func(w, n int) (int, error) {
				var b strings.Builder
				header := map[string]string{"Flagsmith-Application-Name": longText(fmt.Sprintf("-app-%d-%d", w, n), 2000)}
				if n%2 == 0 {
					b.WriteString(`{"evaluations":[`)
					for i := range evaluations {
						if i > 0 {
							b.WriteByte(',')
						}
						fmt.Fprintf(&b, `{"feature_name":%q,"identity_identifier":%q,"enabled_when_evaluated":true,"count":1}`,
							boundsLongFeature, longText(fmt.Sprintf("-id-%d-%d-%d", w, n, i), maxAnalyticsNameChars))
					}
					b.WriteString(`]}`)
					return p.post("/api/v2/analytics/flags/", b.String(), header)
				}
				b.WriteByte('{')
				for i := range evaluations * 2 {
					if i > 0 {
						b.WriteByte(',')
					}
					fmt.Fprintf(&b, `%q:1`, longText(fmt.Sprintf("-unknown-%d-%d-%d", w, n, i), maxAnalyticsNameChars))
				}
				b.WriteByte('}')
				return p.post("/api/v1/analytics/flags/", b.String(), header)
			})
			stop()
			asked, failed := flags()
			t.Logf("answers: %v; flags asked %d times during the attack, %d failed", codes, asked, failed)
			p.checkPeak(t, "analytics attack, "+name)
			if codes[http.StatusOK] == 0 || codes[http.StatusNoContent] == 0 {
				t.Errorf("answers %v; want v1 posts answered 200 and v2 posts 204 (a full bound fails no SDK request)", codes)
			}
			if failed > 0 || !p.flagsAnswered() {
				t.Errorf("%d of %d flags requests failed during the attack; want every one answered", failed, asked)
			}
			env := fmt.Sprintf("{environment=%q,reason=", boundsClientKey)
			t.Logf("evaluations received %v, forwarded %v, dropped: unknown_feature %v, bytes %v, bound %v",
				p.metric(t, "edge_proxy_analytics_received_total"), p.metric(t, "edge_proxy_analytics_forwarded_total"),
				p.metric(t, "edge_proxy_analytics_dropped_total"+env+`"unknown_feature"}`),
				p.metric(t, "edge_proxy_analytics_dropped_total"+env+`"bytes"}`), p.metric(t, "edge_proxy_analytics_dropped_total"+env+`"bound"}`))
			if got := p.metric(t, "edge_proxy_analytics_dropped_total"+env+`"unknown_feature"}`); got <= 0 {
				t.Errorf("dropped{unknown_feature} = %v; want the names the environment lacks counted", got)
			}
			if down {
				if got := p.metric(t, "edge_proxy_analytics_dropped_total"+env+`"bytes"}`); got <= 0 {
					t.Errorf("dropped{bytes} = %v; want the evaluations past analytics.max_pending_bytes counted", got)
				}
			}
			if got := p.metric(t, "edge_proxy_pending_bytes"); got < 0 || got > defaultAnalyticsMaxPendingBytes {
				t.Errorf("pending bytes = %v; want within analytics.max_pending_bytes (%d)", got, defaultAnalyticsMaxPendingBytes)
			}
			if !down {
				// Once the next flush has forwarded everything, the memory
				// the sums held is free again; how much of it the process
				// has returned to the system is logged, for the record.
				deadline := time.Now().Add(25 * time.Second)
				for p.metric(t, "edge_proxy_pending_bytes") != 0 && time.Now().Before(deadline) {
					time.Sleep(250 * time.Millisecond)
				}
				if got := p.metric(t, "edge_proxy_pending_bytes"); got != 0 {
					t.Errorf("pending bytes %v 25 s after the attack, the upstream reachable; want 0", got)
				}
				time.Sleep(5 * time.Second)
				t.Logf("5 s after the flush: RSS %.1f MiB", float64(memoryStatus(t, p.proc.cmd.Process.Pid)["VmRSS"])/(1<<20))
			}
		})
	}
}

// TestBoundsEventsAttack posts events of the longest identifiers and
// values, all in 4-byte UTF-8, to the events relay: memory stays bounded
// whether the events API takes them or is down, and the excess is counted.
func TestBoundsEventsAttack(t *testing.T) {
	for _, down := range []bool{false, true} {
		name := "events API reachable"
		if down {
			name = "events API down"
		}
		t.Run(name, func(t *testing.T) {
			up := newUpstream(t)
			up.setFault(acceptPosts(http.StatusAccepted))
			p := startPodProxy(t, up, map[string]any{"events_api_url": strings.TrimSuffix(up.apiURL, "api/v1")})
			if down {
				up.close()
			}
			ctx, stop := context.WithCancel(context.Background())
			flags := p.watchFlags(ctx)
			const events = 100 // 100 × 8 KB identifiers: under the 1 MiB body limit
			codes := attack(11*time.Second, 4, 300, func(w, n int) (int, error) {
				var b strings.Builder
				b.WriteString(`{"events":[`)
				for i := range events {
					if i > 0 {
						b.WriteByte(',')
					}
					fmt.Fprintf(&b, `{"event":"checkout","feature_name":null,"identifier":%q,"value":"1","traits":null,"metadata":{"sdk_version":"6.1.0"},"timestamp":%d}`,
						longText(fmt.Sprintf("-id-%d-%d-%d", w, n, i), maxAnalyticsNameChars), time.Now().UnixMilli())
				}
				b.WriteString(`]}`)
				return p.post("/v1/events", b.String(), nil)
			})
			stop()
			asked, failed := flags()
			t.Logf("answers: %v; flags asked %d times during the attack, %d failed", codes, asked, failed)
			p.checkPeak(t, "events attack, "+name)
			if codes[http.StatusAccepted] == 0 {
				t.Errorf("answers %v; want posts answered 202 (a full bound fails no SDK request)", codes)
			}
			if failed > 0 || !p.flagsAnswered() {
				t.Errorf("%d of %d flags requests failed during the attack; want every one answered", failed, asked)
			}
			t.Logf("events received %v, forwarded %v, dropped %v (bytes %v, bound %v)", p.metric(t, "edge_proxy_events_received_total"),
				p.metric(t, "edge_proxy_events_forwarded_total"), p.metric(t, "edge_proxy_events_dropped_total"),
				p.metric(t, `edge_proxy_events_dropped_total{environment="`+boundsClientKey+`",reason="bytes"}`),
				p.metric(t, `edge_proxy_events_dropped_total{environment="`+boundsClientKey+`",reason="bound"}`))
			if got := p.metric(t, fmt.Sprintf("edge_proxy_events_received_total{environment=%q}", boundsClientKey)); got <= 0 {
				t.Errorf("events received = %v; want the posted events counted", got)
			}
			if down {
				if got := p.metric(t, fmt.Sprintf("edge_proxy_events_dropped_total{environment=%q,reason=\"bytes\"}", boundsClientKey)); got <= 0 {
					t.Errorf("events dropped{bytes} = %v; want the events past analytics.max_pending_bytes counted", got)
				}
			}
		})
	}
}

// TestBoundsStreamAttack opens 3,000 realtime streams from one client key:
// the proxy takes up to sse.max_subscribers, refuses the rest with 503 and
// counts them, stays under the pod's memory and keeps answering flags.
func TestBoundsStreamAttack(t *testing.T) {
	up := newUpstream(t)
	p := startPodProxy(t, up, nil)
	const streams = 3000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr := &http.Transport{MaxIdleConnsPerHost: 64, Proxy: nil}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var opened, refused, failed atomic.Int64
	var attempts sync.WaitGroup // until each stream is answered
	var all sync.WaitGroup      // until each stream is closed
	dial := make(chan struct{}, 64)
	for range streams {
		attempts.Add(1)
		all.Add(1)
		go func() {
			defer all.Done()
			answered := false
			defer func() {
				if !answered {
					attempts.Done()
				}
			}()
			dial <- struct{}{}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+sseStreamPath(boundsClientKey), nil)
			if err != nil {
				<-dial
				failed.Add(1)
				return
			}
			resp, err := client.Do(req)
			<-dial
			if err != nil {
				failed.Add(1)
				return
			}
			defer resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				opened.Add(1)
			case http.StatusServiceUnavailable:
				refused.Add(1)
				_, _ = io.Copy(io.Discard, resp.Body)
				return
			default:
				failed.Add(1)
				return
			}
			answered = true
			attempts.Done()
			_, _ = io.Copy(io.Discard, resp.Body) // until ctx ends
		}()
	}
	attempts.Wait()
	time.Sleep(time.Second) // the streams settle; a collection or two runs
	t.Logf("%d streams asked for: %d opened, %d refused, %d failed", streams, opened.Load(), refused.Load(), failed.Load())
	if !p.flagsAnswered() {
		t.Error("flags not answered with the streams open")
	}
	if got := p.metric(t, "edge_proxy_sse_subscribers"); got != float64(opened.Load()) {
		t.Errorf("edge_proxy_sse_subscribers = %v; want the %d open streams", got, opened.Load())
	}
	if failed.Load() > 0 || opened.Load()+refused.Load() != streams {
		t.Errorf("%d streams failed; want each one opened or refused with 503", failed.Load())
	}
	if opened.Load() > defaultSSEMaxSubscribers {
		t.Errorf("%d streams opened; want at most sse.max_subscribers (%d)", opened.Load(), defaultSSEMaxSubscribers)
	}
	if got := p.metric(t, `edge_proxy_sse_refused_total{reason="full"}`); got != float64(refused.Load()) {
		t.Errorf("edge_proxy_sse_refused_total{reason=\"full\"} = %v; want the %d refused streams", got, refused.Load())
	}
	p.checkPeak(t, fmt.Sprintf("%d streams", streams))
	cancel()
	all.Wait()
}

// TestBoundsCombinedAttack makes every attack at once: sse.max_subscribers
// streams held open while analytics and events of the longest names and
// identifiers are posted, the upstream down. The bounds share the pod's
// memory: together they stay under it.
func TestBoundsCombinedAttack(t *testing.T) {
	up := newUpstream(t)
	p := startPodProxy(t, up, map[string]any{"events_api_url": strings.TrimSuffix(up.apiURL, "api/v1")})
	up.close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr := &http.Transport{Proxy: nil}
	defer tr.CloseIdleConnections()
	var streams sync.WaitGroup
	for range defaultSSEMaxSubscribers {
		streams.Go(func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+sseStreamPath(boundsClientKey), nil)
			if err != nil {
				return
			}
			if resp, err := tr.RoundTrip(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body) // until ctx ends
				resp.Body.Close()
			}
		})
	}
	deadline := time.Now().Add(15 * time.Second)
	for p.metric(t, "edge_proxy_sse_subscribers") < defaultSSEMaxSubscribers && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	codes := attack(11*time.Second, 4, 300, func(w, n int) (int, error) {
		var b strings.Builder
		if n%2 == 0 {
			b.WriteString(`{"evaluations":[`)
			for i := range 50 {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"feature_name":%q,"identity_identifier":%q,"enabled_when_evaluated":true,"count":1}`,
					boundsLongFeature, longText(fmt.Sprintf("-id-%d-%d-%d", w, n, i), maxAnalyticsNameChars))
			}
			b.WriteString(`]}`)
			return p.post("/api/v2/analytics/flags/", b.String(), nil)
		}
		b.WriteString(`{"events":[`)
		for i := range 100 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"event":"checkout","identifier":%q,"timestamp":%d}`,
				longText(fmt.Sprintf("-id-%d-%d-%d", w, n, i), maxAnalyticsNameChars), time.Now().UnixMilli())
		}
		b.WriteString(`]}`)
		return p.post("/v1/events", b.String(), nil)
	})
	open := p.metric(t, "edge_proxy_sse_subscribers")
	t.Logf("%v streams open; answers %v", open, codes)
	if open != defaultSSEMaxSubscribers {
		t.Errorf("%v streams open during the attack; want sse.max_subscribers (%d)", open, defaultSSEMaxSubscribers)
	}
	if !p.flagsAnswered() {
		t.Error("flags not answered after the attack")
	}
	p.checkPeak(t, "streams, analytics and events at once")
	cancel()
	streams.Wait()
}
