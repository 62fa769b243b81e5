package main

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestShipDependencies guards the dependency promise: the binary imports
// the standard library, this module and golang.org/x/sync, nothing else.
func TestShipDependencies(t *testing.T) {
	modPath := shipModulePath(t)
	for _, cgo := range []string{"0", "1"} {
		t.Run("CGO_ENABLED="+cgo, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), "go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
			cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list -deps: %v\n%s", err, stderr.Bytes())
			}
			var self bool
			for _, pkg := range strings.Fields(string(out)) {
				switch {
				case pkg == modPath:
					self = true
				case strings.HasPrefix(pkg, "golang.org/x/sync/"):
				default:
					t.Errorf("the binary depends on %s; only the standard library and golang.org/x/sync are allowed", pkg)
				}
			}
			if !self {
				t.Errorf("go list -deps output %q lacks the module itself (%s)", out, modPath)
			}
		})
	}
}

func shipModulePath(t testing.TB) string {
	t.Helper()
	raw, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(raw)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatal("go.mod has no module line")
	return ""
}

// shipInstruction is one Dockerfile instruction, continuation lines joined.
type shipInstruction struct {
	cmd  string // upper case: FROM, RUN, COPY, …
	args string
}

// shipDockerfile reads the Dockerfile's instructions; runtime holds those of
// its last stage.
func shipDockerfile(t testing.TB) (all, runtime []shipInstruction) {
	t.Helper()
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var cur string
	for line := range strings.Lines(string(raw)) {
		line = strings.TrimRight(line, "\r\n")
		trimmed := strings.TrimSpace(line)
		if cur == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") { // a comment inside a continued instruction
			continue
		}
		if cont, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur += cont + " "
			continue
		}
		cur += trimmed
		cmd, args, _ := strings.Cut(cur, " ")
		in := shipInstruction{strings.ToUpper(cmd), strings.Join(strings.Fields(args), " ")}
		all = append(all, in)
		if in.cmd == "FROM" {
			runtime = nil
		}
		runtime = append(runtime, in)
		cur = ""
	}
	return all, runtime
}

// shipExecForm decodes an exec-form (JSON array) command.
func shipExecForm(t testing.TB, s string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(s), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("%q is not an exec-form command: %v", s, err)
	}
	return argv
}

// shipImage is what the runtime stage of the Dockerfile describes.
type shipImage struct {
	entrypoint  []string
	healthcheck []string
	env         []string
	workdir     string
	user        string
	expose      string
}

func shipRuntimeImage(t testing.TB) shipImage {
	t.Helper()
	_, runtime := shipDockerfile(t)
	var img shipImage
	for _, in := range runtime {
		switch in.cmd {
		case "ENTRYPOINT":
			img.entrypoint = shipExecForm(t, in.args)
		case "HEALTHCHECK":
			_, cmd, ok := strings.Cut(in.args, "CMD ")
			if !ok {
				t.Fatalf("HEALTHCHECK %q has no CMD", in.args)
			}
			img.healthcheck = shipExecForm(t, cmd)
		case "ENV":
			for _, kv := range strings.Fields(in.args) {
				if !strings.Contains(kv, "=") {
					t.Fatalf("ENV %q: use the key=value form", in.args)
				}
				img.env = append(img.env, kv)
			}
		case "WORKDIR":
			img.workdir = in.args
		case "USER":
			img.user = in.args
		case "EXPOSE":
			img.expose = in.args
		}
	}
	if img.entrypoint == nil || img.workdir == "" {
		t.Fatalf("the Dockerfile's runtime stage has no ENTRYPOINT or WORKDIR: %+v", img)
	}
	return img
}

func shipEnvValue(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// TestShipDockerfileBuild checks that buildEdgeProxy builds as the
// Dockerfile does, so that the binary the other ship tests run is the one
// the image holds.
func TestShipDockerfileBuild(t *testing.T) {
	all, _ := shipDockerfile(t)
	var build string
	for _, in := range all {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			build = in.args
		}
	}
	if build == "" {
		t.Fatal("the Dockerfile has no RUN … go build step")
	}
	flags := dockerBuildFlags("${VERSION}")
	for _, want := range []string{"CGO_ENABLED=0", flags[0], flags[1] + ` "` + flags[2] + `"`} {
		if !strings.Contains(build, want) {
			t.Errorf("Dockerfile build step %q lacks %q (buildEdgeProxy builds with it)", build, want)
		}
	}
}

// TestShipEmptyRoot is issue "Ship it": the binary built as the Dockerfile
// builds it is static and runs in a root holding only what the image holds,
// as the image's user, serving the example configuration.
func TestShipEmptyRoot(t *testing.T) {
	skipIfShort(t, "builds the release binary and runs it in an empty root")
	bin := buildEdgeProxy(t)
	img := shipRuntimeImage(t)

	t.Run("static", func(t *testing.T) {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("program header %v: the binary needs a dynamic loader; want a static binary", p.Type)
			}
		}
		if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
			t.Errorf("ImportedLibraries() = %q, %v; want none", libs, err)
		}
		if syms, _ := f.ImportedSymbols(); len(syms) > 0 {
			t.Errorf("the binary imports %d dynamic symbols (%v …); want none", len(syms), syms[0])
		}
		// -s -w: no symbol table, no DWARF.
		for _, s := range f.Sections {
			if s.Name == ".symtab" || strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
				t.Errorf("section %s present; -ldflags \"-s -w\" should have dropped it", s.Name)
			}
		}
	})

	t.Run("trimpath", func(t *testing.T) {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte(wd+"/")) {
			t.Errorf("the binary holds the build directory %s; -trimpath should have removed it", wd)
		}
	})

	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatalf("the host's CA bundle (the image copies it from its build stage): %v", err)
	}
	t.Logf("binary size: %d bytes (%.2f MiB); with the CA bundle: %.2f MB", fi.Size(), float64(fi.Size())/(1<<20), float64(fi.Size()+int64(len(ca)))/1e6)
	if size := fi.Size() + int64(len(ca)); size >= 15e6 {
		t.Errorf("binary and CA bundle = %d bytes; the image must stay under 15 MB", size)
	}

	// The root: the binary, the CA bundle, the example config (on a free
	// port) and the example document where the config names it, relative
	// to WORKDIR as in docker-compose.yml.
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil { // the image's user must reach /app
		t.Fatal(err)
	}
	binRaw, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	shipWriteFile(t, filepath.Join(root, img.entrypoint[0]), binRaw, 0o755)
	shipWriteFile(t, filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"), ca, 0o644)
	var exampleCfg map[string]any
	exampleRaw, err := os.ReadFile("examples/config.json")
	if err != nil {
		t.Fatal(err)
	}
	mustUnmarshal(t, exampleRaw, &exampleCfg)
	port := freePort(t)
	exampleCfg["server"].(map[string]any)["port"] = port
	cfgRaw, err := json.Marshal(exampleCfg)
	if err != nil {
		t.Fatal(err)
	}
	configPath := shipEnvValue(img.env, "CONFIG_PATH")
	if configPath == "" {
		t.Fatal("the Dockerfile sets no CONFIG_PATH")
	}
	shipWriteFile(t, filepath.Join(root, configPath), cfgRaw, 0o644)
	docRaw, err := os.ReadFile(demoDocumentPath)
	if err != nil {
		t.Fatal(err)
	}
	docPath := exampleCfg["environment_key_pairs"].([]any)[0].(map[string]any)["environment_document_path"].(string)
	shipWriteFile(t, filepath.Join(root, img.workdir, docPath), docRaw, 0o644)

	// jail runs argv inside the root, in WORKDIR, with the image's
	// environment: chroot as the image's USER when we are root, else an
	// unprivileged user namespace.
	jail := func(argv []string) (name string, args []string, configure func(*exec.Cmd)) {
		if os.Getuid() == 0 {
			uid, gid := shipUser(t, img.user)
			return argv[0], argv[1:], func(cmd *exec.Cmd) {
				cmd.Dir = img.workdir
				cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: uid, Gid: gid}}
			}
		}
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			t.Fatalf("not root and no unshare(1) (util-linux): cannot run the binary in an empty root: %v", err)
		}
		return unshare, append([]string{"--user", "--map-root-user", "--root=" + root, "--wd=" + img.workdir}, argv...), nil
	}
	runJailed := func(t *testing.T, argv []string) (string, error) {
		t.Helper()
		name, args, configure := jail(argv)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = img.env
		if configure != nil {
			configure(cmd)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	t.Run("version", func(t *testing.T) {
		out, err := runJailed(t, append(slices.Clone(img.entrypoint), "-version"))
		if err != nil || out != "edge-proxy "+stampedVersion+"\n" {
			t.Errorf("edge-proxy -version in the root = %q, %v; want %q (stamped by -X main.version)", out, err, "edge-proxy "+stampedVersion+"\n")
		}
	})

	name, args, configure := jail(img.entrypoint)
	p := startProcess(t, name, args, img.env, configure)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	waitStatus(t, client, base+"/proxy/health/liveness", http.StatusOK, 10*time.Second)

	t.Run("readiness", func(t *testing.T) {
		waitStatus(t, client, base+"/proxy/health/readiness", http.StatusOK, 5*time.Second)
	})

	t.Run("flags with the demo client key", func(t *testing.T) {
		resp, body := httpDo(t, client, "GET", base+"/api/v1/flags/", demoClientKey, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /api/v1/flags/ = %d %s; want 200", resp.StatusCode, body)
		}
		var flags []apiFlag
		mustUnmarshal(t, body, &flags)
		if _, ok := flagsByName(flags)["dark_mode"]; !ok || len(flags) == 0 {
			t.Errorf("GET /api/v1/flags/ = %d flags without dark_mode; want the example document's flags", len(flags))
		}
	})

	t.Run("healthcheck", func(t *testing.T) {
		if img.healthcheck == nil || !slices.Contains(img.healthcheck, "-healthcheck") {
			t.Fatalf("Dockerfile HEALTHCHECK = %q; want it to run the binary with -healthcheck", img.healthcheck)
		}
		if out, err := runJailed(t, img.healthcheck); err != nil {
			t.Errorf("HEALTHCHECK %q in the root = %v; want exit 0\n%s", img.healthcheck, err, out)
		}
	})

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Errorf("edge-proxy exit after SIGTERM = %v; want status 0", err)
	}
}

func shipWriteFile(t testing.TB, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
}

// shipUser parses the Dockerfile's numeric USER uid:gid.
func shipUser(t testing.TB, user string) (uid, gid uint32) {
	t.Helper()
	u, g, _ := strings.Cut(user, ":")
	if g == "" {
		g = u
	}
	uu, err1 := strconv.ParseUint(u, 10, 32)
	gg, err2 := strconv.ParseUint(g, 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("Dockerfile USER %q: want a numeric uid[:gid] (scratch has no user database for names)", user)
	}
	return uint32(uu), uint32(gg)
}

// shipYAMLBlockValue returns the values of key: inside each block opened by
// a line `block:` (the lines indented deeper than it), by block name. It
// reads the small subset of YAML our manifests use; no YAML library is
// allowed here.
func shipYAMLBlockValue(text, key string, blocks ...string) map[string]string {
	out := map[string]string{}
	open, openIndent := "", -1
	for line := range strings.Lines(text) {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if open != "" && indent <= openIndent {
			open = ""
		}
		for _, b := range blocks {
			if trimmed == b+":" {
				open, openIndent = b, indent
			}
		}
		if v, ok := strings.CutPrefix(strings.TrimPrefix(trimmed, "- "), key+":"); ok && open != "" {
			if _, seen := out[open]; !seen {
				out[open] = strings.Trim(strings.TrimSpace(v), `"'`)
			}
		}
	}
	return out
}

// shipYAMLValues returns every value of key: in text.
func shipYAMLValues(text, key string) []string {
	var out []string
	for line := range strings.Lines(text) {
		trimmed := strings.TrimPrefix(strings.TrimSpace(line), "- ")
		if v, ok := strings.CutPrefix(trimmed, key+":"); ok {
			out = append(out, strings.Trim(strings.TrimSpace(v), `"'`))
		}
	}
	return out
}

// TestShipManifests checks that the Kubernetes manifests, docker-compose.yml
// and the Dockerfile agree with the code and name files that exist.
func TestShipManifests(t *testing.T) {
	read := func(path string) string {
		t.Helper()
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	img := shipRuntimeImage(t)
	deployment := read("deploy/kubernetes/deployment.yaml")
	var example struct {
		EnvironmentKeyPairs []KeyPair `json:"environment_key_pairs"`
		Server              struct {
			Port int `json:"port"`
		} `json:"server"`
	}
	mustUnmarshal(t, []byte(read("examples/config.json")), &example)

	s := newTestServer(t, withPairs(demoPair))
	get := func(path string) (*httptest.ResponseRecorder, string) {
		req := httptest.NewRequest("GET", path, nil)
		_, pattern := s.mux.Handler(req)
		rec := httptest.NewRecorder()
		s.handler().ServeHTTP(rec, req)
		return rec, pattern
	}

	t.Run("kubernetes probes", func(t *testing.T) {
		probes := shipYAMLBlockValue(deployment, "path", "livenessProbe", "readinessProbe")
		live, ready := probes["livenessProbe"], probes["readinessProbe"]
		if live == "" || ready == "" {
			t.Fatalf("deployment.yaml probe paths = %v; want a livenessProbe and a readinessProbe path", probes)
		}
		if rec, pattern := get(live); rec.Code != http.StatusOK || pattern == "/" {
			t.Errorf("livenessProbe GET %s = %d (route %q); want 200 from a real route", live, rec.Code, pattern)
		}
		if rec, pattern := get(ready); pattern == "/" || rec.Code != http.StatusServiceUnavailable {
			t.Errorf("readinessProbe GET %s before any document = %d (route %q); want 503 from a real route", ready, rec.Code, pattern)
		}
		raw, err := os.ReadFile(demoDocumentPath)
		if err != nil {
			t.Fatal(err)
		}
		s.publishDoc(t, demoClientKey, raw)
		if rec, _ := get(ready); rec.Code != http.StatusOK {
			t.Errorf("readinessProbe GET %s with a document = %d %s; want 200", ready, rec.Code, rec.Body)
		}
		if got := shipYAMLValues(deployment, "prometheus.io/path"); len(got) != 1 {
			t.Errorf("prometheus.io/path annotations = %q; want one", got)
		} else if rec, pattern := get(got[0]); rec.Code != http.StatusOK || pattern == "/" {
			t.Errorf("prometheus.io/path GET %s = %d (route %q); want 200", got[0], rec.Code, pattern)
		}
	})

	t.Run("ports", func(t *testing.T) {
		want := strconv.Itoa(defaultPort)
		got := map[string][]string{
			"deployment.yaml containerPort":      shipYAMLValues(deployment, "containerPort"),
			"deployment.yaml prometheus.io/port": shipYAMLValues(deployment, "prometheus.io/port"),
			"service.yaml port":                  shipYAMLValues(read("deploy/kubernetes/service.yaml"), "port"),
			"Dockerfile EXPOSE":                  {img.expose},
			"examples/config.json server.port":   {strconv.Itoa(example.Server.Port)},
		}
		for where, ports := range got {
			if len(ports) == 0 {
				t.Errorf("%s: none; want %s", where, want)
			}
			for _, p := range ports {
				if p != want {
					t.Errorf("%s = %s; want %s, the default server.port", where, p, want)
				}
			}
		}
		if !strings.Contains(read("docker-compose.yml"), `"8000:`+want+`"`) {
			t.Errorf("docker-compose.yml does not publish container port %s", want)
		}
	})

	t.Run("config path", func(t *testing.T) {
		// The Secret's folder is mounted, without subPath: a subPath mount
		// never sees an update, and the proxy reloads the file when it
		// changes.
		configPath := shipEnvValue(img.env, "CONFIG_PATH")
		mounts := shipYAMLValues(deployment, "mountPath")
		if !slices.Contains(mounts, filepath.Dir(configPath)) {
			t.Errorf("deployment.yaml mountPaths %q; want the folder of the Dockerfile's CONFIG_PATH %s", mounts, configPath)
		}
		if sub := shipYAMLValues(deployment, "subPath"); len(sub) > 0 {
			t.Errorf("deployment.yaml mounts with subPath %q; want none: the config would not follow Secret updates", sub)
		}
	})

	t.Run("drain", func(t *testing.T) {
		// The Secret's config.json is the block under "config.json: |".
		var config strings.Builder
		in, indent := false, 0
		for line := range strings.Lines(read("deploy/kubernetes/secret.yaml")) {
			trimmed := strings.TrimSpace(line)
			lineIndent := len(line) - len(strings.TrimLeft(line, " "))
			switch {
			case trimmed == "config.json: |":
				in, indent = true, lineIndent
			case in && trimmed != "" && lineIndent <= indent:
				in = false
			case in:
				config.WriteString(line)
			}
		}
		path := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(path, []byte(config.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, _, err := loadConfig(path, true, func(string) string { return "" })
		if err != nil {
			t.Fatalf("secret.yaml config.json: %v", err)
		}
		grace := shipYAMLValues(deployment, "terminationGracePeriodSeconds")
		if len(grace) != 1 {
			t.Fatalf("deployment.yaml terminationGracePeriodSeconds = %q; want one", grace)
		}
		seconds, err := strconv.ParseFloat(grace[0], 64)
		if need := cfg.Server.DrainSeconds + cfg.Server.ShutdownTimeout; err != nil || seconds <= need {
			t.Errorf("terminationGracePeriodSeconds = %s; want more than drain_seconds + shutdown_timeout_seconds = %v", grace[0], need)
		}
		if cfg.Server.DrainSeconds <= 0 {
			t.Errorf("secret.yaml server.drain_seconds = %v; want a drain, so endpoints are removed before the port closes", cfg.Server.DrainSeconds)
		}
		if len(shipYAMLValues(deployment, "preStop")) > 0 {
			t.Error("deployment.yaml has a preStop hook; want none: the proxy drains on SIGTERM, and the image has no shell")
		}
	})

	t.Run("kustomization resources", func(t *testing.T) {
		text := read("deploy/kubernetes/kustomization.yaml")
		var resources []string
		in := false
		for line := range strings.Lines(text) {
			trimmed := strings.TrimSpace(line)
			switch {
			case trimmed == "resources:":
				in = true
			case in && strings.HasPrefix(trimmed, "- "):
				resources = append(resources, strings.TrimPrefix(trimmed, "- "))
			case trimmed != "" && !strings.HasPrefix(trimmed, "#"):
				in = false
			}
		}
		if len(resources) == 0 {
			t.Fatal("kustomization.yaml lists no resources")
		}
		for _, r := range resources {
			if _, err := os.Stat(filepath.Join("deploy/kubernetes", r)); err != nil {
				t.Errorf("kustomization.yaml resource %s: %v", r, err)
			}
		}
	})

	t.Run("docker-compose volumes", func(t *testing.T) {
		compose := read("docker-compose.yml")
		var binds [][2]string // host, container
		for line := range strings.Lines(compose) {
			trimmed := strings.TrimSpace(line)
			if v, ok := strings.CutPrefix(trimmed, "- ./"); ok {
				parts := strings.Split(strings.Trim(v, `"'`), ":")
				if len(parts) < 2 {
					t.Errorf("docker-compose.yml bind %q: want host:container", trimmed)
					continue
				}
				binds = append(binds, [2]string{parts[0], parts[1]})
			}
		}
		if len(binds) == 0 {
			t.Fatal("docker-compose.yml binds no files")
		}
		targets := map[string]bool{}
		for _, b := range binds {
			if _, err := os.Stat(b[0]); err != nil {
				t.Errorf("docker-compose.yml mounts ./%s, which does not exist: %v", b[0], err)
			}
			targets[b[1]] = true
		}
		if cp := shipEnvValue(img.env, "CONFIG_PATH"); !targets[cp] {
			t.Errorf("docker-compose.yml mounts %v; want a file at the Dockerfile's CONFIG_PATH %s", targets, cp)
		}
		for _, p := range example.EnvironmentKeyPairs {
			if p.DocumentPath == "" {
				continue
			}
			// Relative paths resolve from the config file's folder.
			want := filepath.Join(filepath.Dir(shipEnvValue(img.env, "CONFIG_PATH")), p.DocumentPath)
			if !targets[want] {
				t.Errorf("examples/config.json reads %s, i.e. %s in the image; docker-compose.yml mounts %v", p.DocumentPath, want, targets)
			}
			if _, err := os.Stat(filepath.Join("examples", p.DocumentPath)); err != nil {
				t.Errorf("examples/config.json names %s: %v", p.DocumentPath, err)
			}
		}
	})

	t.Run("Dockerfile", func(t *testing.T) {
		all, _ := shipDockerfile(t)
		var buildOutput string
		for _, in := range all {
			if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
				if _, out, ok := strings.Cut(in.args, "-o "); ok {
					buildOutput = strings.Fields(out)[0]
				}
			}
			if in.cmd != "COPY" || strings.Contains(in.args, "--from=") {
				continue
			}
			// COPY from the build context: every source must exist.
			fields := strings.Fields(in.args)
			for _, src := range fields[:len(fields)-1] {
				if strings.HasPrefix(src, "--") {
					continue
				}
				if _, err := os.Stat(src); err != nil {
					t.Errorf("Dockerfile COPY %s: %v", src, err)
				}
			}
		}
		var copiedBinary bool
		for _, in := range all {
			fields := strings.Fields(in.args)
			if in.cmd == "COPY" && len(fields) >= 2 && fields[len(fields)-2] == buildOutput && fields[len(fields)-1] == img.entrypoint[0] {
				copiedBinary = true
			}
		}
		if buildOutput == "" || !copiedBinary {
			t.Errorf("the binary built at %q is not copied to the ENTRYPOINT %s", buildOutput, img.entrypoint[0])
		}
		if len(img.healthcheck) != 2 || img.healthcheck[0] != img.entrypoint[0] || img.healthcheck[1] != "-healthcheck" {
			t.Errorf("HEALTHCHECK CMD = %q; want [%q \"-healthcheck\"]", img.healthcheck, img.entrypoint[0])
		}
		uid, _ := shipUser(t, img.user)
		if uid == 0 {
			t.Errorf("Dockerfile USER %s: want a non-root user", img.user)
		}
	})

	t.Run("dockerignore keeps the build inputs", func(t *testing.T) {
		var patterns []string
		for line := range strings.Lines(read(".dockerignore")) {
			if p := strings.TrimSpace(line); p != "" && !strings.HasPrefix(p, "#") && !strings.HasPrefix(p, "!") {
				patterns = append(patterns, strings.TrimPrefix(p, "/"))
			}
		}
		inputs := []string{"go.mod", "go.sum"}
		sources, _ := filepath.Glob("*.go")
		for _, src := range sources {
			if !strings.HasSuffix(src, "_test.go") {
				inputs = append(inputs, src)
			}
		}
		for _, in := range inputs {
			for _, p := range patterns {
				if ok, _ := filepath.Match(p, in); ok {
					t.Errorf(".dockerignore pattern %q excludes %s, which the build needs", p, in)
				}
			}
		}
	})
}
