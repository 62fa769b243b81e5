package main

import (
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// shipPlatform is one platform the image is built for.
type shipPlatform struct {
	platform          string // as given to docker buildx --platform
	os, arch, variant string // BuildKit's TARGETOS, TARGETARCH, TARGETVARIANT
	machine           elf.Machine
	emulator          string // Debian qemu-user-static's emulator for it
	wantGOARM         string // the GOARM the binary must record ("" none)
}

// shipPlatforms are the image's platforms, as the Dockerfile's header and
// the README list them.
var shipPlatforms = []shipPlatform{
	{platform: "linux/amd64", os: "linux", arch: "amd64", machine: elf.EM_X86_64, emulator: "qemu-x86_64-static"},
	{platform: "linux/arm64", os: "linux", arch: "arm64", machine: elf.EM_AARCH64, emulator: "qemu-aarch64-static"},
	{platform: "linux/arm/v7", os: "linux", arch: "arm", variant: "v7", machine: elf.EM_ARM, emulator: "qemu-arm-static", wantGOARM: "7"},
}

// shipBuildStep is the Dockerfile's go build step, a shell script run with
// the build arguments in its environment, as BuildKit runs it.
func shipBuildStep(t testing.TB) string {
	t.Helper()
	all, _ := shipDockerfile(t)
	var step string
	for _, in := range all {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			step = in.args
		}
	}
	if step == "" {
		t.Fatal("the Dockerfile has no RUN … go build step")
	}
	return step
}

// shipCrossBuild runs the Dockerfile's build step for p, writing the binary
// to out instead of the image's /out/edge-proxy.
func shipCrossBuild(t testing.TB, step string, p shipPlatform, out string) {
	t.Helper()
	const imageOutput = "-o /out/edge-proxy"
	if !strings.Contains(step, imageOutput) {
		t.Fatalf("the Dockerfile's build step %q does not build %q", step, imageOutput)
	}
	script := strings.Replace(step, imageOutput, "-o "+out, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	// The container's environment: the build arguments, and nothing that
	// would steer go build differently from a clean golang image.
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "GOOS", "GOARCH", "GOARM", "GOARM64", "GOAMD64", "CGO_ENABLED", "GOFLAGS":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, "TARGETOS="+p.os, "TARGETARCH="+p.arch, "TARGETVARIANT="+p.variant, "VERSION="+stampedVersion)
	if raw, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's build step for %s: %v\n%s", p.platform, err, raw)
	}
}

// TestShipMultiArch builds the binary for every platform of the image as
// the Dockerfile does, and runs each one, under qemu-user-static where the
// machine is not of that architecture: -version, evaluate, and the demo
// document served, every answer byte for byte the same as the host
// architecture's. In CI a missing emulator fails the test; elsewhere it
// skips that platform.
func TestShipMultiArch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries; skipped with -short")
	}
	all, _ := shipDockerfile(t)
	t.Run("Dockerfile", func(t *testing.T) {
		var build shipInstruction
		for _, in := range all {
			if in.cmd == "FROM" && strings.HasSuffix(in.args, " AS build") {
				build = in
			}
		}
		if !strings.Contains(build.args, "--platform=$BUILDPLATFORM") {
			t.Errorf("build stage FROM %q; want --platform=$BUILDPLATFORM so that Go cross-compiles natively", build.args)
		}
		step := shipBuildStep(t)
		for _, want := range []string{`GOOS="$TARGETOS"`, `GOARCH="$TARGETARCH"`, `GOARM="${TARGETVARIANT#v}"`} {
			if !strings.Contains(step, want) {
				t.Errorf("build step %q lacks %s", step, want)
			}
		}
		var args []string
		for _, in := range all {
			if in.cmd == "ARG" {
				args = append(args, strings.Fields(in.args)...)
			}
		}
		for _, want := range []string{"TARGETOS", "TARGETARCH", "TARGETVARIANT"} {
			if !slices.Contains(args, want) {
				t.Errorf("the Dockerfile declares no ARG %s (BuildKit sets it only for a declared ARG)", want)
			}
		}
	})

	step := shipBuildStep(t)
	dir := t.TempDir()
	bins := map[string]string{}
	for _, p := range shipPlatforms {
		bin := filepath.Join(dir, "edge-proxy-"+strings.ReplaceAll(p.platform, "/", "-"))
		shipCrossBuild(t, step, p, bin)
		bins[p.platform] = bin
		shipCheckBinary(t, p, bin)
	}

	// The host's own platform answers first; every other must match it.
	var host shipPlatform
	for _, p := range shipPlatforms {
		if p.arch == runtime.GOARCH {
			host = p
		}
	}
	if host.platform == "" {
		t.Fatalf("the host architecture %s is not one of the image's platforms", runtime.GOARCH)
	}
	want := shipAnswers(t, host, bins[host.platform], nil)
	for _, p := range shipPlatforms {
		if p == host {
			continue
		}
		t.Run(p.platform, func(t *testing.T) {
			emulator, err := exec.LookPath(p.emulator)
			if err != nil {
				msg := fmt.Sprintf("%s not found: install Debian's qemu-user-static (apt-get install -y qemu-user-static) to run the %s binary", p.emulator, p.platform)
				if os.Getenv("CI") == "true" {
					t.Fatal(msg)
				}
				t.Skip(msg)
			}
			got := shipAnswers(t, p, bins[p.platform], []string{emulator})
			for _, name := range slices.Sorted(maps.Keys(want)) {
				if got[name] != want[name] {
					t.Errorf("%s on %s:\n%.600s\nwant, as on %s:\n%.600s", name, p.platform, got[name], host.platform, want[name])
				}
			}
		})
	}
}

// shipCheckBinary checks what the image relies on: the target's machine
// code, statically linked, with the arm variant recorded, and reports its
// size (the README's table).
func shipCheckBinary(t testing.TB, p shipPlatform, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != p.machine {
		t.Errorf("%s binary: ELF machine %v; want %v", p.platform, f.Machine, p.machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
			t.Errorf("%s binary: program header %v; want a static binary", p.platform, prog.Type)
		}
	}
	settings, err := shipBuildSettings(bin)
	if err != nil {
		t.Fatalf("%s binary: build settings: %v", p.platform, err)
	}
	if settings["GOARCH"] != p.arch || settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("%s binary built with GOARCH=%s CGO_ENABLED=%s -trimpath=%s; want %s, 0, true",
			p.platform, settings["GOARCH"], settings["CGO_ENABLED"], settings["-trimpath"], p.arch)
	}
	if p.wantGOARM != "" && settings["GOARM"] != p.wantGOARM {
		t.Errorf("%s binary built with GOARM=%q; want %q", p.platform, settings["GOARM"], p.wantGOARM)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s binary: %d bytes (%.2f MiB)", p.platform, fi.Size(), float64(fi.Size())/(1<<20))
}

// shipBuildSettings reads the build settings recorded in a binary of any
// architecture, from the "build KEY=VALUE" lines of go version -m.
func shipBuildSettings(bin string) (map[string]string, error) {
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		return nil, err
	}
	settings := map[string]string{}
	for line := range strings.Lines(string(out)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "build\t"); ok {
			key, value, _ := strings.Cut(rest, "=")
			settings[key] = strings.TrimSpace(value)
		}
	}
	if len(settings) == 0 {
		return nil, fmt.Errorf("go version -m printed no build settings:\n%s", out)
	}
	return settings, nil
}

// shipIdentities are identity requests for the demo document: segment
// matches, an identity override, and enough identifiers to spread over the
// percentage splits, where 32-bit arithmetic would show.
func shipIdentities() []string {
	bodies := []string{
		`{"identifier":"carol","traits":[{"trait_key":"plan","trait_value":"premium"},{"trait_key":"country","trait_value":"GB"}]}`,
		`{"identifier":"vip@example.com","traits":[]}`,
		`{"identifier":"beta","traits":[{"trait_key":"beta_tester","trait_value":true},{"trait_key":"app_version","trait_value":"2.4.1"},{"trait_key":"logins","trait_value":250},{"trait_key":"team_size","trait_value":12.5}]}`,
	}
	for i := range 40 {
		bodies = append(bodies, fmt.Sprintf(`{"identifier":"user-%d","traits":[{"trait_key":"logins","trait_value":%d},{"trait_key":"country","trait_value":"FR"}]}`, i, i*7))
	}
	return bodies
}

// shipAnswers runs bin (through the emulator command, when given) and
// collects its answers by name: -version, evaluate, and each request to the
// demo document served.
func shipAnswers(t testing.TB, p shipPlatform, bin string, emulator []string) map[string]string {
	t.Helper()
	argv := func(args ...string) (string, []string) {
		full := append(append(slices.Clone(emulator), bin), args...)
		return full[0], full[1:]
	}
	answers := map[string]string{}
	runOnce := func(name string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		cmdName, cmdArgs := argv(args...)
		out, err := exec.CommandContext(ctx, cmdName, cmdArgs...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s on %s: %v\n%s", bin, strings.Join(args, " "), p.platform, err, out)
		}
		answers[name] = string(out)
	}
	runOnce("-version", "-version")
	if want := "edge-proxy " + stampedVersion + "\n"; answers["-version"] != want {
		t.Errorf("-version on %s = %q; want %q", p.platform, answers["-version"], want)
	}
	runOnce("evaluate carol", "evaluate", "-document", demoDocumentPath, "-identifier", "carol", "-trait", "plan=premium", "-json")

	doc, err := filepath.Abs(demoDocumentPath)
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cfgPath := e2eWriteFile(t, t.TempDir(), "config.json", map[string]any{
		"environment_key_pairs": []map[string]string{{"server_side_key": demoServerKey, "client_side_key": demoClientKey, "environment_document_path": doc}},
		"server":                map[string]any{"host": "127.0.0.1", "port": port},
		"logging":               map[string]any{"log_format": "json"},
	})
	cmdName, cmdArgs := argv("-config", cfgPath)
	proc := startProcess(t, cmdName, cmdArgs, []string{"PATH=/usr/bin:/bin"}, nil)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	// Compare bytes as sent: no transparent gzip.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(client.CloseIdleConnections)
	waitStatus(t, client, base+"/proxy/health/readiness", http.StatusOK, 60*time.Second)

	record := func(name, method, path, key, body string) {
		t.Helper()
		resp, raw := httpDo(t, client, method, base+path, key, body)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s on %s = %d %.300s; want 200", name, p.platform, resp.StatusCode, raw)
		}
		answers[name] = fmt.Sprintf("%d %s %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("ETag"), raw)
	}
	record("flags, client key", "GET", "/api/v1/flags/", demoClientKey, "")
	record("flags, server key", "GET", "/api/v1/flags/", demoServerKey, "")
	record("one flag", "GET", "/api/v1/flags/?feature=checkout_button_colour", demoClientKey, "")
	record("environment document", "GET", "/api/v1/environment-document/", demoServerKey, "")
	record("identity by GET", "GET", "/api/v1/identities/?identifier=user-3", demoClientKey, "")
	for i, body := range shipIdentities() {
		record(fmt.Sprintf("identity %d %.40s", i, body), "POST", "/api/v1/identities/", demoClientKey, body)
	}
	var flags []apiFlag
	if err := json.Unmarshal([]byte(strings.SplitN(answers["flags, client key"], "\n", 2)[1]), &flags); err != nil || len(flags) == 0 {
		t.Errorf("flags on %s: %v, %d flags; want the demo document's flags", p.platform, err, len(flags))
	}

	if err := proc.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := proc.wait(t, 60*time.Second); err != nil {
		t.Errorf("%s exit after SIGINT = %v; want status 0", p.platform, err)
	}
	return answers
}
