package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The GOMEMLIMIT the README recommends for a gateway with 64 MB of memory,
// and the peak resident set the proxy must stay under with it, under load:
// what is left of the 64 MB goes to the kernel and the gateway's other
// processes.
const (
	smallDeviceGOMEMLIMIT = "24MiB"
	smallDeviceMaxRSS     = 32 << 20
)

var (
	memoryDuration = flag.Duration("memory-duration", 3*time.Second, "how long TestMemorySmallDevice loads the proxy")
	memoryLimit    = flag.String("memory-limit", smallDeviceGOMEMLIMIT, "the GOMEMLIMIT of TestMemorySmallDevice (off: none)")
	memoryStreams  = flag.Int("memory-streams", 200, "streams TestMemorySmallDevice keeps open")
	memoryConns    = flag.Int("memory-conns", 32, "connections TestMemorySmallDevice sends requests on")
)

// TestMemorySmallDevice runs the binary as on a 64 MB gateway
// (GOMEMLIMIT=24MiB) with ten environments of the benchmark document and
// loads it: identity and flags requests on 32 connections, and 200 open
// streams. Its peak resident set (VmHWM) must stay under 32 MiB. CI runs it
// for 3 s; the README's figures come from
// go test -run TestMemorySmallDevice -memory-duration 60s -v . (and
// -memory-limit off for the comparison).
func TestMemorySmallDevice(t *testing.T) {
	skipIfShort(t, "a scenario: measures the real binary's memory under load")
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("reads the resident set from /proc: Linux only")
	}
	docRaw, err := os.ReadFile(filepath.Join("testdata", "bench", "environment-document.json"))
	if err != nil {
		t.Fatalf("the benchmark document: %v", err)
	}
	bodyRaw, err := os.ReadFile(filepath.Join("testdata", "bench", "identity-body.json"))
	if err != nil {
		t.Fatalf("the benchmark identity body: %v", err)
	}
	var doc map[string]any
	mustUnmarshal(t, docRaw, &doc)
	var identity struct{ Traits json.RawMessage }
	mustUnmarshal(t, bodyRaw, &identity)

	// Ten environments, each the benchmark document under its own key.
	dir := t.TempDir()
	const envs = 10
	var pairs []map[string]string
	for i := range envs {
		client := fmt.Sprintf("MemoryEnv%02dClientKey", i)
		doc["api_key"] = client
		path := e2eWriteFile(t, dir, fmt.Sprintf("env-%02d.json", i), doc)
		pairs = append(pairs, map[string]string{
			"server_side_key": fmt.Sprintf("ser.memory-env-%02d", i), "client_side_key": client, "environment_document_path": path,
		})
	}
	port := freePort(t)
	cfgPath := e2eWriteFile(t, dir, "config.json", map[string]any{
		"environment_key_pairs": pairs,
		"server":                map[string]any{"host": "127.0.0.1", "port": port},
		"logging":               map[string]any{"log_format": "json"},
	})
	proc := startProcess(t, buildEdgeProxy(t), []string{"-config", cfgPath}, []string{"GOMEMLIMIT=" + *memoryLimit}, nil)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	tr := &http.Transport{MaxIdleConnsPerHost: *memoryConns}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	waitStatus(t, client, base+"/proxy/health/readiness", http.StatusOK, 15*time.Second)
	idle := memoryStatus(t, proc.cmd.Process.Pid)

	ctx, cancel := context.WithTimeout(t.Context(), *memoryDuration)
	defer cancel()

	// 500 streams, spread over the environments, open for the whole run.
	streams := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	var wg sync.WaitGroup
	var opened atomic.Int64
	for i := range *memoryStreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequestWithContext(ctx, "GET", base+sseStreamPath(pairs[i%envs]["client_side_key"]), nil)
			if err != nil {
				return
			}
			resp, err := streams.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				opened.Add(1)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
		}()
	}

	// 64 connections of identity and flags requests.
	var requests, failures atomic.Int64
	for w := range *memoryConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				pair := pairs[(w+n)%envs]
				method, path, body := "GET", "/api/v1/flags/", ""
				if n%4 != 0 { // the benchmark's traits, a new identifier each time
					method, path = "POST", "/api/v1/identities/"
					body = fmt.Sprintf(`{"identifier":"user-%d-%d","traits":%s}`, w, n, identity.Traits)
				}
				req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
				if err != nil {
					return
				}
				req.Header.Set("X-Environment-Key", pair["client_side_key"])
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						failures.Add(1)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failures.Add(1)
				}
				requests.Add(1)
			}
		}()
	}
	wg.Wait()
	peak := memoryStatus(t, proc.cmd.Process.Pid)

	t.Logf("GOMEMLIMIT=%s, %d environments, %v: %d requests on %d connections (%d failed), %d streams; RSS idle %.1f MiB, peak (VmHWM) %.1f MiB",
		*memoryLimit, envs, *memoryDuration, requests.Load(), *memoryConns, failures.Load(), opened.Load(),
		float64(idle["VmRSS"])/(1<<20), float64(peak["VmHWM"])/(1<<20))
	if failures.Load() > 0 || requests.Load() == 0 {
		t.Errorf("%d of %d requests failed; want every one answered 200", failures.Load(), requests.Load())
	}
	if opened.Load() != int64(*memoryStreams) {
		t.Errorf("%d of %d streams opened", opened.Load(), *memoryStreams)
	}
	if peak["VmHWM"] >= smallDeviceMaxRSS {
		t.Errorf("peak RSS %d bytes (%.1f MiB) with GOMEMLIMIT=%s; want under %d MiB", peak["VmHWM"], float64(peak["VmHWM"])/(1<<20), *memoryLimit, smallDeviceMaxRSS>>20)
	}
}

// memoryStatus reads the memory lines of /proc/PID/status, in bytes.
func memoryStatus(t testing.TB, pid int) map[string]int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(value)
		if !ok || !strings.HasPrefix(name, "Vm") || len(fields) != 2 || fields[1] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err == nil {
			out[name] = kb << 10
		}
	}
	if out["VmHWM"] == 0 {
		t.Fatalf("/proc/%d/status has no VmHWM", pid)
	}
	return out
}

// TestGCPercentFor: the collector's room to grow is Go's default for small
// heaps, about gcHeadroom bytes for large ones, and never below
// minGCPercent.
func TestGCPercentFor(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 100},
		{1 << 20, 100},
		{gcHeadroom, 100},
		{2 * gcHeadroom, 50},
		{3 * gcHeadroom, 33},
		{100 * gcHeadroom, minGCPercent},
	} {
		if got := gcPercentFor(c.live); got != c.want {
			t.Errorf("gcPercentFor(%d MiB) = %d; want %d", c.live>>20, got, c.want)
		}
	}
}

// TestTuneGCLeavesAnOperatorsGOGC: with GOGC set, the proxy never changes
// the collector's percentage.
func TestTuneGCLeavesAnOperatorsGOGC(t *testing.T) {
	t.Setenv("GOGC", "150")
	before := debug.SetGCPercent(150)
	defer debug.SetGCPercent(before)
	gcTuning.percent = 0
	tuneGC()
	if got := debug.SetGCPercent(150); got != 150 {
		t.Errorf("GOGC=150 set, tuneGC changed the percentage to %d", got)
	}
	if gcTuning.percent != 0 {
		t.Errorf("GOGC=150 set, tuneGC recorded %d", gcTuning.percent)
	}
}
