// Command goanalytics is the Go half of sdkcompat/analytics.sh: Flagsmith's Go SDK
// (flagsmith-go-client v4, pinned in go.mod) with WithAnalytics evaluates known flags a known
// number of times through the edge proxy, and the fake Flagsmith behind the proxy must receive
// exactly those counts (from this SDK's label set), with no warning or error from the SDK.
//
// The SDK flushes its analytics on its own 10-second ticker (there is no public flush), so
// this takes about 12 s.
//
// Environment: PROXY_URL (e.g. http://127.0.0.1:8000), SERVER_KEY, UPSTREAM_URL (the fake
// Flagsmith, for GET /control/analytics), FLUSH_SECONDS (the proxy's
// analytics.flush_interval_seconds).
//
// Exit status: 0 pass, 1 failure, 2 setup problem.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	flagsmith "github.com/Flagsmith/flagsmith-go-client/v4"
)

// sdkLabel is how the fake Flagsmith names this SDK's posts: the Go SDK sends resty's
// User-Agent and no Flagsmith-SDK-User-Agent.
const sdkLabel = "go-resty"

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "goanalytics:", err)
	}
	os.Exit(code)
}

// warnings records every SDK log record at Warn or above.
type warnings struct {
	mu      sync.Mutex
	records []string
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.records = append(w.records, r.Level.String()+" "+r.Message)
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

func (w *warnings) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.records)
}

func run() (int, error) {
	proxy, serverKey, upstream := os.Getenv("PROXY_URL"), os.Getenv("SERVER_KEY"), os.Getenv("UPSTREAM_URL")
	flush, err := strconv.ParseFloat(os.Getenv("FLUSH_SECONDS"), 64)
	if proxy == "" || serverKey == "" || upstream == "" || err != nil || flush <= 0 {
		return 2, fmt.Errorf("PROXY_URL, SERVER_KEY, UPSTREAM_URL and FLUSH_SECONDS must be set (run this through analytics.sh)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	warn := &warnings{}
	client := flagsmith.NewClient(serverKey,
		flagsmith.WithBaseURL(strings.TrimRight(proxy, "/")+"/api/v1/"),
		flagsmith.WithAnalytics(ctx),
		flagsmith.WithSlogLogger(slog.New(warn)),
	)

	want := map[string]int{}
	flags, err := client.GetEnvironmentFlags(ctx)
	if err != nil {
		return 1, fmt.Errorf("GetEnvironmentFlags: %w", err)
	}
	for range 9 {
		if on, err := flags.IsFeatureEnabled("dark_mode"); err != nil || !on {
			return 1, fmt.Errorf("IsFeatureEnabled(dark_mode) = %v, %v; want true", on, err)
		}
		want["dark_mode"]++
	}
	for range 2 {
		if v, err := flags.GetFeatureValue("api_rate_limit"); err != nil || v != float64(1000) {
			return 1, fmt.Errorf("GetFeatureValue(api_rate_limit) = %v, %v; want 1000", v, err)
		}
		want["api_rate_limit"]++
	}
	identity, err := client.GetIdentityFlags(ctx, "go-analytics-user", nil)
	if err != nil {
		return 1, fmt.Errorf("GetIdentityFlags: %w", err)
	}
	for range 5 {
		if _, err := identity.IsFeatureEnabled("show_promotions"); err != nil {
			return 1, fmt.Errorf("IsFeatureEnabled(show_promotions): %w", err)
		}
		want["show_promotions"]++
	}
	fmt.Printf("goanalytics: evaluated %v; waiting for the SDK's 10 s analytics ticker\n", want)

	// The SDK posts after 10 s, the proxy forwards within FLUSH_SECONDS.
	deadline := time.Now().Add(25 * time.Second)
	var got map[string]int
	for {
		if got, err = upstreamSums(upstream); err != nil {
			return 2, err
		}
		if maps.Equal(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Two more proxy flush intervals: a count sent twice would show now.
	time.Sleep(time.Duration(2.5 * flush * float64(time.Second)))
	if got, err = upstreamSums(upstream); err != nil {
		return 2, err
	}
	failed := false
	if !maps.Equal(got, want) {
		fmt.Fprintf(os.Stderr, "goanalytics: FAIL: the upstream received %v from the Go SDK; want %v\n", got, want)
		failed = true
	}
	if w := warn.list(); len(w) > 0 {
		fmt.Fprintf(os.Stderr, "goanalytics: FAIL: the Go SDK logged %d warnings or errors: %q\n", len(w), w)
		failed = true
	}
	if failed {
		return 1, nil
	}
	fmt.Printf("goanalytics: PASS: the upstream received exactly %v from the Go SDK\n", got)
	return 0, nil
}

// upstreamSums reads the fake Flagsmith's v1 sums for this SDK.
func upstreamSums(upstream string) (map[string]int, error) {
	resp, err := http.Get(strings.TrimRight(upstream, "/") + "/control/analytics")
	if err != nil {
		return nil, fmt.Errorf("read the fake upstream's analytics: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		V1       map[string]map[string]int `json:"v1"`
		Rejected []string                  `json:"rejected"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("read the fake upstream's analytics: %w", err)
	}
	if len(body.Rejected) > 0 {
		return nil, fmt.Errorf("the fake upstream rejected analytics posts: %q", body.Rejected)
	}
	if body.V1[sdkLabel] == nil {
		return map[string]int{}, nil
	}
	return body.V1[sdkLabel], nil
}
