//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The README's quick start, as a new user types it: this command from the
// repository root, then every line of the block marked with readmeDemoMarker.
const (
	readmeQuickStart = "go run . -config examples/config.json"
	readmeDemoMarker = "<!-- demo commands: run by TestReadmeQuickStart -->"
	readmeDemoAddr   = "localhost:8000" // where the quick start serves, as the README's curl lines say
)

// readmeCurl wraps curl for the demo lines: an HTTP error fails the line
// (with the body shown), and a stream ends after a few seconds instead of
// never. Options given later on the line as written win over these.
const readmeCurl = `curl() {
	case "$*" in
	*/stream*) command curl --show-error --fail-with-body --max-time 3 "$@" ;;
	*) command curl --show-error --fail-with-body --max-time 20 "$@" ;;
	esac
}
`

// TestReadmeQuickStart is issue #24's guard: README.md's quick start and demo
// commands are run exactly as written from the repository root, and every
// go test/run/build command the README shows must parse with the flags,
// tests and packages that exist.
func TestReadmeQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and serves the README's quick start on :8000; runs without -short")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeShellBlocks(string(readme))

	t.Run("commands", func(t *testing.T) {
		checkReadmeCommands(t, string(readme), blocks)
	})

	var start string
	var demo []string
	for _, b := range blocks {
		for _, line := range b.lines {
			if stripShellComment(line) == readmeQuickStart {
				start = line
			}
		}
		if b.demo {
			demo = append(demo, b.lines...)
		}
	}
	if start == "" {
		t.Fatalf("README.md has no ```sh line %q: the quick start this test runs", readmeQuickStart)
	}
	if len(demo) == 0 {
		t.Fatalf("README.md has no ```sh block after %q: the demo commands this test runs", readmeDemoMarker)
	}

	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required: the README's demo lines are run with it (%v)", tool, err)
		}
	}
	out := startReadmeQuickStart(t, start)
	waitReadmeReady(t, out)

	var prelude strings.Builder // the block's variable assignments, for the lines after them
	for _, line := range demo {
		if isShellAssignment(line) {
			prelude.WriteString(line + "\n")
			continue
		}
		check := readmeDemoCheck(line)
		if check == nil {
			t.Errorf("demo line %q: this test has no check for its answer; add one to readmeDemoCheck", line)
			continue
		}
		stdout, stderr, err := runReadmeLine(t, readmeCurl+prelude.String()+line, 3*time.Minute)
		var ee *exec.ExitError
		if isReadmeStream(line) && errors.As(err, &ee) && ee.ExitCode() == 28 {
			err = nil // curl's --max-time ended the stream, as intended
		}
		if err != nil {
			t.Errorf("demo line %q: %v\nstdout:\n%.2000s\nstderr:\n%s", line, err, stdout, stderr)
			continue
		}
		if err := check(stdout); err != nil {
			t.Errorf("demo line %q: %v\nstdout:\n%.2000s\nstderr:\n%s", line, err, stdout, stderr)
		}
	}
	if t.Failed() {
		t.Logf("the quick start's log:\n%s", out.String())
	}
}

// readmeBlock is one fenced ```sh block of the README: its commands, each
// with its continuation lines joined, without blank and comment lines.
type readmeBlock struct {
	line  int // of the opening fence, 1-based
	demo  bool
	lines []string
}

func readmeShellBlocks(readme string) []readmeBlock {
	var blocks []readmeBlock
	var cur *readmeBlock
	prev := "" // the last non-blank line before a fence
	var pending string
	for i, line := range strings.Split(readme, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && trimmed == "```sh":
			blocks = append(blocks, readmeBlock{line: i + 1, demo: prev == readmeDemoMarker})
			cur = &blocks[len(blocks)-1]
		case cur != nil && trimmed == "```":
			cur = nil
		case cur != nil:
			if strings.HasSuffix(line, `\`) {
				pending += strings.TrimSuffix(line, `\`)
				continue
			}
			line = strings.TrimSpace(pending + line)
			pending = ""
			if line != "" && !strings.HasPrefix(line, "#") {
				cur.lines = append(cur.lines, line)
			}
		}
		if trimmed != "" {
			prev = trimmed
		}
	}
	return blocks
}

// startReadmeQuickStart runs the quick start's line with bash in its own
// process group, which the test ends with SIGINT (no drain), then SIGKILL.
func startReadmeQuickStart(t *testing.T, line string) *syncBuffer {
	t.Helper()
	if ln, err := net.Listen("tcp", ":8000"); err != nil {
		t.Fatalf("port 8000 is taken (%v): the README's quick start serves on :8000 as written; stop what listens there and run the test again", err)
	} else {
		ln.Close()
	}
	out := &syncBuffer{}
	cmd := exec.Command("bash", "-c", line)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	out.exited = exited
	return out
}

// waitReadmeReady waits for the quick start's readiness: the first run
// compiles the proxy, which takes a while on a busy machine, but once it
// answers HTTP the demo document must be loaded within seconds.
func waitReadmeReady(t *testing.T, out *syncBuffer) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(4 * time.Minute)
	serving := false
	for {
		select {
		case <-out.exited:
			t.Fatalf("%q exited before it was ready; its output:\n%s", readmeQuickStart, out.String())
		default:
		}
		resp, err := client.Get("http://" + readmeDemoAddr + "/proxy/health/readiness")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("%s: %s", resp.Status, body)
			if !serving {
				serving = true
				deadline = time.Now().Add(15 * time.Second)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q is not ready (last answer: %v); its output:\n%s", readmeQuickStart, err, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runReadmeLine runs one line with bash from the repository root, its
// process group ended at the timeout.
func runReadmeLine(t *testing.T, script string, timeout time.Duration) (stdout, stderr []byte, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Stdout = &out
	cmd.Stderr = &errOut
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("still running after %v: %w", timeout, err)
	}
	return out.Bytes(), errOut.Bytes(), err
}

func isReadmeStream(line string) bool {
	return strings.Contains(line, "/sse/") && strings.Contains(line, "/stream")
}

var (
	readmeURLPattern        = regexp.MustCompile(`(?:localhost|127\.0\.0\.1):8000(/[^\s'"]*)`)
	readmeIdentifierPattern = regexp.MustCompile(`"identifier"\s*:\s*"([^"]+)"`)
	readmeEvalIdentifier    = regexp.MustCompile(`-identifier\s+(\S+)`)
)

// readmeDemoCheck returns what a demo line's answer must show, by what the
// line asks for; nil for a line it does not know.
func readmeDemoCheck(line string) func([]byte) error {
	if strings.HasPrefix(line, "go run . evaluate ") {
		m := readmeEvalIdentifier.FindStringSubmatch(line)
		return func(out []byte) error {
			if m != nil && !bytes.Contains(out, []byte(`identity "`+m[1]+`"`)) {
				return fmt.Errorf("no %q in the output", `identity "`+m[1]+`"`)
			}
			return checkAllDemoFeatures(out)
		}
	}
	if !strings.HasPrefix(line, "curl ") {
		return nil
	}
	m := readmeURLPattern.FindStringSubmatch(line)
	if m == nil {
		return nil
	}
	u, err := url.Parse(m[1])
	if err != nil {
		return nil
	}
	path := strings.TrimSuffix(u.Path, "/")
	switch {
	case path == "/api/v1/flags" && u.Query().Has("feature"):
		want := u.Query().Get("feature")
		return func(out []byte) error {
			var flag readmeFlag
			if err := json.Unmarshal(out, &flag); err != nil {
				return fmt.Errorf("not one flag object: %w", err)
			}
			if flag.Feature.Name != want {
				return fmt.Errorf("feature.name = %q; want %q", flag.Feature.Name, want)
			}
			return nil
		}
	case path == "/api/v1/flags":
		return func(out []byte) error {
			var flags []readmeFlag
			if err := json.Unmarshal(out, &flags); err != nil {
				return fmt.Errorf("not a JSON list of flags: %w", err)
			}
			return checkReadmeFlags(flags)
		}
	case path == "/api/v1/identities":
		want := u.Query().Get("identifier")
		if m := readmeIdentifierPattern.FindStringSubmatch(line); m != nil {
			want = m[1]
		}
		return func(out []byte) error {
			var got struct {
				Identifier string       `json:"identifier"`
				Flags      []readmeFlag `json:"flags"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				return fmt.Errorf("not an identity answer: %w", err)
			}
			if got.Identifier != want {
				return fmt.Errorf("identifier = %q; want %q", got.Identifier, want)
			}
			return checkReadmeFlags(got.Flags)
		}
	case path == "/api/v1/environment-document":
		return func(out []byte) error {
			var doc struct {
				APIKey        string            `json:"api_key"`
				FeatureStates []json.RawMessage `json:"feature_states"`
			}
			if err := json.Unmarshal(out, &doc); err != nil {
				return fmt.Errorf("not an environment document: %w", err)
			}
			if doc.APIKey == "" || len(doc.FeatureStates) == 0 {
				return errors.New("a document without api_key or feature_states")
			}
			return nil
		}
	case strings.HasPrefix(path, "/ofrep/v1/evaluate/flags/"):
		want := strings.TrimPrefix(path, "/ofrep/v1/evaluate/flags/")
		return func(out []byte) error {
			var got struct {
				Key       string          `json:"key"`
				Value     json.RawMessage `json:"value"`
				Reason    string          `json:"reason"`
				ErrorCode string          `json:"errorCode"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				return fmt.Errorf("not an OFREP evaluation: %w", err)
			}
			if got.Key != want || got.Value == nil || got.Reason == "" || got.ErrorCode != "" {
				return fmt.Errorf("want key %q with a value and a reason and no error", want)
			}
			return nil
		}
	case strings.HasPrefix(path, "/proxy/health") || path == "/health":
		return func(out []byte) error {
			var got struct {
				Status string `json:"status"`
			}
			if err := json.Unmarshal(out, &got); err != nil || got.Status != "ok" {
				return fmt.Errorf(`want {"status":"ok", …} (%v)`, err)
			}
			return nil
		}
	case isReadmeStream(line):
		return func(out []byte) error {
			if !bytes.Contains(out, []byte("event: environment_updated\n")) {
				return errors.New("no environment_updated event within the stream's first seconds")
			}
			for _, l := range strings.Split(string(out), "\n") {
				var data struct {
					UpdatedAt *float64 `json:"updated_at"`
				}
				if s, ok := strings.CutPrefix(l, "data: "); ok && json.Unmarshal([]byte(s), &data) == nil && data.UpdatedAt != nil {
					return nil
				}
			}
			return errors.New(`no "data: {"updated_at": …}" line in the stream`)
		}
	}
	return nil
}

type readmeFlag struct {
	Feature struct {
		Name string `json:"name"`
	} `json:"feature"`
	Enabled *bool `json:"enabled"`
}

func checkReadmeFlags(flags []readmeFlag) error {
	if len(flags) == 0 {
		return errors.New("no flags")
	}
	for i, f := range flags {
		if f.Feature.Name == "" || f.Enabled == nil {
			return fmt.Errorf("flag %d has no feature.name or enabled", i)
		}
	}
	return nil
}

// checkAllDemoFeatures checks that evaluate's output names every feature of
// the example document.
func checkAllDemoFeatures(out []byte) error {
	raw, err := os.ReadFile("examples/environment-document.json")
	if err != nil {
		return err
	}
	var doc struct {
		FeatureStates []struct {
			Feature struct {
				Name string `json:"name"`
			} `json:"feature"`
		} `json:"feature_states"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return err
	}
	if len(doc.FeatureStates) == 0 {
		return errors.New("the example document has no features")
	}
	for _, fs := range doc.FeatureStates {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(fs.Feature.Name) + `\s`).Match(out) {
			return fmt.Errorf("feature %q is not in the output", fs.Feature.Name)
		}
	}
	return nil
}

// checkReadmeCommands checks, without running them, that the README's go
// commands (in ```sh blocks and in inline code) name flags, tests and local
// packages that exist, that scripts exist, and that a binary a command uses
// was built by an earlier go build line.
func checkReadmeCommands(t *testing.T, readme string, blocks []readmeBlock) {
	funcs := testFuncNames(t)
	built := map[string]bool{}
	var lines []string
	for _, b := range blocks {
		lines = append(lines, b.lines...)
	}
	for _, m := range regexp.MustCompile("`(go (?:test|run|build|install) [^`]*)`").FindAllStringSubmatch(readme, -1) {
		lines = append(lines, strings.ReplaceAll(m[1], "\n", " "))
	}
	for _, line := range lines {
		for _, words := range shellCommands(line) {
			for len(words) > 0 && shellAssignment.MatchString(words[0]) {
				words = words[1:]
			}
			if len(words) == 0 {
				continue
			}
			if err := checkReadmeCommand(words, funcs, built); err != nil {
				t.Errorf("README command %q: %v", line, err)
			}
		}
	}
}

func checkReadmeCommand(words []string, funcs map[string][]string, built map[string]bool) error {
	name, args := words[0], words[1:]
	if name == "go" && len(args) > 1 && args[0] == "-C" {
		// go -C DIR …: another module's folder; this test checks that the
		// folder exists, not the command, whose flags are that module's.
		if fi, err := os.Stat(args[1]); err != nil || !fi.IsDir() {
			return fmt.Errorf("go -C %s: no such folder", args[1])
		}
		return nil
	}
	switch {
	case name == "sudo" && len(args) > 0:
		return checkReadmeCommand(args, funcs, built)
	case name == "go" && len(args) > 0 && args[0] == "tool":
		return nil // go.mod's tool lines are checked by go mod tidy -diff in CI
	case name == "go" && len(args) > 0 && args[0] == "test":
		return checkGoTest(args[1:], funcs)
	case name == "go" && len(args) > 0 && (args[0] == "build" || args[0] == "run" || args[0] == "install"):
		return checkGoBuildRun(args[0], args[1:], built)
	case name == "edge-proxy" || built[name]:
		return checkProxyArgs(args)
	case name == "bash" && len(args) > 0:
		return checkScript(args[0], args[1:], false, built)
	case strings.Contains(name, "/"):
		return checkScript(name, args, true, built)
	case name == "curl":
		return nil // the demo's curl lines are run; others need a server this test does not start
	case name == "docker" || name == "kubectl" || name == "helm":
		return nil // they need a daemon or a cluster this test does not assume
	}
	return fmt.Errorf("this test does not know the command %q; add a check for it", name)
}

var (
	goBuildValueFlags = []string{"o", "ldflags", "gcflags", "tags", "p", "mod", "pgo"}
	goBuildBoolFlags  = []string{"race", "trimpath", "v", "x", "a", "n", "cover"}
	goTestValueFlags  = []string{"run", "skip", "bench", "benchtime", "count", "cpu", "fuzz", "fuzztime", "fuzzminimizetime", "timeout", "parallel", "shuffle", "cpuprofile", "memprofile", "blockprofile", "mutexprofile", "trace", "coverprofile", "outputdir", "list", "exec", "vet"}
	goTestBoolFlags   = []string{"short", "benchmem", "json", "c", "failfast", "fullpath"}
)

func checkGoTest(args []string, funcs map[string][]string) error {
	patterns := map[string]string{}
	var pkgs []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			pkgs = append(pkgs, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		var needsValue bool
		switch {
		case slices.Contains(goTestValueFlags, name) || slices.Contains(goBuildValueFlags, name):
			needsValue = true
		case slices.Contains(goTestBoolFlags, name) || slices.Contains(goBuildBoolFlags, name):
		default:
			// The test binary's own flags (-update, -soak, …) are this
			// binary's: the README's go test commands test this package.
			f := flag.Lookup(name)
			if f == nil {
				return fmt.Errorf("unknown flag -%s", name)
			}
			b, ok := f.Value.(interface{ IsBoolFlag() bool })
			needsValue = !ok || !b.IsBoolFlag()
		}
		if needsValue && !hasValue {
			if i+1 >= len(args) {
				return fmt.Errorf("flag -%s needs a value", name)
			}
			i++
			value = args[i]
		}
		patterns[name] = value
	}
	if len(pkgs) == 0 {
		pkgs = []string{"."}
	}
	for _, p := range pkgs {
		if err := checkPackageArg(p); err != nil {
			return err
		}
	}
	for flagName, kind := range map[string]string{"run": "Test", "bench": "Benchmark", "fuzz": "Fuzz"} {
		pattern, ok := patterns[flagName]
		if !ok || pattern == "^$" {
			continue
		}
		re, err := regexp.Compile(strings.Split(pattern, "/")[0])
		if err != nil {
			return fmt.Errorf("-%s %q: %w", flagName, pattern, err)
		}
		var matched []string
		for _, f := range funcs[kind] {
			if re.MatchString(f) {
				matched = append(matched, f)
			}
		}
		if len(matched) == 0 {
			return fmt.Errorf("-%s %q matches no %s function", flagName, pattern, kind)
		}
		if flagName == "fuzz" && len(matched) > 1 {
			return fmt.Errorf("-fuzz %q matches %d fuzz tests (%v); go test fuzzes one", pattern, len(matched), matched)
		}
	}
	if _, fuzz := patterns["fuzz"]; fuzz {
		if pkgs[0] != "." || len(pkgs) > 1 {
			return errors.New("-fuzz needs exactly one package")
		}
		if _, ok := patterns["run"]; !ok {
			return errors.New("-fuzz without -run runs the whole test suite first; add -run '^$'")
		}
	}
	_, bench := patterns["bench"]
	if run, ok := patterns["run"]; ok && run == "^$" && !bench && patterns["fuzz"] == "" {
		return errors.New("-run '^$' with neither -bench nor -fuzz runs nothing")
	}
	return nil
}

func checkGoBuildRun(sub string, args []string, built map[string]bool) error {
	var out string
	i := 0
	for ; i < len(args) && strings.HasPrefix(args[i], "-"); i++ {
		name, value, hasValue := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		switch {
		case slices.Contains(goBuildValueFlags, name):
			if !hasValue {
				if i+1 >= len(args) {
					return fmt.Errorf("flag -%s needs a value", name)
				}
				i++
				value = args[i]
			}
			if name == "o" {
				out = value
			}
		case slices.Contains(goBuildBoolFlags, name):
		default:
			return fmt.Errorf("go %s has no flag -%s", sub, name)
		}
	}
	if i >= len(args) {
		return fmt.Errorf("go %s names no package", sub)
	}
	if err := checkPackageArg(args[i]); err != nil {
		return err
	}
	if sub != "run" {
		if i+1 < len(args) {
			return fmt.Errorf("go build: unexpected %q after the package", args[i+1])
		}
		if out != "" {
			built[out] = true
			built["./"+out] = true
		}
		return nil
	}
	if args[i] != "." {
		return nil
	}
	return checkProxyArgs(args[i+1:])
}

// checkProxyArgs parses the program's arguments as main does, with -h
// after them so that nothing runs: known flags end in the usage, nil.
func checkProxyArgs(args []string) error {
	getenv := func(string) string { return "" }
	if err := run(context.Background(), append(slices.Clip(args), "-h"), getenv, io.Discard, io.Discard); err != nil {
		return fmt.Errorf("edge-proxy %s: %v", strings.Join(args, " "), err)
	}
	return nil
}

func checkScript(path string, args []string, direct bool, built map[string]bool) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if direct && fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", path)
	}
	for _, a := range args {
		if strings.Contains(a, "/") && !strings.HasPrefix(a, "-") {
			if _, err := os.Stat(a); err != nil && !built[a] {
				return fmt.Errorf("%s: no earlier go build -o line makes %s", path, a)
			}
		}
	}
	return nil
}

func checkPackageArg(p string) error {
	dir := strings.TrimSuffix(p, "/...")
	if dir != "." && !strings.HasPrefix(dir, "./") {
		return fmt.Errorf("package %q: this test checks local package paths only", p)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("package %q: no such folder", p)
	}
	return nil
}

// testFuncNames lists the package's Test, Benchmark and Fuzz functions.
func testFuncNames(t *testing.T) map[string][]string {
	t.Helper()
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	funcs := map[string][]string{}
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv != nil {
				continue
			}
			for _, kind := range []string{"Test", "Benchmark", "Fuzz"} {
				if strings.HasPrefix(fd.Name.Name, kind) && fd.Name.Name != "TestMain" {
					funcs[kind] = append(funcs[kind], fd.Name.Name)
				}
			}
		}
	}
	return funcs
}

var shellAssignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// isShellAssignment says whether a word, or a whole line, only sets a
// variable.
func isShellAssignment(s string) bool {
	if !shellAssignment.MatchString(s) {
		return false
	}
	cmds := shellCommands(s)
	return len(cmds) == 1 && len(cmds[0]) == 1
}

func stripShellComment(line string) string {
	var b strings.Builder
	for i, c := range shellCommands(line) {
		if i > 0 {
			b.WriteString(" ; ")
		}
		b.WriteString(strings.Join(c, " "))
	}
	return b.String()
}

// shellCommands splits a line into simple commands (at &&, ||, ; and |) of
// words, with quotes removed and a trailing comment dropped. It knows what
// README lines use, not all of sh: no expansions, no redirections.
func shellCommands(line string) [][]string {
	var cmds [][]string
	var words []string
	var word strings.Builder
	inWord := false
	endWord := func() {
		if inWord {
			words = append(words, word.String())
			word.Reset()
			inWord = false
		}
	}
	endCmd := func() {
		endWord()
		if len(words) > 0 {
			cmds = append(cmds, words)
		}
		words = nil
	}
	r := bufio.NewReader(strings.NewReader(line))
	for {
		c, _, err := r.ReadRune()
		if err != nil {
			break
		}
		switch {
		case c == '\'':
			inWord = true
			s, _ := r.ReadString('\'')
			word.WriteString(strings.TrimSuffix(s, "'"))
		case c == '"':
			inWord = true
			for {
				d, _, err := r.ReadRune()
				if err != nil || d == '"' {
					break
				}
				if d == '\\' {
					if e, _, err := r.ReadRune(); err == nil {
						d = e
					}
				}
				word.WriteRune(d)
			}
		case c == '\\':
			inWord = true
			if d, _, err := r.ReadRune(); err == nil {
				word.WriteRune(d)
			}
		case c == '#' && !inWord:
			endCmd()
			return cmds
		case c == ';' || c == '|' || c == '&':
			if d, _, err := r.ReadRune(); err == nil && d != c {
				r.UnreadRune()
			}
			endCmd()
		case c == ' ' || c == '\t':
			endWord()
		default:
			inWord = true
			word.WriteRune(c)
		}
	}
	endCmd()
	return cmds
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	exited <-chan struct{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
