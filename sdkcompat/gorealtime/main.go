// Command gorealtime is the realtime half of the SDK compatibility tests for
// the Flagsmith Go SDK (github.com/Flagsmith/flagsmith-go-client/v4, pinned
// in go.mod): local evaluation with WithRealtime() and no polling, pointed
// at an edge proxy for both the environment document and the realtime
// stream. sdkcompat/chain.sh runs it.
//
// It prints "ready <value>" once the SDK holds the environment, then waits
// for FEATURE to take the value WANT and prints "seen_at_ms <Unix ms>".
// Only a realtime event can make the SDK fetch the document again, so
// seeing WANT proves that the proxy's event reached it.
//
// Exit status: 0 seen, 1 not seen within TIMEOUT_SECONDS, 2 setup problem.
//
// Environment: PROXY_URL (http://host:port), SERVER_KEY, FEATURE, WANT,
// TIMEOUT_SECONDS.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	flagsmith "github.com/Flagsmith/flagsmith-go-client/v4"
)

func main() {
	os.Exit(run())
}

func run() int {
	env := func(name string) string {
		v := os.Getenv(name)
		if v == "" {
			fmt.Fprintf(os.Stderr, "gorealtime: %s is not set (run this through chain.sh)\n", name)
			os.Exit(2)
		}
		return v
	}
	proxy := strings.TrimRight(env("PROXY_URL"), "/")
	feature, want := env("FEATURE"), env("WANT")
	timeout, err := strconv.Atoi(env("TIMEOUT_SECONDS"))
	if err != nil || timeout <= 0 {
		fmt.Fprintf(os.Stderr, "gorealtime: TIMEOUT_SECONDS=%q is not a positive number\n", os.Getenv("TIMEOUT_SECONDS"))
		return 2
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := flagsmith.NewClient(env("SERVER_KEY"),
		flagsmith.WithBaseURL(proxy+"/api/v1/"),
		flagsmith.WithLocalEvaluation(ctx),
		flagsmith.WithRealtime(),
		flagsmith.WithRealtimeBaseURL(proxy+"/"),
		flagsmith.WithSlogLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))),
	)

	value := func() (string, bool) {
		flags, err := client.GetEnvironmentFlags(ctx)
		if err != nil {
			return "", false
		}
		v, err := flags.GetFeatureValue(feature)
		if err != nil {
			return "", false
		}
		return fmt.Sprint(v), true
	}
	deadline := time.Now().Add(time.Duration(timeout) * time.Second)
	initial, ok := value()
	for ; !ok; initial, ok = value() {
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "gorealtime: the SDK never loaded the environment document")
			return 2
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("ready %s\n", initial)
	for {
		if v, _ := value(); v == want {
			fmt.Printf("seen_at_ms %d\n", time.Now().UnixMilli())
			return 0
		}
		if time.Now().After(deadline) {
			v, _ := value()
			fmt.Fprintf(os.Stderr, "gorealtime: %s = %q after %d s; want %q\n", feature, v, timeout, want)
			return 1
		}
		time.Sleep(5 * time.Millisecond)
	}
}
