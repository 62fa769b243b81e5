package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
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

// promSample is one sample line of the text exposition format.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

// promFamily is one metric family: its TYPE, HELP and samples.
type promFamily struct {
	name, typ, help string
	samples         []promSample
}

var (
	promMetricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	promLabelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// parseExposition parses the Prometheus text format 0.0.4 strictly: every
// sample belongs to a family whose TYPE came first, a family's lines are
// grouped, no series repeats, label values use only the format's escapes.
func parseExposition(text string) (map[string]*promFamily, error) {
	fams := map[string]*promFamily{}
	family := func(name string) *promFamily {
		f := fams[name]
		if f == nil {
			f = &promFamily{name: name}
			fams[name] = f
		}
		return f
	}
	series := map[string]bool{}
	var last string // family of the previous line
	ended := map[string]bool{}
	enter := func(name string) error {
		if name != last {
			if ended[name] {
				return fmt.Errorf("family %s is not one group of lines", name)
			}
			if last != "" {
				ended[last] = true
			}
			last = name
		}
		return nil
	}
	if text != "" && !strings.HasSuffix(text, "\n") {
		return nil, fmt.Errorf("the exposition does not end with a newline")
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		n := i + 1
		if line == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "#"); ok {
			fields := strings.SplitN(strings.TrimLeft(rest, " \t"), " ", 3)
			if len(fields) < 2 || (fields[0] != "HELP" && fields[0] != "TYPE") {
				continue // a comment
			}
			name := fields[1]
			if !promMetricName.MatchString(name) {
				return nil, fmt.Errorf("line %d: bad metric name %q", n, name)
			}
			if err := enter(name); err != nil {
				return nil, fmt.Errorf("line %d: %v", n, err)
			}
			f := family(name)
			text := ""
			if len(fields) == 3 {
				text = fields[2]
			}
			switch fields[0] {
			case "HELP":
				if f.help != "" {
					return nil, fmt.Errorf("line %d: second HELP for %s", n, name)
				}
				f.help = text
			case "TYPE":
				if f.typ != "" || len(f.samples) > 0 {
					return nil, fmt.Errorf("line %d: TYPE for %s after its first TYPE or sample", n, name)
				}
				switch text {
				case "counter", "gauge", "histogram", "summary", "untyped":
				default:
					return nil, fmt.Errorf("line %d: unknown type %q", n, text)
				}
				f.typ = text
			}
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("line %d %q: %v", n, line, err)
		}
		fname := s.name
		if _, ok := fams[fname]; !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(s.name, suffix); ok && fams[base] != nil {
					if typ := fams[base].typ; typ == "histogram" || (typ == "summary" && suffix != "_bucket") {
						fname = base
					}
				}
			}
		}
		f := fams[fname]
		if f == nil || f.typ == "" {
			return nil, fmt.Errorf("line %d: sample %s has no TYPE before it", n, s.name)
		}
		if err := enter(fname); err != nil {
			return nil, fmt.Errorf("line %d: %v", n, err)
		}
		key := s.name + "{" + promLabelKey(s.labels, "") + "}"
		if series[key] {
			return nil, fmt.Errorf("line %d: series %s repeated", n, key)
		}
		series[key] = true
		f.samples = append(f.samples, s)
	}
	return fams, nil
}

// parseSample parses `name{label="value",…} value [timestamp]`.
func parseSample(line string) (promSample, error) {
	s := promSample{labels: map[string]string{}}
	end := strings.IndexAny(line, "{ ")
	if end < 0 {
		return s, fmt.Errorf("no value")
	}
	s.name = line[:end]
	if !promMetricName.MatchString(s.name) {
		return s, fmt.Errorf("bad metric name %q", s.name)
	}
	rest := line[end:]
	if strings.HasPrefix(rest, "{") {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, " ")
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq < 0 {
				return s, fmt.Errorf("label without =")
			}
			name := strings.TrimSpace(rest[:eq])
			if !promLabelName.MatchString(name) {
				return s, fmt.Errorf("bad label name %q", name)
			}
			if _, dup := s.labels[name]; dup {
				return s, fmt.Errorf("label %s repeated", name)
			}
			rest = strings.TrimLeft(rest[eq+1:], " ")
			if !strings.HasPrefix(rest, `"`) {
				return s, fmt.Errorf("label %s: value not quoted", name)
			}
			var val strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				c := rest[i]
				if c == '\n' {
					return s, fmt.Errorf("label %s: raw newline", name)
				}
				if c == '\\' {
					i++
					if i == len(rest) {
						break
					}
					switch rest[i] {
					case '\\':
						c = '\\'
					case '"':
						c = '"'
					case 'n':
						c = '\n'
					default:
						return s, fmt.Errorf("label %s: escape \\%c is not one of \\\\, \\\" and \\n", name, rest[i])
					}
				}
				val.WriteByte(c)
			}
			if i >= len(rest) {
				return s, fmt.Errorf("label %s: unterminated value", name)
			}
			s.labels[name] = val.String()
			rest = strings.TrimLeft(rest[i+1:], " ")
			if strings.HasPrefix(rest, ",") {
				rest = rest[1:]
			} else if !strings.HasPrefix(rest, "}") {
				return s, fmt.Errorf("label %s: want , or } after the value", name)
			}
		}
	}
	fields := strings.Fields(rest)
	if len(fields) < 1 || len(fields) > 2 || !strings.HasPrefix(rest, " ") {
		return s, fmt.Errorf("want one value and an optional timestamp after the labels")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, fmt.Errorf("value %q: %v", fields[0], err)
	}
	s.value = v
	if len(fields) == 2 {
		if _, err := strconv.ParseInt(fields[1], 10, 64); err != nil {
			return s, fmt.Errorf("timestamp %q: %v", fields[1], err)
		}
	}
	return s, nil
}

// promLabelKey is a canonical form of labels, leaving out skip.
func promLabelKey(labels map[string]string, skip string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		if k != skip {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q,", k, labels[k])
	}
	return b.String()
}

// checkHistogram checks every series of a histogram family: cumulative
// buckets ending with le="+Inf" equal to _count, and a _sum.
func checkHistogram(f *promFamily) []error {
	type hist struct {
		buckets    []promSample
		count, sum *promSample
	}
	byLabels := map[string]*hist{}
	get := func(k string) *hist {
		if byLabels[k] == nil {
			byLabels[k] = &hist{}
		}
		return byLabels[k]
	}
	var errs []error
	for i := range f.samples {
		s := &f.samples[i]
		switch s.name {
		case f.name + "_bucket":
			if _, ok := s.labels["le"]; !ok {
				errs = append(errs, fmt.Errorf("%s bucket without le", f.name))
				continue
			}
			get(promLabelKey(s.labels, "le")).buckets = append(get(promLabelKey(s.labels, "le")).buckets, *s)
		case f.name + "_count":
			get(promLabelKey(s.labels, "")).count = s
		case f.name + "_sum":
			get(promLabelKey(s.labels, "")).sum = s
		default:
			errs = append(errs, fmt.Errorf("histogram %s has a sample named %s", f.name, s.name))
		}
	}
	for k, h := range byLabels {
		if len(h.buckets) == 0 || h.count == nil || h.sum == nil {
			errs = append(errs, fmt.Errorf("%s{%s}: want buckets, _sum and _count; have %d buckets, sum %t, count %t", f.name, k, len(h.buckets), h.sum != nil, h.count != nil))
			continue
		}
		prevLE, prev := math.Inf(-1), -1.0
		for _, b := range h.buckets {
			le, err := strconv.ParseFloat(b.labels["le"], 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s{%s}: le %q: %v", f.name, k, b.labels["le"], err))
				continue
			}
			if le <= prevLE {
				errs = append(errs, fmt.Errorf("%s{%s}: le %v after le %v; want ascending", f.name, k, le, prevLE))
			}
			if b.value < prev {
				errs = append(errs, fmt.Errorf("%s{%s}: bucket le=%v = %v < %v of the previous bucket; want cumulative counts", f.name, k, le, b.value, prev))
			}
			prevLE, prev = le, b.value
		}
		lastBucket := h.buckets[len(h.buckets)-1]
		if lastBucket.labels["le"] != "+Inf" {
			errs = append(errs, fmt.Errorf("%s{%s}: last bucket le=%q; want \"+Inf\"", f.name, k, lastBucket.labels["le"]))
		}
		if lastBucket.value != h.count.value {
			errs = append(errs, fmt.Errorf("%s{%s}: +Inf bucket = %v, _count = %v; want equal", f.name, k, lastBucket.value, h.count.value))
		}
	}
	return errs
}

// TestShipMetricsExposition drives requests and polls through a server,
// then parses its whole /metrics answer back.
func TestShipMetricsExposition(t *testing.T) {
	updatedAt := time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)
	up := newUpstream(t)
	up.set(demoServerKey, demoDocument(t, updatedAt, "hello"))

	// The second environment's server key is refused upstream; its client
	// key needs escaping in a label value.
	const oddKey = `odd"client\key`
	s := newTestServer(t, withUpstream(up),
		withPairs(demoPair, KeyPair{ServerSideKey: "ser.refused-by-upstream", ClientSideKey: oddKey}))
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	for range 2 { // ok, then not_modified
		if err := s.pollNow(t.Context(), s.environments()[0], client); err != nil {
			t.Fatalf("poll the demo environment: %v", err)
		}
	}
	if err := s.pollNow(t.Context(), s.environments()[1], client); err == nil {
		t.Fatal("poll with a refused server key = nil; want an error")
	}

	base := s.listen(t, nil).url

	// Identifiers, trait keys, unknown keys and paths sent below must never
	// become label values.
	secrets := []string{"secret-identifier", "secret_trait_key", "SecretUnknownKey", "nope-secret-path", "secret-sse-key"}
	requests := []struct {
		method, path, key, body string
		want                    int
	}{
		{"GET", "/api/v1/flags/", demoClientKey, "", 200},
		{"GET", "/api/v1/flags", demoClientKey, "", 200},
		{"GET", "/api/v1/flags/?feature=dark_mode", demoClientKey, "", 200},
		{"GET", "/api/v1/flags/", "SecretUnknownKey-abcdef", "", 401},
		{"POST", "/api/v1/identities/", demoClientKey, `{"identifier": "secret-identifier-42", "traits": [{"trait_key": "secret_trait_key", "trait_value": "x"}]}`, 200},
		{"GET", "/api/v1/identities/?identifier=secret-identifier-43", demoClientKey, "", 200},
		{"GET", "/nope-secret-path", "", "", 404},
		{"DELETE", "/api/v1/flags/", demoClientKey, "", 405},
		{"GET", "/sse/environments/secret-sse-key/stream", "", "", 404},
		{"GET", "/proxy/health/readiness", "", "", 503}, // the second environment has no document
	}
	for _, r := range requests {
		resp, body := httpDo(t, client, r.method, base+r.path, r.key, r.body)
		if resp.StatusCode != r.want {
			t.Fatalf("%s %s = %d %s; want %d", r.method, r.path, resp.StatusCode, body, r.want)
		}
	}

	// One open stream while scraping.
	streamCtx, cancelStream := context.WithCancel(t.Context())
	t.Cleanup(cancelStream)
	req, _ := http.NewRequestWithContext(streamCtx, "GET", base+"/sse/environments/"+demoClientKey+"/stream", nil)
	streamResp, err := (&http.Client{}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { streamResp.Body.Close() })
	if _, err := bufio.NewReader(streamResp.Body).ReadString('\n'); err != nil {
		t.Fatalf("read the stream's first line: %v", err)
	}

	resp, body := httpDo(t, client, "GET", base+"/metrics", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d; want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("GET /metrics Content-Type = %q; want text/plain; version=0.0.4", ct)
	}
	fams, err := parseExposition(string(body))
	if err != nil {
		t.Fatalf("parseExposition: %v\n%s", err, body)
	}

	t.Run("families", func(t *testing.T) {
		tests := []struct {
			issue, name, typ string
			labels           []string
		}{
			{"requests by route and status", "edge_proxy_http_requests_total", "counter", []string{"code", "route"}},
			{"latency histogram", "edge_proxy_http_request_duration_seconds", "histogram", []string{"route"}},
			{"polls by environment and result", "edge_proxy_polls_total", "counter", []string{"environment", "result"}},
			{"seconds since last update", "edge_proxy_seconds_since_last_update", "gauge", []string{"environment"}},
			{"document updated_at", "edge_proxy_document_updated_at_seconds", "gauge", []string{"environment"}},
			{"SSE subscribers", "edge_proxy_sse_subscribers", "gauge", nil},
			{"snapshot compile time", "edge_proxy_snapshot_compile_seconds", "gauge", []string{"environment"}},
		}
		for _, tt := range tests {
			f := fams[tt.name]
			if f == nil || len(f.samples) == 0 {
				t.Errorf("%s: family %s missing or empty", tt.issue, tt.name)
				continue
			}
			if f.typ != tt.typ {
				t.Errorf("%s: TYPE %s; want %s", tt.name, f.typ, tt.typ)
			}
			if f.help == "" {
				t.Errorf("%s has no HELP", tt.name)
			}
			for _, s := range f.samples {
				var names []string
				for k := range s.labels {
					if k != "le" {
						names = append(names, k)
					}
				}
				sort.Strings(names)
				if !slices.Equal(names, tt.labels) {
					t.Errorf("%s sample labels %v; want %v", s.name, names, tt.labels)
				}
			}
		}
		for _, f := range fams {
			if f.typ == "counter" && !strings.HasSuffix(f.name, "_total") {
				t.Errorf("counter %s: want a name ending in _total", f.name)
			}
			if f.typ == "histogram" {
				for _, err := range checkHistogram(f) {
					t.Error(err)
				}
			}
		}
	})

	value := func(name string, labels map[string]string) (float64, bool) {
		for _, f := range fams {
			for _, s := range f.samples {
				if s.name == name && promLabelKey(s.labels, "") == promLabelKey(labels, "") {
					return s.value, true
				}
			}
		}
		return 0, false
	}

	t.Run("values", func(t *testing.T) {
		tests := []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"edge_proxy_http_requests_total", map[string]string{"route": "/api/v1/flags", "code": "200"}, 3},
			{"edge_proxy_http_requests_total", map[string]string{"route": "/api/v1/flags", "code": "401"}, 1},
			{"edge_proxy_http_requests_total", map[string]string{"route": "/api/v1/identities", "code": "200"}, 2},
			{"edge_proxy_http_requests_total", map[string]string{"route": "unrouted", "code": "404"}, 1},
			{"edge_proxy_http_requests_total", map[string]string{"route": "unrouted", "code": "405"}, 1},
			{"edge_proxy_http_requests_total", map[string]string{"route": "/sse/environments/stream", "code": "404"}, 1},
			{"edge_proxy_http_requests_total", map[string]string{"route": "/proxy/health/readiness", "code": "503"}, 1},
			{"edge_proxy_http_request_duration_seconds_count", map[string]string{"route": "/api/v1/flags"}, 4},
			{"edge_proxy_polls_total", map[string]string{"environment": demoClientKey, "result": "ok"}, 1},
			{"edge_proxy_polls_total", map[string]string{"environment": demoClientKey, "result": "not_modified"}, 1},
			{"edge_proxy_polls_total", map[string]string{"environment": oddKey, "result": "error"}, 1},
			{"edge_proxy_document_updated_at_seconds", map[string]string{"environment": demoClientKey}, float64(updatedAt.Unix())},
			{"edge_proxy_sse_subscribers", map[string]string{}, 1},
		}
		for _, tt := range tests {
			got, ok := value(tt.name, tt.labels)
			if !ok {
				t.Errorf("no sample %s%v", tt.name, tt.labels)
			} else if got != tt.want {
				t.Errorf("%s%v = %v; want %v", tt.name, tt.labels, got, tt.want)
			}
		}
		for _, name := range []string{"edge_proxy_seconds_since_last_update", "edge_proxy_snapshot_compile_seconds"} {
			got, ok := value(name, map[string]string{"environment": demoClientKey})
			if !ok || got < 0 || math.IsNaN(got) || math.IsInf(got, 0) {
				t.Errorf("%s{environment=%q} = %v, %t; want a finite value >= 0", name, demoClientKey, got, ok)
			}
		}
	})

	t.Run("no request data in labels", func(t *testing.T) {
		for _, f := range fams {
			for _, s := range f.samples {
				for k, v := range s.labels {
					for _, secret := range secrets {
						if strings.Contains(v, secret) {
							t.Errorf("%s label %s=%q comes from a request", s.name, k, v)
						}
					}
				}
			}
		}
		for _, secret := range secrets {
			if bytes.Contains(body, []byte(secret)) {
				t.Errorf("/metrics holds %q, sent in a request", secret)
			}
		}
	})
}

// A client key is any string in config.json; as a label value it must be
// escaped the way the text format allows (\\, \" and \n only), not with Go's
// %q escapes such as \t.
func TestShipMetricsLabelEscaping(t *testing.T) {
	const key = "tab\tkey"
	s := newTestServer(t, withPairs(KeyPair{ServerSideKey: "ser.label-escaping", ClientSideKey: key}))
	s.stats.observePoll(key, "error")
	rec := httptest.NewRecorder()
	s.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	fams, err := parseExposition(rec.Body.String())
	if err != nil {
		t.Fatalf("parseExposition: %v", err)
	}
	f := fams["edge_proxy_polls_total"]
	if f == nil || len(f.samples) != 1 || f.samples[0].labels["environment"] != key {
		t.Errorf("edge_proxy_polls_total = %+v; want one sample with environment=%q", f, key)
	}
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
			want := filepath.Join(img.workdir, p.DocumentPath) // relative paths resolve from WORKDIR
			if !targets[want] {
				t.Errorf("examples/config.json reads %s, i.e. %s in the image; docker-compose.yml mounts %v", p.DocumentPath, want, targets)
			}
			if _, err := os.Stat(p.DocumentPath); err != nil {
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

// TestShipExpositionParser shows that parseExposition rejects what
// Prometheus would, so that TestShipMetricsExposition passing means
// something.
func TestShipExpositionParser(t *testing.T) {
	const good = "# HELP a_total A.\n# TYPE a_total counter\na_total{route=\"/x\",code=\"200\"} 3\n" +
		"# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n"
	fams, err := parseExposition(good)
	if err != nil {
		t.Fatalf("parseExposition(good) = %v; want nil", err)
	}
	if errs := checkHistogram(fams["h"]); len(errs) > 0 {
		t.Errorf("checkHistogram(good) = %v; want none", errs)
	}
	if got := fams["a_total"].samples[0].labels["route"]; got != "/x" {
		t.Errorf("route label = %q; want /x", got)
	}
	tests := []struct {
		name, text string
	}{
		{"sample without TYPE", "a_total 1\n"},
		{"TYPE after a sample", "# TYPE a gauge\na 1\n# TYPE a gauge\n"},
		{"unknown type", "# TYPE a meter\na 1\n"},
		{"Go escape in a label", "# TYPE a gauge\na{l=\"x\\ty\"} 1\n"},
		{"unterminated label", "# TYPE a gauge\na{l=\"x} 1\n"},
		{"unquoted label", "# TYPE a gauge\na{l=x} 1\n"},
		{"bad value", "# TYPE a gauge\na one\n"},
		{"repeated series", "# TYPE a gauge\na{l=\"1\"} 1\na{l=\"1\"} 2\n"},
		{"family split in two", "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{l=\"2\"} 1\n"},
		{"no final newline", "# TYPE a gauge\na 1"},
	}
	for _, tt := range tests {
		if _, err := parseExposition(tt.text); err == nil {
			t.Errorf("parseExposition(%s: %q) = nil; want an error", tt.name, tt.text)
		}
	}
	hists := []struct {
		name, text string
	}{
		{"not cumulative", "# TYPE h histogram\nh_bucket{le=\"0.1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"},
		{"+Inf differs from _count", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n"},
		{"no +Inf", "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 2\n"},
		{"no _sum", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n"},
	}
	for _, tt := range hists {
		fams, err := parseExposition(tt.text)
		if err != nil {
			t.Fatalf("parseExposition(%s) = %v; want nil", tt.name, err)
		}
		if errs := checkHistogram(fams["h"]); len(errs) == 0 {
			t.Errorf("checkHistogram(%s: %q) found nothing; want an error", tt.name, tt.text)
		}
	}
}
