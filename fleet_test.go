package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The fleet scenario: three replicas of the built binary behind one name,
// in a network namespace of their own (root and iproute2 needed, as in CI).
// A push to one replica reaches the others through peer relays.

// fleetNamespaceEnv names, in the test binary re-run inside the namespace,
// the namespace it runs in; fleetBinaryEnv the edge-proxy binary to start.
const (
	fleetNamespaceEnv = "EDGE_PROXY_FLEET_NETNS"
	fleetBinaryEnv    = "EDGE_PROXY_FLEET_BIN"
	fleetPeerName     = "edge-fleet"
	fleetRuns         = 5
)

// The fleet's addresses inside the namespace: the replicas, a peer that
// accepts connections and never answers, and one where nothing listens.
var (
	fleetReplicas = []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	fleetSilent   = "127.0.0.9"
	fleetDead     = "127.0.0.10"
)

// TestFleetEndToEnd starts three replicas on 127.0.0.2-4 sharing one port
// in a network namespace whose hosts file resolves one name to all three,
// a silent address and a dead one; that name is their peers. A signed
// webhook to one replica makes every replica serve the change within a
// second with one upstream poll each; the silent and dead peers are skipped
// and counted; a relayed push is not relayed again; forged, unsigned and
// old relays are refused and poll nothing. It sets the namespace up, then
// runs itself inside it (fleetInNamespace).
func TestFleetEndToEnd(t *testing.T) {
	if ns := os.Getenv(fleetNamespaceEnv); ns != "" {
		fleetInNamespace(t, ns)
		return
	}
	if testing.Short() {
		t.Skip("starts three binaries in a network namespace; skipped under -short")
	}
	// CI runs as root with iproute2 installed (.ci/run installs it): there,
	// what is missing fails the test instead of skipping it.
	unavailable := t.Skipf
	if os.Getenv("CI") == "true" {
		unavailable = t.Fatalf
	}
	if _, err := exec.LookPath("ip"); err != nil {
		unavailable("the fleet test needs ip from iproute2 (apt-get install -y iproute2): %v", err)
	}
	if os.Geteuid() != 0 {
		unavailable("the fleet test needs root to create a network namespace")
	}
	bin := buildEdgeProxy(t)

	ns := fmt.Sprintf("edge-fleet-%d", os.Getpid())
	etc := filepath.Join("/etc/netns", ns)
	// Cleanups first, so that a failure anywhere below still removes the
	// namespace, its hosts file, and any process left in it.
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, field := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(field); err == nil {
					if p, err := os.FindProcess(pid); err == nil {
						_ = p.Kill()
					}
				}
			}
		}
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
		if err := os.RemoveAll(etc); err != nil {
			t.Errorf("remove %s: %v", etc, err)
		}
	})
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := "127.0.0.1 localhost\n"
	for _, ip := range append(slices.Clone(fleetReplicas), fleetSilent, fleetDead) {
		hosts += ip + " " + fleetPeerName + "\n"
	}
	if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"netns", "add", ns}, {"netns", "exec", ns, "ip", "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			unavailable("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, os.Args[0],
		"-test.run=^TestFleetEndToEnd$", "-test.count=1", "-test.v", "-test.timeout=150s")
	cmd.Env = append(os.Environ(), fleetNamespaceEnv+"="+ns, fleetBinaryEnv+"="+bin)
	out, err := cmd.CombinedOutput()
	t.Logf("inside the namespace %s:\n%s", ns, out)
	if err != nil {
		t.Fatalf("the fleet test inside the namespace failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestFleetEndToEnd") {
		t.Fatal("the fleet test inside the namespace did not pass")
	}
}

// fleetReplica is one replica of the fleet: its process and address.
type fleetReplica struct {
	ip   string
	base string
	proc *proxyProcess
}

func fleetInNamespace(t *testing.T, ns string) {
	bin := os.Getenv(fleetBinaryEnv)
	if bin == "" {
		t.Fatalf("%s is not set", fleetBinaryEnv)
	}
	addrs, err := net.DefaultResolver.LookupHost(context.Background(), fleetPeerName)
	if err != nil || len(addrs) != 5 {
		t.Fatalf("%s resolves to %v (%v) inside namespace %s; want the 5 addresses of its hosts file", fleetPeerName, addrs, err, ns)
	}

	// One port for every replica: they differ by address only, as pods do.
	probe, err := net.Listen("tcp", fleetReplicas[0]+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()

	// The silent peer completes the TCP handshake and never answers.
	silent, err := net.Listen("tcp", net.JoinHostPort(fleetSilent, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	var silentConns atomic.Int64
	var held sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			silentConns.Add(1)
			held.Lock()
			conns = append(conns, c)
			held.Unlock()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		held.Lock()
		defer held.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	// The upstream, counting polls per replica: each replica's api_url has
	// its own path prefix.
	u := newUpstreamInMemory(t)
	var pollsMu sync.Mutex
	polls := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		replica, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		pollsMu.Lock()
		polls[replica]++
		pollsMu.Unlock()
		r.URL.Path = "/" + rest
		u.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	pollCount := func(ip string) int {
		pollsMu.Lock()
		defer pollsMu.Unlock()
		return polls[ip]
	}

	const (
		documentID    = "4242"
		webhookSecret = "fleet-webhook-secret-0001"
		peerSecret    = "fleet-peer-secret-0000000001"
		adminToken    = "fleet-admin-token-000000001"
	)
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	version := func(i int) (doc []byte, banner string) {
		banner = fmt.Sprintf("v%d", i)
		return testDocument(clientKeyA, testTime(start.Add(time.Duration(i)*time.Minute)), banner,
			func(doc map[string]any) { doc["id"] = json.Number(documentID) }), banner
	}
	doc, _ := version(0)
	u.set(serverKeyA, doc)

	var replicas []*fleetReplica
	for _, ip := range fleetReplicas {
		cfg := map[string]any{
			"environment_key_pairs": []map[string]string{{"server_side_key": serverKeyA, "client_side_key": clientKeyA}},
			"api_url":               srv.URL + "/" + ip + "/api/v1",
			// Only pushes poll during the test: each push's polls are counted.
			"api_poll_frequency_seconds": 600,
			"webhook_secret":             webhookSecret,
			"admin_token":                adminToken,
			"sse":                        map[string]any{"authentication_token": adminToken},
			"peers":                      []string{fmt.Sprintf("http://%s:%d", fleetPeerName, port)},
			"peer_secret":                peerSecret,
			"server":                     map[string]any{"host": ip, "port": port, "drain_seconds": 0},
			"logging":                    map[string]any{"log_format": "json"},
		}
		raw, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		r := &fleetReplica{ip: ip, base: fmt.Sprintf("http://%s:%d", ip, port)}
		r.proc = startProcess(t, bin, []string{"-config", path}, nil, nil)
		replicas = append(replicas, r)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, r := range replicas {
		waitStatus(t, client, r.base+"/proxy/health/readiness", http.StatusOK, testWait)
	}

	// Each kind of push, to one replica; every replica must serve the new
	// version within a second, with one poll each.
	type push struct {
		kind string
		to   int
	}
	var pushes []push
	for range fleetRuns {
		pushes = append(pushes, push{"webhook", 0})
	}
	pushes = append(pushes, push{"refresh", 1}, push{"queue-change", 2})
	received := make([]int, len(replicas)) // pushes each replica took directly
	var lasts []time.Duration
	for i, p := range pushes {
		doc, banner := version(i + 1)
		u.set(serverKeyA, doc)
		before := make([]int, len(replicas))
		for j, r := range replicas {
			before[j] = pollCount(r.ip)
		}
		to := replicas[p.to]
		var req *http.Request
		switch p.kind {
		case "webhook":
			body := fmt.Sprintf(`{"event_type": "FLAG_UPDATED", "data": {"new_state": {"environment": %s}}}`, documentID)
			req, _ = http.NewRequest(http.MethodPost, to.base+"/proxy/webhook", strings.NewReader(body))
			req.Header.Set("X-Flagsmith-Signature", syncSign(webhookSecret, body))
		case "refresh":
			req, _ = http.NewRequest(http.MethodPost, to.base+"/proxy/refresh", nil)
			req.Header.Set("Authorization", "Bearer "+adminToken)
		case "queue-change":
			req, _ = http.NewRequest(http.MethodPost, to.base+"/sse/environments/"+clientKeyA+"/queue-change",
				strings.NewReader(`{"updated_at": "2026-12-01T12:00:00Z"}`))
			req.Header.Set("Authorization", "Token "+adminToken)
		}
		sent := time.Now()
		resp, body := roundTrip(t, client, req)
		answered := time.Since(sent)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s to %s: %d %s", p.kind, to.ip, resp.StatusCode, body)
		}
		received[p.to]++
		// The relay goes out after the answer: a silent peer costs it a
		// second, which the push must not wait for.
		if answered > 500*time.Millisecond {
			t.Errorf("%s to %s answered after %v; relays must not hold it", p.kind, to.ip, answered)
		}
		served := make([]time.Duration, len(replicas))
		var wg sync.WaitGroup
		for j, r := range replicas {
			wg.Go(func() { served[j] = fleetWaitServed(client, r.base, banner, sent) })
		}
		wg.Wait()
		last := slices.Max(served)
		lasts = append(lasts, last)
		t.Logf("%s to %s: answered in %v; replicas serve %s after %v; last %v", p.kind, to.ip,
			answered.Round(time.Millisecond), banner, fleetRound(served), last.Round(time.Millisecond))
		for j, d := range served {
			if d > time.Second {
				t.Errorf("%s to %s: %s served %s after %v; want within 1s", p.kind, to.ip, replicas[j].ip, banner, d)
			}
		}
		// Past the push interval, any extra poll a push caused has been made.
		time.Sleep(time.Until(sent.Add(1500 * time.Millisecond)))
		for j, r := range replicas {
			if got := pollCount(r.ip) - before[j]; got != 1 {
				t.Errorf("%s to %s: %s polled the upstream %d times; want 1", p.kind, to.ip, r.ip, got)
			}
		}
	}
	sorted := slices.Sorted(slices.Values(lasts))
	t.Logf("push to last replica serving, %d runs: min %v, median %v, max %v", len(sorted),
		sorted[0].Round(time.Millisecond), sorted[len(sorted)/2].Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond))

	// Relays refused: unsigned, signed with another secret, with a body
	// other than the one signed, and signed too long ago.
	target := replicas[1]
	beforePolls := pollCount(target.ip)
	relayBody := `{"all": true}`
	for _, c := range []struct {
		reason, body, signature string
	}{
		{"unsigned", relayBody, ""},
		{"another secret", relayBody, signPeerRefresh([]byte(relayBody), "another-peer-secret-00001", time.Now())},
		{"body changed", `{"environments": ["` + clientKeyA + `"]}`, signPeerRefresh([]byte(relayBody), peerSecret, time.Now())},
		{"replayed after 2 minutes", relayBody, signPeerRefresh([]byte(relayBody), peerSecret, time.Now().Add(-2*time.Minute))},
	} {
		req, _ := http.NewRequest(http.MethodPost, target.base+peerRefreshPath, strings.NewReader(c.body))
		if c.signature != "" {
			req.Header.Set(peerSignatureHeader, c.signature)
		}
		if resp, body := roundTrip(t, client, req); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("relay %s: %d %s; want 401", c.reason, resp.StatusCode, body)
		}
	}
	time.Sleep(1200 * time.Millisecond)
	if got := pollCount(target.ip) - beforePolls; got != 0 {
		t.Errorf("refused relays made %s poll %d times; want 0", target.ip, got)
	}

	// The counters: each replica relayed exactly the pushes it took itself,
	// once to each other replica, the silent peer (timeout) and the dead
	// one; relays received were never relayed on.
	for j, r := range replicas {
		m := fleetMetrics(t, client, r.base)
		want := map[string]int{
			`edge_proxy_peer_relays_total{result="ok"}`:          2 * received[j],
			`edge_proxy_peer_relays_total{result="timeout"}`:     received[j],
			`edge_proxy_peer_relays_total{result="unreachable"}`: received[j],
			`edge_proxy_peer_relays_total{result="refused"}`:     0,
			`edge_proxy_peer_refreshes_total{result="accepted"}`: len(pushes) - received[j],
		}
		if j == 1 {
			want[`edge_proxy_peer_refreshes_total{result="refused"}`] = 4
		}
		for name, n := range want {
			if m[name] != n {
				t.Errorf("%s: %s = %d; want %d", r.ip, name, m[name], n)
			}
		}
	}
	if got := silentConns.Load(); got != int64(len(pushes)) {
		t.Errorf("the silent peer had %d connections; want %d, one per push", got, len(pushes))
	}
}

// fleetWaitServed polls base's flags until banner is served and returns the
// time since sent; past 3 s it gives up and returns that.
func fleetWaitServed(client *http.Client, base, banner string, sent time.Time) time.Duration {
	for time.Since(sent) < 3*time.Second {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/flags/", nil)
		req.Header.Set("X-Environment-Key", clientKeyA)
		if resp, err := client.Do(req); err == nil {
			var flags []apiFlag
			err := json.NewDecoder(resp.Body).Decode(&flags)
			resp.Body.Close()
			if err == nil && string(flagsByName(flags)["banner"].Value) == strconv.Quote(banner) {
				return time.Since(sent)
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(sent)
}

func fleetRound(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

var metricLine = regexp.MustCompile(`^(edge_proxy_peer_\w+\{[^}]*\}) (\d+)$`)

// fleetMetrics reads the peer counters of base's /metrics.
func fleetMetrics(t testing.TB, client *http.Client, base string) map[string]int {
	t.Helper()
	resp, body := httpDo(t, client, http.MethodGet, base+"/metrics", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d", base, resp.StatusCode)
	}
	out := map[string]int{}
	for line := range strings.SplitSeq(string(body), "\n") {
		if m := metricLine.FindStringSubmatch(line); m != nil {
			out[m[1]], _ = strconv.Atoi(m[2])
		}
	}
	return out
}
