// Command gopages is sdkcompat/pages.sh: Flagsmith's Go SDK (flagsmith-go-client v4, pinned in
// go.mod) in local-evaluation mode, pointed at the edge proxy whose upstream splits the
// environment document into three pages, as Flagsmith's Edge API does for a large environment.
// The SDK must see identity overrides that only the second and third pages carry: the proxy
// follows the pages and serves the merged document at GET /api/v1/environment-document/.
//
// As a control, the same SDK pointed at the paginating upstream directly must not see them
// (v4 reads the first page only), so the check cannot pass without the proxy's merge.
//
// Usage: gopages PATH_TO_EDGE_PROXY_BINARY DOCUMENT_JSON
// Exit status: 0 pass, 1 failure, 2 setup problem.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	flagsmith "github.com/Flagsmith/flagsmith-go-client/v4"
)

const (
	serverKey = "ser.compat-server-key-0001"
	clientKey = "CompatClientKey0000001"
	// The page ids need escaping in a URL, as opaque ids from an API may.
	page2 = "identity_override:2:a/b+c=d e"
	page3 = "identity_override:3:Zm9v/YmFy+=="
)

// override is an identity override of max_upload_mb (feature 3 of document.json).
func override(identifier string, value int) string {
	return `{"identifier": "` + identifier + `", "environment_api_key": "` + clientKey + `",
 "identity_uuid": "00000000-0000-4000-8000-00000000000` + strconv.Itoa(value%10) + `",
 "identity_features": [{"feature": {"id": 3, "name": "max_upload_mb", "type": "STANDARD"},
  "enabled": true, "django_id": ` + strconv.Itoa(30000+value%1000) + `, "featurestate_uuid": "0b6e7a2c-0000-4000-8000-00000000000` + strconv.Itoa(value%10) + `",
  "feature_state_value": ` + strconv.Itoa(value) + `, "multivariate_feature_state_values": []}],
 "identity_traits": []}`
}

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gopages:", err)
	}
	os.Exit(code)
}

func run() (int, error) {
	if len(os.Args) != 3 {
		return 2, errors.New("usage: gopages PATH_TO_EDGE_PROXY_BINARY DOCUMENT_JSON")
	}
	first, err := os.ReadFile(os.Args[2])
	if err != nil {
		return 2, err
	}
	up := &upstream{pages: map[string]page{
		"":    {body: first, next: page2},
		page2: {body: []byte(`{"api_key": "` + clientKey + `", "identity_overrides": [` + override("paged-carol", 2222) + `]}`), next: page3},
		page3: {body: []byte(`{"api_key": "` + clientKey + `", "identity_overrides": [` + override("paged-dave", 7777) + `]}`)},
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 2, err
	}
	go func() { _ = http.Serve(ln, up) }()
	upstreamURL := "http://" + ln.Addr().String()

	proxyURL, stop, err := startProxy(os.Args[1], upstreamURL)
	if err != nil {
		return 2, err
	}
	failed := false
	defer func() {
		if log := stop(); failed {
			fmt.Fprintf(os.Stderr, "gopages: the proxy's log:\n%s", log)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[string]float64{"vip-alice": 5000, "paged-carol": 2222, "paged-dave": 7777}
	viaProxy, err := uploadLimits(ctx, proxyURL, want)
	if err != nil {
		failed = true
		return 1, fmt.Errorf("through the proxy: %w", err)
	}
	direct, err := uploadLimits(ctx, upstreamURL, want)
	if err != nil {
		return 2, fmt.Errorf("the control, straight from the paginating upstream: %w", err)
	}
	for id, v := range want {
		if viaProxy[id] != v {
			fmt.Fprintf(os.Stderr, "gopages: FAIL: through the proxy max_upload_mb of %s = %v; want %v (its override)\n", id, viaProxy[id], v)
			failed = true
		}
	}
	if direct["paged-dave"] == want["paged-dave"] {
		fmt.Fprintf(os.Stderr, "gopages: FAIL (control): the SDK saw page 3's override without the proxy; this check no longer tells the proxy's merge apart\n")
		failed = true
	}
	if n := up.count(page3); n == 0 {
		fmt.Fprintf(os.Stderr, "gopages: FAIL: the upstream's page 3 was never requested\n")
		failed = true
	}
	if failed {
		return 1, nil
	}
	fmt.Printf("gopages: PASS: the Go SDK's local evaluation through the proxy sees the overrides of pages 2 and 3 %v (straight from the upstream it sees %v)\n", viaProxy, direct)
	return 0, nil
}

// uploadLimits evaluates max_upload_mb for each identity with the Go SDK in local-evaluation
// mode against the Flagsmith API at base.
func uploadLimits(ctx context.Context, base string, identities map[string]float64) (map[string]float64, error) {
	client := flagsmith.NewClient(serverKey,
		flagsmith.WithBaseURL(base+"/api/v1/"),
		// The SDK's own poller lives as long as the process: one stopped by
		// ctx at the end would log an ERROR after the verdict.
		flagsmith.WithLocalEvaluation(context.Background()),
		flagsmith.WithSlogLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	)
	if err := client.UpdateEnvironment(ctx); err != nil {
		return nil, fmt.Errorf("UpdateEnvironment: %w", err)
	}
	got := map[string]float64{}
	for id := range identities {
		flags, err := client.GetIdentityFlags(ctx, id, nil)
		if err != nil {
			return nil, fmt.Errorf("GetIdentityFlags(%s): %w", id, err)
		}
		v, err := flags.GetFeatureValue("max_upload_mb")
		if err != nil {
			return nil, fmt.Errorf("GetFeatureValue(max_upload_mb) of %s: %w", id, err)
		}
		got[id], _ = v.(float64)
	}
	return got, nil
}

// page is one page of the fake Flagsmith's document; next is the page_id its Link names.
type page struct {
	body []byte
	next string
}

// upstream is a fake Flagsmith API whose environment document comes in pages.
type upstream struct {
	pages map[string]page // by page_id; "" is page 1

	mu       sync.Mutex
	requests map[string]int
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/environment-document/" || r.Header.Get("X-Environment-Key") != serverKey {
		http.Error(w, `{"detail": "not found or wrong key"}`, http.StatusUnauthorized)
		return
	}
	id := r.URL.Query().Get("page_id")
	p, ok := u.pages[id]
	if !ok {
		http.NotFound(w, r)
		return
	}
	u.mu.Lock()
	if u.requests == nil {
		u.requests = map[string]int{}
	}
	u.requests[id]++
	u.mu.Unlock()
	if p.next != "" {
		w.Header().Set("Link", "</api/v1/environment-document/?page_id="+url.QueryEscape(p.next)+`>; rel="next"`)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(p.body)
}

func (u *upstream) count(id string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.requests[id]
}

// startProxy runs the proxy binary against upstreamURL on a free port and waits until it is
// ready (it is ready once it holds the document). stop ends it and returns its log.
func startProxy(binary, upstreamURL string) (base string, stop func() string, err error) {
	dir, err := os.MkdirTemp("", "gopages")
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	config, _ := json.Marshal(map[string]any{
		"environment_key_pairs": []map[string]string{{"server_side_key": serverKey, "client_side_key": clientKey}},
		"api_url":               upstreamURL + "/api/v1",
		"server":                map[string]any{"host": "127.0.0.1", "port": port, "drain_seconds": 0},
	})
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, config, 0o600); err != nil {
		return "", nil, err
	}
	var log bytes.Buffer
	cmd := exec.Command(binary, "-config", path)
	cmd.Stdout, cmd.Stderr = &log, &log
	// The proxy must not outlive this harness, even when a timeout kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() string {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		os.RemoveAll(dir)
		return log.String()
	}
	base = "http://127.0.0.1:" + strconv.Itoa(port)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get(base + "/proxy/health/readiness")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base, stop, nil
			}
		}
		if time.Now().After(deadline) {
			return "", nil, fmt.Errorf("the proxy was not ready within 15 s; its log:\n%s", stop())
		}
	}
}
