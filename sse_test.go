package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// sseToken is the push-refresh token (admin_token) of the refresh tests.
const sseToken = "push-refresh-token-0123456789"

// sseBase is the updated_at of the first test document, 1732467200.123456
// as Unix seconds with microseconds, so the event's wire format
// (data: {"updated_at": 1732467200.123456}) can be checked literally.
var sseBase = time.Date(2024, 11, 24, 16, 53, 20, 123456000, time.UTC)

// ssePublish publishes the test document of key at updatedAt, its banner
// set to value.
func ssePublish(t testing.TB, h *testServer, key string, updatedAt time.Time, value string) {
	t.Helper()
	h.publishDoc(t, key, testDocument(key, testTime(updatedAt), value))
}

// sseOpen starts a stream on a listening test server; see sseOpenStream.
func sseOpen(t testing.TB, h *testServer, path string, header http.Header) *sseStream {
	t.Helper()
	return sseOpenStream(t, h.client, h.url+path, header)
}

// sseGoroutines counts the goroutines whose stack mentions fn.
func sseGoroutines(fn string) int {
	n := 0
	for _, g := range sseStacks() {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

func sseStacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(string(buf[:n]), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

const sseHandlerFunc = "(*server).handleStream"

func TestSSEStreamConnect(t *testing.T) {
	tests := []struct {
		name         string
		path         string
		allowOrigins []string
		origin       string
		wantACAO     string
	}{
		{name: "any origin", path: sseStreamPath(clientKeyA), origin: "https://app.example.com", wantACAO: "*"},
		{name: "trailing slash", path: sseStreamPath(clientKeyA) + "/", origin: "https://app.example.com", wantACAO: "*"},
		{name: "configured origin", path: sseStreamPath(clientKeyA), allowOrigins: []string{"https://app.example.com"},
			origin: "https://app.example.com", wantACAO: "https://app.example.com"},
		{name: "origin not allowed", path: sseStreamPath(clientKeyA), allowOrigins: []string{"https://app.example.com"},
			origin: "https://evil.example.com", wantACAO: ""},
		{name: "no origin", path: sseStreamPath(clientKeyA), wantACAO: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestServer(t, func(c *Config) {
				if tt.allowOrigins != nil {
					c.AllowOrigins = tt.allowOrigins
				}
			}).listen(t, nil)
			ssePublish(t, h, clientKeyA, sseBase, "v1")
			header := http.Header{}
			if tt.origin != "" {
				header.Set("Origin", tt.origin)
			}
			st := sseOpen(t, h, tt.path, header)

			if mt, _, err := mime.ParseMediaType(st.resp.Header.Get("Content-Type")); mt != "text/event-stream" {
				t.Errorf("Content-Type = %q (%v); want text/event-stream", st.resp.Header.Get("Content-Type"), err)
			}
			if cc := st.resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-cache") {
				t.Errorf("Cache-Control = %q; want no-cache", cc)
			}
			if got := st.resp.Header.Get("Access-Control-Allow-Origin"); got != tt.wantACAO {
				t.Errorf("Access-Control-Allow-Origin = %q; want %q", got, tt.wantACAO)
			}
			if got := h.hub.subscribers(); got != 1 {
				t.Errorf("hub.subscribers() = %d after connecting; want 1", got)
			}

			// A reconnection hint comes before the first event, so a client
			// that is cut off early already knows it.
			var retry string
			for {
				it := st.next(t, "the retry hint and the first event")
				if it.retry != "" {
					retry = it.retry
				}
				if !it.isEvent {
					continue
				}
				if ms, err := strconv.Atoi(retry); err != nil || ms <= 0 {
					t.Errorf("retry before the first event = %q; want a positive number of milliseconds", retry)
				}
				if it.event != "environment_updated" {
					t.Errorf("first event type = %q; want environment_updated", it.event)
				}
				if want := `{"updated_at": 1732467200.123456}`; it.data != want {
					t.Errorf("first event data = %q; want %q", it.data, want)
				}
				break
			}
		})
	}
}

// TestSSEStreamWireFormat reads the raw bytes: one SDK parses "data: " with
// exactly one space, so the framing itself is part of the contract.
func TestSSEStreamWireFormat(t *testing.T) {
	h := newTestServer(t).listen(t, nil)
	ssePublish(t, h, clientKeyA, sseBase, "v1")
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+sseStreamPath(clientKeyA), nil)
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	want := "event: environment_updated\ndata: {\"updated_at\": 1732467200.123456}\n\n"
	var got []byte
	buf := make([]byte, 512)
	for !bytes.Contains(got, []byte(want)) {
		n, err := resp.Body.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("stream so far %q; ended with %v before %q", got, err, want)
		}
	}
	if !bytes.HasPrefix(got, []byte("retry: ")) {
		t.Errorf("stream starts %q; want a retry: hint first", got)
	}
}

func TestSSEStreamNoDocumentYet(t *testing.T) {
	h := newTestServer(t).listen(t, nil)
	st := sseOpen(t, h, sseStreamPath(clientKeyB), nil)
	// Nothing to announce yet: the first event must be the first document.
	ssePublish(t, h, clientKeyB, sseBase, "v1")
	st.wantUpdated(t, sseBase)
}

func TestSSEStreamEventsInOrder(t *testing.T) {
	h := newTestServer(t).listen(t, nil)
	ssePublish(t, h, clientKeyA, sseBase, "v1")
	st := sseOpen(t, h, sseStreamPath(clientKeyA), nil)
	st.wantUpdated(t, sseBase)

	times := []time.Time{
		sseBase.Add(1*time.Second + 1*time.Microsecond),
		sseBase.Add(2*time.Second + 876543*time.Microsecond),
		sseBase.Add(3 * time.Second),
	}
	for i, at := range times {
		ssePublish(t, h, clientKeyA, at, fmt.Sprint("v", i+2))
		// Another environment's document is not this stream's business.
		ssePublish(t, h, clientKeyB, at, fmt.Sprint("b", i))
	}
	for _, at := range times {
		st.wantUpdated(t, at)
	}
}

// TestSSEStreamIdenticalDocument checks that republishing the held document
// (what a poll answered with the same bytes does) sends nothing: the next
// event on the stream is the next different document.
func TestSSEStreamIdenticalDocument(t *testing.T) {
	h := newTestServer(t).listen(t, nil)
	v1 := testDocument(clientKeyA, testTime(sseBase), "v1")
	h.publishDoc(t, clientKeyA, v1)
	st := sseOpen(t, h, sseStreamPath(clientKeyA), nil)
	st.wantUpdated(t, sseBase)

	h.publishDoc(t, clientKeyA, bytes.Clone(v1))
	h.publishDoc(t, clientKeyA, bytes.Clone(v1))
	v2At := sseBase.Add(time.Minute)
	ssePublish(t, h, clientKeyA, v2At, "v2")
	st.wantUpdated(t, v2At)
}

func TestSSEStreamHeartbeat(t *testing.T) {
	h := newTestServer(t, func(c *Config) { c.SSE.HeartbeatSeconds = minTimeoutSeconds }).listen(t, nil)
	ssePublish(t, h, clientKeyA, sseBase, "v1")
	st := sseOpen(t, h, sseStreamPath(clientKeyA), nil)
	st.wantUpdated(t, sseBase)
	for seen := 0; seen < 2; {
		it := st.next(t, "a heartbeat comment")
		if it.isEvent {
			t.Fatalf("event %q %q on an idle stream; want only heartbeat comments", it.event, it.data)
		}
		if it.isComment {
			seen++
		}
	}
	// Heartbeats do not disturb events.
	v2At := sseBase.Add(time.Hour)
	ssePublish(t, h, clientKeyA, v2At, "v2")
	st.wantUpdated(t, v2At)
}

// TestSSEStreamRejected covers answers given before any stream starts: JSON
// errors, never text/event-stream, and no subscriber left behind.
func TestSSEStreamRejected(t *testing.T) {
	tests := []struct {
		name       string
		edit       func(*Config)
		method     string
		path       string
		preopen    int  // streams opened first
		closeHub   bool // as shutdown does
		wantCode   int
		wantStatus string // the error body's "status"
	}{
		{name: "unknown key", method: "GET", path: sseStreamPath("unknownClientKey123"),
			wantCode: http.StatusNotFound, wantStatus: "not_found"},
		{name: "server key", method: "GET", path: sseStreamPath(serverKeyA),
			wantCode: http.StatusNotFound, wantStatus: "not_found"},
		{name: "streams disabled", edit: func(c *Config) { c.SSE.Enabled = false }, method: "GET", path: sseStreamPath(clientKeyA),
			wantCode: http.StatusNotFound, wantStatus: "not_found"},
		{name: "hub full", edit: func(c *Config) { c.SSE.MaxSubscribers = 1 }, method: "GET", path: sseStreamPath(clientKeyA),
			preopen: 1, wantCode: http.StatusServiceUnavailable, wantStatus: "unavailable"},
		{name: "hub closed", method: "GET", path: sseStreamPath(clientKeyA), closeHub: true,
			wantCode: http.StatusServiceUnavailable, wantStatus: "unavailable"},
		{name: "POST", method: "POST", path: sseStreamPath(clientKeyA),
			wantCode: http.StatusMethodNotAllowed, wantStatus: "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestServer(t, tt.edit).listen(t, nil)
			ssePublish(t, h, clientKeyA, sseBase, "v1")
			for range tt.preopen {
				sseOpen(t, h, sseStreamPath(clientKeyA), nil)
			}
			if tt.closeHub {
				h.hub.close()
			}
			code, header, body := h.do(t, tt.method, tt.path, http.Header{"Origin": {"https://app.example.com"}})
			if code != tt.wantCode {
				t.Errorf("%s %s = %d; want %d", tt.method, tt.path, code, tt.wantCode)
			}
			if ct := header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q; want application/json", ct)
			}
			if got := header.Get("Access-Control-Allow-Origin"); got != "*" {
				t.Errorf("Access-Control-Allow-Origin = %q; want * (CORS as on every endpoint)", got)
			}
			var eb errorBody
			if err := json.Unmarshal(body, &eb); err != nil || eb.Status != tt.wantStatus || eb.Message == "" {
				t.Errorf("body = %s; want {\"status\": %q, \"message\": …}", body, tt.wantStatus)
			}
			if strings.Contains(string(body), "unknownClientKey123") {
				t.Errorf("body %s echoes the whole unknown key", body)
			}
			if got := h.hub.subscribers(); got != tt.preopen && !tt.closeHub {
				t.Errorf("hub.subscribers() = %d; want %d", got, tt.preopen)
			}
			wantRefused := 0.0
			if tt.preopen > 0 {
				wantRefused = 1 // refused because the hub was full, not at shutdown
			}
			if got := anaMetric(t, h.server, `edge_proxy_sse_refused_total{reason="full"}`); got != wantRefused {
				t.Errorf("edge_proxy_sse_refused_total{reason=\"full\"} = %v; want %v", got, wantRefused)
			}
			if code == http.StatusServiceUnavailable {
				req, err := http.NewRequest(tt.method, h.url+tt.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				if resp, _ := roundTrip(t, h.client, req); !resp.Close {
					t.Error("a refused stream's connection is kept open; want it closed (an idle refused connection costs as much as a stream)")
				}
			}
		})
	}
}

// TestSSEStreamDisconnect checks that a client going away is noticed through
// the request context, with no event or heartbeat written to find out (the
// heartbeat stays at its 15 s default), and that its handler goroutine ends.
func TestSSEStreamDisconnect(t *testing.T) {
	handlers := sseGoroutines(sseHandlerFunc) // other tests' leaks are not ours
	h := newTestServer(t).listen(t, nil)
	ssePublish(t, h, clientKeyA, sseBase, "v1")
	streams := []*sseStream{sseOpen(t, h, sseStreamPath(clientKeyA), nil), sseOpen(t, h, sseStreamPath(clientKeyA), nil)}
	for _, st := range streams {
		st.wantUpdated(t, sseBase)
	}
	if got := h.hub.subscribers(); got != 2 {
		t.Fatalf("hub.subscribers() = %d; want 2", got)
	}
	streams[0].close(t)
	eventually(t, "hub.subscribers() == 1 after one client left", func() bool { return h.hub.subscribers() == 1 })
	streams[1].close(t)
	eventually(t, "hub.subscribers() == 0 after both clients left", func() bool { return h.hub.subscribers() == 0 })
	eventually(t, "no stream handler goroutine left", func() bool { return sseGoroutines(sseHandlerFunc) == handlers })
	// The hub still works for the next client.
	st := sseOpen(t, h, sseStreamPath(clientKeyA), nil)
	st.wantUpdated(t, sseBase)
}

// TestSSEStreamStalledSubscriber connects a client that sends its request and
// never reads. Once the socket buffers between it and the server are full its
// handler blocks in a write, its hub buffer (8 events) fills, and the hub
// must drop it, while a healthy subscriber on the same environment receives
// every event in order and publishing never waits.
func TestSSEStreamStalledSubscriber(t *testing.T) {
	// Small fixed socket buffers make the stall show after a few KB rather
	// than the hundreds of KB that loopback buffers otherwise absorb.
	h := newTestServer(t).listen(t, func(c net.Conn) {
		if err := c.(*net.TCPConn).SetWriteBuffer(4096); err != nil {
			t.Errorf("SetWriteBuffer: %v", err)
		}
	})
	ssePublish(t, h, clientKeyA, sseBase, "v0")
	healthy := sseOpen(t, h, sseStreamPath(clientKeyA), nil)
	healthy.wantUpdated(t, sseBase)

	stalled, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stalled.Close() })
	if err := stalled.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(stalled, "GET %s HTTP/1.1\r\nHost: proxy\r\nAccept: text/event-stream\r\n\r\n", sseStreamPath(clientKeyA)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stalled client subscribed", func() bool { return h.hub.subscribers() == 2 })

	// Publish in batches no larger than a subscriber buffer, and let the
	// healthy client catch up between batches, so only the stalled one can
	// fall behind.
	const batch = subscriberBuffer
	const maxEvents = 20_000
	published, droppedAt := 0, 0
	at := sseBase
	for published < maxEvents && (droppedAt == 0 || published < droppedAt+2*batch) {
		var ats []time.Time
		for range batch {
			published++
			at = at.Add(time.Second)
			ats = append(ats, at)
			ssePublish(t, h, clientKeyA, at, strconv.Itoa(published))
		}
		for _, at := range ats {
			healthy.wantUpdated(t, at)
		}
		if droppedAt == 0 && h.hub.subscribers() == 1 {
			droppedAt = published
		}
	}
	if droppedAt == 0 {
		t.Fatalf("stalled subscriber still subscribed after %d events", published)
	}
	t.Logf("stalled subscriber dropped after %d events; the healthy one received all %d", droppedAt, published)
	if got := h.hub.subscribers(); got != 1 {
		t.Errorf("hub.subscribers() = %d; want 1 (the healthy subscriber)", got)
	}
}

// TestSSEHubClose checks what shutdown does to streams: every client sees
// its stream end cleanly (io.EOF, the chunked body properly terminated), and
// new streams are refused.
func TestSSEHubClose(t *testing.T) {
	handlers := sseGoroutines(sseHandlerFunc)
	h := newTestServer(t).listen(t, nil)
	ssePublish(t, h, clientKeyA, sseBase, "a")
	ssePublish(t, h, clientKeyB, sseBase, "b")
	streams := []*sseStream{
		sseOpen(t, h, sseStreamPath(clientKeyA), nil),
		sseOpen(t, h, sseStreamPath(clientKeyA), nil),
		sseOpen(t, h, sseStreamPath(clientKeyB), nil),
	}
	for _, st := range streams {
		st.wantUpdated(t, sseBase)
	}
	if code, _, body := h.do(t, "GET", "/sse/health", nil); code != http.StatusOK {
		t.Errorf("GET /sse/health before hub.close() = %d %s; want 200", code, body)
	}
	h.hub.close()
	for i, st := range streams {
		if err := st.waitEnd(t); err != io.EOF {
			t.Errorf("stream %d ended with %v; want io.EOF", i, err)
		}
	}
	if got := h.hub.subscribers(); got != 0 {
		t.Errorf("hub.subscribers() = %d after close; want 0", got)
	}
	eventually(t, "no stream handler goroutine left", func() bool { return sseGoroutines(sseHandlerFunc) == handlers })
	if code, _, body := h.do(t, "GET", sseStreamPath(clientKeyA), nil); code != http.StatusServiceUnavailable {
		t.Errorf("GET stream after hub.close() = %d %s; want 503", code, body)
	}
	if code, _, body := h.do(t, "GET", "/sse/health", nil); code != http.StatusServiceUnavailable {
		t.Errorf("GET /sse/health after hub.close() = %d %s; want 503", code, body)
	}
}

func TestSSEHealth(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(*Config)
		closeHub bool
		wantCode int
		want     string // the body's "status"
	}{
		{name: "hub running", wantCode: http.StatusOK, want: "ok"},
		{name: "hub closed", closeHub: true, wantCode: http.StatusServiceUnavailable, want: "error"},
		{name: "streams disabled", edit: func(c *Config) { c.SSE.Enabled = false }, wantCode: http.StatusServiceUnavailable, want: "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestServer(t, tt.edit).listen(t, nil)
			if tt.closeHub {
				h.hub.close()
			}
			code, header, body := h.do(t, "GET", "/sse/health", nil)
			if code != tt.wantCode {
				t.Errorf("GET /sse/health = %d; want %d", code, tt.wantCode)
			}
			if ct := header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q; want application/json", ct)
			}
			var got struct {
				Status string `json:"status"`
			}
			if err := json.Unmarshal(body, &got); err != nil || got.Status != tt.want {
				t.Errorf("GET /sse/health body = %s; want status %q", body, tt.want)
			}
		})
	}
}

// sseServe runs the real server (serve) on a loopback port against an
// upstream holding documents for A and B, with edits applied to its
// configuration; it returns the base URL, a client, and stop.
func sseServe(t testing.TB, edits ...func(*Config)) (base string, client *http.Client, stop func() error) {
	t.Helper()
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, testTime(sseBase), "a"))
	up.set(serverKeyB, testDocument(clientKeyB, testTime(sseBase), "b"))
	cfg := testConfig(t, append([]func(*Config){withUpstream(up), func(c *Config) {
		c.PollFrequency = 3600
	}}, edits...)...)
	addr, _, stop := serveConfig(t, cfg)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return "http://" + addr, &http.Client{Transport: tr}, stop
}

// TestSSEServeShutdown stops the real server: Shutdown must end every open
// stream (through the hub) rather than wait for its timeout, and each client
// must see a clean end.
func TestSSEServeShutdown(t *testing.T) {
	base, client, stop := sseServe(t, func(c *Config) { c.Server.ShutdownTimeout = 5 })
	var streams []*sseStream
	for _, key := range []string{clientKeyA, clientKeyA, clientKeyB} {
		st := sseOpenStream(t, client, base+sseStreamPath(key), nil)
		st.wantUpdated(t, sseBase) // the pollers fetched the documents
		streams = append(streams, st)
	}
	if err := stop(); err != nil {
		t.Errorf("serve() = %v after shutdown; want nil (streams must not hold Shutdown until its timeout)", err)
	}
	for i, st := range streams {
		if err := st.waitEnd(t); err != io.EOF {
			t.Errorf("stream %d ended with %v; want io.EOF", i, err)
		}
	}
}

// TestSSEStreamOutlivesReadTimeout runs the real server with its request
// timeouts turned far down and checks that a stream outlives them: the
// handler lifts its write deadline for each write, and the read deadline
// (ReadTimeout = read_header_timeout_seconds + write_timeout_seconds) must
// not end the request context while the stream is open.
func TestSSEStreamOutlivesReadTimeout(t *testing.T) {
	base, client, _ := sseServe(t, func(c *Config) {
		c.Server.ReadHeaderTimeout = minTimeoutSeconds
		c.Server.WriteTimeout = minTimeoutSeconds // ReadTimeout 0.2 s
		c.SSE.HeartbeatSeconds = minTimeoutSeconds
	})
	st := sseOpenStream(t, client, base+sseStreamPath(clientKeyA), nil)
	st.wantUpdated(t, sseBase)
	// 8 heartbeats take 0.8 s, four times the read timeout.
	for i := range 8 {
		if it := st.next(t, fmt.Sprintf("heartbeat %d of 8 (read timeout 0.2 s)", i+1)); it.isEvent {
			t.Fatalf("unexpected event %q %q", it.event, it.data)
		}
	}
}

// TestSSEStreamHEAD checks that a HEAD request (a load balancer's probe, curl
// -I) gets the stream's headers and ends. A HEAD response has no body, so the
// client considers it complete at once and reuses the connection; a handler
// that keeps streaming (net/http discards the writes) holds a subscriber and
// leaves the client's next request on that connection unanswered.
func TestSSEStreamHEAD(t *testing.T) {
	h := newTestServer(t).listen(t, nil)
	ssePublish(t, h, clientKeyA, sseBase, "v1")
	code, header, _ := h.do(t, "HEAD", sseStreamPath(clientKeyA), nil)
	if code != http.StatusOK {
		t.Errorf("HEAD stream = %d; want 200", code)
	}
	if mt, _, _ := mime.ParseMediaType(header.Get("Content-Type")); mt != "text/event-stream" {
		t.Errorf("HEAD stream Content-Type = %q; want text/event-stream", header.Get("Content-Type"))
	}
	// The same client's next request reuses the kept-alive connection.
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+"/sse/health", nil)
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("GET /sse/health on the connection the HEAD used: %v; want 200 (is the HEAD handler still streaming?)", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /sse/health after HEAD stream = %d; want 200", resp.StatusCode)
	}
	eventually(t, "HEAD left no subscriber behind", func() bool { return h.hub.subscribers() == 0 })
}

// goSDKUpdatedAt parses one stream line as Flagsmith's Go SDK realtime client
// does (flagsmith-go-client v4, realtime.go, parseUpdatedAtFromSSE, read
// 2026-11): the SDK scans lines, takes those starting with "data: ", decodes
// {"updated_at": float64}, rejects values <= 0, and turns the float into a
// time as int64 seconds plus int64((f - seconds) * 1e9) nanoseconds. It then
// refetches the environment when that time is After the updated_at it holds.
func goSDKUpdatedAt(line string) (float64, time.Time, error) {
	var ev struct {
		UpdatedAt float64 `json:"updated_at"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
		return 0, time.Time{}, fmt.Errorf("failed to parse event data: %w", err)
	}
	if ev.UpdatedAt <= 0 {
		return 0, time.Time{}, errors.New("invalid 'updated_at' value in event data")
	}
	sec := int64(ev.UpdatedAt)
	nsec := int64((ev.UpdatedAt - float64(sec)) * 1e9)
	return ev.UpdatedAt, time.Unix(sec, nsec), nil
}

type goSDKEvent struct {
	value float64
	at    time.Time
	line  string
	err   error
}

// goSDKRead reads a stream the way the Go SDK does: bufio.Scanner lines,
// every "data: " line parsed, everything else ignored. It hands each event
// to each until that returns false or the stream ends.
func goSDKRead(body io.Reader, each func(goSDKEvent) bool) {
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "data: ") {
			v, at, err := goSDKUpdatedAt(line)
			if !each(goSDKEvent{v, at, line, err}) {
				return
			}
		}
	}
}

// TestSSEGoSDKParser follows Flagsmith's Go SDK through a session: it holds
// the first document, reads our stream with the SDK's parser (heartbeats
// interleaved), and for each new document must see a value equal to the
// document's updated_at and decide to refetch.
func TestSSEGoSDKParser(t *testing.T) {
	h := newTestServer(t, func(c *Config) { c.SSE.HeartbeatSeconds = minTimeoutSeconds }).listen(t, nil)
	times := []time.Time{
		sseBase,
		sseBase.Add(1*time.Second - 123455*time.Microsecond), // .000001
		time.Date(2026, 11, 25, 9, 30, 0, 999999000, time.UTC),
		time.Date(2026, 11, 25, 9, 31, 0, 0, time.UTC), // whole second: "…0.0"
		time.Date(2026, 11, 25, 9, 31, 0, 500000000, time.UTC),
	}
	ssePublish(t, h, clientKeyA, times[0], "v0")

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+sseStreamPath(clientKeyA), nil)
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	events := make(chan goSDKEvent)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		goSDKRead(resp.Body, func(ev goSDKEvent) bool {
			select {
			case events <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-readerDone })

	next := func(what string) goSDKEvent {
		t.Helper()
		select {
		case ev := <-events:
			if ev.err != nil {
				t.Fatalf("Go SDK parser rejects %q: %v", ev.line, ev.err)
			}
			return ev
		case <-readerDone:
			t.Fatalf("stream ended while waiting for %s", what)
		case <-time.After(testWait):
			t.Fatalf("no data line for %v while waiting for %s", testWait, what)
		}
		return goSDKEvent{}
	}

	held := times[0] // what the SDK fetched before connecting
	ev := next("the initial event")
	if ev.value != sseFloat(times[0]) {
		t.Errorf("initial updated_at = %v; want %v (%q)", ev.value, sseFloat(times[0]), ev.line)
	}
	if d := ev.at.Sub(held).Abs(); d >= time.Microsecond {
		t.Errorf("initial event parsed to %v; want within 1µs of %v", ev.at, held)
	}
	for i, at := range times[1:] {
		ssePublish(t, h, clientKeyA, at, fmt.Sprint("v", i+1))
		ev := next(fmt.Sprintf("the event for document %d", i+1))
		if ev.value != sseFloat(at) {
			t.Errorf("document %d: updated_at = %v; want %v (%q)", i+1, ev.value, sseFloat(at), ev.line)
		}
		if d := ev.at.Sub(at).Abs(); d >= time.Microsecond {
			t.Errorf("document %d: parsed to %v; want within 1µs of %v", i+1, ev.at, at)
		}
		if !ev.at.After(held) {
			t.Errorf("document %d: SDK would not refetch: %v is not after the held %v", i+1, ev.at, held)
		}
		held = at // the SDK refetched and now holds this document
	}
}

// TestSSELoad1000Subscribers opens 1,000 streams on one environment over
// loopback HTTP, publishes one document and checks that all receive it, then
// that disconnecting them all frees everything. It logs the fan-out time and
// the cost of an idle subscriber; nothing is asserted about speed.
func TestSSELoad1000Subscribers(t *testing.T) {
	skipIfShort(t, "a scenario: a thousand open streams")
	const n = 1000
	h := newTestServer(t).listen(t, nil)
	ssePublish(t, h, clientKeyA, sseBase, "v1")
	tr := &http.Transport{MaxIdleConnsPerHost: -1}
	client := &http.Client{Transport: tr}

	runtime.GC()
	baseGoroutines := runtime.NumGoroutine()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	baseServerG, baseClientG := sseCountSides()

	v2At := sseBase.Add(time.Hour)
	want := sseFloat(v2At)
	ctx, cancel := context.WithCancel(context.Background())
	var (
		ready    sync.WaitGroup
		finished sync.WaitGroup
		received atomic.Int32
		lastNano atomic.Int64
		failures = make(chan error, n)
	)
	ready.Add(n)
	finished.Add(n)
	for i := range n {
		go func() {
			defer finished.Done()
			readyOnce := sync.OnceFunc(ready.Done)
			defer readyOnce()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+sseStreamPath(clientKeyA), nil)
			resp, err := client.Do(req)
			if err != nil {
				failures <- fmt.Errorf("subscriber %d: connect: %w (1,000 subscribers need about 2,000 file descriptors in this process)", i, err)
				return
			}
			defer resp.Body.Close()
			initial := true
			goSDKRead(resp.Body, func(ev goSDKEvent) bool {
				switch {
				case ev.err != nil:
					failures <- fmt.Errorf("subscriber %d: %v", i, ev.err)
					return false
				case initial:
					initial = false
					readyOnce()
				case ev.value == want:
					now := time.Now().UnixNano()
					for {
						last := lastNano.Load()
						if now <= last || lastNano.CompareAndSwap(last, now) {
							break
						}
					}
					received.Add(1)
				default:
					failures <- fmt.Errorf("subscriber %d: updated_at %v; want %v", i, ev.value, want)
					return false
				}
				return true
			})
		}()
	}
	stopAll := func() {
		cancel()
		finished.Wait()
		tr.CloseIdleConnections()
	}
	t.Cleanup(stopAll)
	if !sseWaitGroup(&ready, 2*testWait) {
		t.Fatalf("only %d of %d subscribers connected within %v", h.hub.subscribers(), n, 2*testWait)
	}
	select {
	case err := <-failures:
		t.Fatal(err)
	default:
	}
	if got := h.hub.subscribers(); got != n {
		t.Fatalf("hub.subscribers() = %d with every client connected; want %d", got, n)
	}

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	goroutines := runtime.NumGoroutine() - baseGoroutines
	serverG, clientG := sseCountSides()
	t.Logf("idle subscribers: %d; per subscriber, client and server side together: %.2f goroutines, %.0f heap bytes, %.0f stack bytes",
		n, float64(goroutines)/n, float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n,
		float64(int64(after.StackInuse)-int64(before.StackInuse))/n)
	t.Logf("goroutines per subscriber by side: server %.2f (net/http conn.serve + background read), client %.2f (transport read/write loops + reader)",
		float64(serverG-baseServerG)/n, float64(clientG-baseClientG)/n)

	start := time.Now()
	ssePublish(t, h, clientKeyA, v2At, "v2")
	published := time.Since(start)
	eventually(t, "every subscriber received the event", func() bool {
		select {
		case err := <-failures:
			t.Fatal(err)
		default:
		}
		return received.Load() == n
	})
	t.Logf("fan-out: s.publish returned after %v; last of %d subscribers received the event %v after publish began",
		published, n, time.Unix(0, lastNano.Load()).Sub(start))

	stopAll()
	eventually(t, "hub.subscribers() == 0 after every client left", func() bool { return h.hub.subscribers() == 0 })
	eventually(t, fmt.Sprintf("goroutines back near the baseline of %d", baseGoroutines), func() bool {
		return runtime.NumGoroutine() <= baseGoroutines+5
	})
}

func sseWaitGroup(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// sseCountSides counts HTTP goroutines by side: a server connection runs
// conn.serve (the stream handler runs inside it) and a background read; a
// client connection runs the transport's read and write loops, plus the
// test's own reader, which is in a test function.
func sseCountSides() (server, client int) {
	for _, g := range sseStacks() {
		switch {
		case strings.Contains(g, "net/http.(*conn).serve"), strings.Contains(g, "net/http.(*connReader).backgroundRead"):
			server++
		case strings.Contains(g, "net/http.(*persistConn)"), strings.Contains(g, "TestSSELoad1000Subscribers.func"):
			client++
		}
	}
	return server, client
}

// sseRefresh asks for a push refresh.
func sseRefresh(t testing.TB, h *testServer, query string, header http.Header) (int, []byte) {
	t.Helper()
	code, _, body := h.do(t, "POST", "/proxy/refresh"+query, header)
	return code, body
}

func sseBearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

func TestPushRefreshAuth(t *testing.T) {
	tests := []struct {
		name        string
		token       secret // admin_token
		method      string
		query       string
		header      http.Header
		wantCode    int
		wantSignals map[string]int // pending refreshes by client key
	}{
		{name: "disabled without admin_token", method: "POST", header: sseBearer(sseToken),
			wantCode: http.StatusNotFound},
		{name: "missing header", token: sseToken, method: "POST",
			wantCode: http.StatusUnauthorized},
		{name: "wrong token", token: sseToken, method: "POST", header: sseBearer("not-the-token"),
			wantCode: http.StatusUnauthorized},
		{name: "token prefix", token: sseToken, method: "POST", header: sseBearer(sseToken[:10]),
			wantCode: http.StatusUnauthorized},
		{name: "no Bearer scheme", token: sseToken, method: "POST", header: http.Header{"Authorization": {sseToken}},
			wantCode: http.StatusUnauthorized},
		{name: "Basic scheme", token: sseToken, method: "POST", header: http.Header{"Authorization": {"Basic " + sseToken}},
			wantCode: http.StatusUnauthorized},
		{name: "every environment", token: sseToken, method: "POST", header: sseBearer(sseToken),
			wantCode: http.StatusAccepted, wantSignals: map[string]int{clientKeyA: 1, clientKeyB: 1}},
		{name: "one environment", token: sseToken, method: "POST", query: "?environment=" + clientKeyB, header: sseBearer(sseToken),
			wantCode: http.StatusAccepted, wantSignals: map[string]int{clientKeyB: 1}},
		{name: "unknown environment", token: sseToken, method: "POST", query: "?environment=unknownKey", header: sseBearer(sseToken),
			wantCode: http.StatusNotFound},
		{name: "GET not allowed", token: sseToken, method: "GET", header: sseBearer(sseToken),
			wantCode: http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestServer(t, func(c *Config) { c.AdminToken = tt.token }).listen(t, nil)
			code, header, body := h.do(t, tt.method, "/proxy/refresh"+tt.query, tt.header)
			if code != tt.wantCode {
				t.Errorf("%s /proxy/refresh%s = %d %s; want %d", tt.method, tt.query, code, body, tt.wantCode)
			}
			if ct := header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q; want application/json", ct)
			}
			if !json.Valid(body) {
				t.Errorf("body %q is not JSON", body)
			}
			got := map[string]int{}
			for _, key := range []string{clientKeyA, clientKeyB} {
				if n := len(h.env(t, key).refresh); n > 0 {
					got[key] = n
				}
			}
			want := tt.wantSignals
			if want == nil {
				want = map[string]int{}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("pending refreshes (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPushRefreshCoalesces sends many refreshes with no poller to take them:
// they must leave exactly one pending signal per environment.
func TestPushRefreshCoalesces(t *testing.T) {
	h := newTestServer(t, func(c *Config) { c.AdminToken = sseToken }).listen(t, nil)
	for i := range 20 {
		if code, body := sseRefresh(t, h, "", sseBearer(sseToken)); code != http.StatusAccepted {
			t.Fatalf("refresh %d = %d %s; want 202", i, code, body)
		}
	}
	for _, key := range []string{clientKeyA, clientKeyB} {
		if n := len(h.env(t, key).refresh); n != 1 {
			t.Errorf("len(%s refresh) = %d after 20 calls; want 1", key, n)
		}
	}
}

// TestPushRefreshInFlightCoalesces holds a refresh-triggered poll at the
// upstream and sends more refreshes meanwhile: they must cause exactly one
// more poll, seen as no signal left pending once that poll is in flight.
func TestPushRefreshInFlightCoalesces(t *testing.T) {
	up := newUpstream(t)
	up.hold()
	up.set(serverKeyA, testDocument(clientKeyA, testTime(sseBase), "v1"))
	h := newTestServer(t, func(c *Config) {
		c.EnvironmentKeyPairs = c.EnvironmentKeyPairs[:1]
		c.APIURL = up.apiURL
		c.PollFrequency = 3600
		c.AdminToken = sseToken
	}).listen(t, nil)
	h.poll(t, pollClient(t))
	env := h.env(t, clientKeyA)
	arrive := func(what string) {
		t.Helper()
		select {
		case <-up.arrived:
		case <-time.After(testWait):
			t.Fatalf("no upstream request within %v for %s", testWait, what)
		}
	}

	arrive("the first poll")
	up.release <- struct{}{}
	eventually(t, "the first document published", func() bool { return env.snap.Load() != nil })

	if code, body := sseRefresh(t, h, "", sseBearer(sseToken)); code != http.StatusAccepted {
		t.Fatalf("refresh = %d %s; want 202", code, body)
	}
	arrive("the refresh poll")
	for i := range 5 {
		if code, body := sseRefresh(t, h, "", sseBearer(sseToken)); code != http.StatusAccepted {
			t.Fatalf("refresh %d while a poll is in flight = %d %s; want 202", i, code, body)
		}
	}
	if n := len(env.refresh); n != 1 {
		t.Errorf("len(refresh) = %d after 5 calls during a poll; want 1", n)
	}
	up.release <- struct{}{}
	arrive("the one poll the 5 calls coalesced into")
	if n := len(env.refresh); n != 0 {
		t.Errorf("len(refresh) = %d while the coalesced poll is in flight; want 0 (one poll for all 5 calls)", n)
	}
	up.release <- struct{}{}
}

// TestPushRefreshEndToEnd changes the upstream document with the pollers
// idle for an hour: a push refresh must bring the new flags and a realtime
// event at once, and a refresh answered 304 must send no event.
func TestPushRefreshEndToEnd(t *testing.T) {
	up := newUpstream(t)
	up.set(serverKeyA, testDocument(clientKeyA, testTime(sseBase), "v1"))
	up.set(serverKeyB, testDocument(clientKeyB, testTime(sseBase), "b1"))
	h := newTestServer(t, func(c *Config) {
		c.APIURL = up.apiURL
		c.PollFrequency = 3600
		c.AdminToken = sseToken
	}).listen(t, nil)
	h.poll(t, pollClient(t))
	eventually(t, "both environments polled once", func() bool {
		return h.env(t, clientKeyA).snap.Load() != nil && h.env(t, clientKeyB).snap.Load() != nil
	})
	st := sseOpen(t, h, sseStreamPath(clientKeyA), nil)
	st.wantUpdated(t, sseBase)
	checkFlag := func(want string, wantUpdatedAt time.Time) {
		t.Helper()
		code, header, body := h.do(t, "GET", "/api/v1/flags/", http.Header{"X-Environment-Key": {clientKeyA}})
		var flags []struct {
			Value any `json:"feature_state_value"`
		}
		if err := json.Unmarshal(body, &flags); code != http.StatusOK || err != nil || len(flags) != 1 || flags[0].Value != want {
			t.Fatalf("GET /api/v1/flags/ = %d %s; want one flag with value %q", code, body, want)
		}
		got, err := strconv.ParseFloat(header.Get(updatedAtHeader), 64)
		if err != nil || got != sseFloat(wantUpdatedAt) {
			t.Errorf("%s = %q; want %v", updatedAtHeader, header.Get(updatedAtHeader), sseFloat(wantUpdatedAt))
		}
	}
	checkFlag("v1", sseBase)

	v2At := sseBase.Add(90 * time.Second)
	up.set(serverKeyA, testDocument(clientKeyA, testTime(v2At), "v2"))
	if code, body := sseRefresh(t, h, "?environment="+clientKeyA, sseBearer(sseToken)); code != http.StatusAccepted {
		t.Fatalf("refresh = %d %s; want 202", code, body)
	}
	st.wantUpdated(t, v2At) // within testWait, against a poll period of an hour
	checkFlag("v2", v2At)
	if n := up.count(serverKeyB); n != 1 {
		t.Errorf("environment B polled %d times; want 1 (the refresh named A only)", n)
	}

	// Unchanged upstream: 304, no event. The next event must be v3's.
	if code, body := sseRefresh(t, h, "?environment="+clientKeyA, sseBearer(sseToken)); code != http.StatusAccepted {
		t.Fatalf("refresh = %d %s; want 202", code, body)
	}
	eventually(t, "the upstream answered 304", func() bool { return up.notModified() == 1 })
	v3At := v2At.Add(time.Minute)
	up.set(serverKeyA, testDocument(clientKeyA, testTime(v3At), "v3"))
	if code, body := sseRefresh(t, h, "?environment="+clientKeyA, sseBearer(sseToken)); code != http.StatusAccepted {
		t.Fatalf("refresh = %d %s; want 202", code, body)
	}
	st.wantUpdated(t, v3At)
	checkFlag("v3", v3At)
}
