package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of files.go's one change watcher, through each of its users: a file
// that failed to load (a document, the config, a certificate) is read
// again only when stat shows a change (size, modification time or inode),
// not on every check. Each test hides a good file behind the bad one's
// stat (rewriteUnseen): a watcher that read the unchanged file again would
// load it. Before fileChange, a truncated 30 MB document was re-read every
// second, for ever.

// rewriteUnseen writes data, of the file's size, over path in place and
// puts the modification time back: a change stat cannot see.
func rewriteUnseen(t testing.TB, path string, data []byte) {
	t.Helper()
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if before.Size() != int64(len(data)) {
		t.Fatalf("rewriteUnseen(%s): %d bytes over %d; want the same size", path, len(data), before.Size())
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, time.Time{}, before.ModTime()); err != nil {
		t.Fatal(err)
	}
	if after, err := os.Stat(path); err != nil || !sameFile(before, after) {
		t.Fatalf("rewriteUnseen(%s): stat shows the change (%v)", path, err)
	}
}

// writeStamped writes data to path with the modification time n seconds
// into a fixed day: distinct stamps whatever the file system's clock
// granularity.
func writeStamped(t testing.TB, path string, data []byte, n int) {
	t.Helper()
	if data != nil {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2026, 12, 1, 0, 0, n, 0, time.UTC)
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

func TestDocumentFileReadOnlyWhenChanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		good := testDocument(clientKeyA, pollerUpdatedAt, "from-file")
		truncated := bytes.Clone(good)
		truncated[len(truncated)-1] = ' ' // the closing brace: same size, not JSON
		path := filepath.Join(t.TempDir(), "document.json")
		writeStamped(t, path, truncated, 1)
		s := newTestServer(t, withPairs(KeyPair{ServerSideKey: serverKeyA, ClientSideKey: clientKeyA, DocumentPath: path}))
		s.poll(t, &http.Client{})
		synctest.Wait()

		rewriteUnseen(t, path, good)
		time.Sleep(30 * fileCheckInterval)
		synctest.Wait()
		if snap := s.env(t, clientKeyA).snap.Load(); snap != nil {
			t.Fatalf("an unchanged document file that failed to load was read again (its good content now served)")
		}
		if n := strings.Count(s.logs.String(), "document file not loaded"); n != 1 {
			t.Errorf("logged the bad document %d times; want once:\n%s", n, s.logs)
		}

		writeStamped(t, path, nil, 2) // touched: read again
		time.Sleep(2 * fileCheckInterval)
		synctest.Wait()
		pollerWantFlags(t, s, clientKeyA, pollerFlags("from-file"))
	})
}

func TestConfigFileReadOnlyWhenChanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		config := func(frequency string) []byte {
			return []byte(`{"environment_key_pairs": [{"server_side_key": "` + serverKeyA + `", "client_side_key": "` + clientKeyA +
				`"}], "api_poll_frequency_seconds": ` + frequency + `}`)
		}
		path := filepath.Join(t.TempDir(), "config.json")
		writeStamped(t, path, config("3600"), 1)
		s := newTestServer(t, withPairs(pairA))
		src := &configSource{path: path, explicit: true, getenv: func(string) string { return "" }}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { s.watchConfig(ctx, src, nil); close(done) }()
		defer func() { cancel(); <-done }()
		synctest.Wait()
		count := func(msg string) int { return strings.Count(s.logs.String(), msg) }

		writeStamped(t, path, config("1e10"), 2) // out of range: rejected
		time.Sleep(2 * configCheckInterval)
		synctest.Wait()
		if r := count("configuration rejected"); r != 1 {
			t.Fatalf("rejected %d times; want once:\n%s", r, s.logs)
		}

		rewriteUnseen(t, path, config("1800"))
		time.Sleep(30 * configCheckInterval)
		synctest.Wait()
		if r, a := count("configuration rejected"), count("configuration reloaded"); r != 1 || a != 0 {
			t.Fatalf("an unchanged config file was read again: rejected %d, reloaded %d; want 1 and 0", r, a)
		}

		writeStamped(t, path, nil, 3)
		time.Sleep(2 * configCheckInterval)
		synctest.Wait()
		if got := s.config().PollFrequency; got != 1800 || count("configuration reloaded") != 1 {
			t.Errorf("after the file changed: api_poll_frequency_seconds %v, reloads %d; want 1800, once", got, count("configuration reloaded"))
		}
	})
}

func TestCertificateFilesReadOnlyWhenChanged(t *testing.T) {
	ca := newTLSCA(t)
	files := tlsFiles(t, ca.issue(t, "first"))
	writeStamped(t, files.CertFile, nil, 1)
	writeStamped(t, files.KeyFile, nil, 1)
	var logs bytes.Buffer
	c, err := newCertReloader(files, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		pair, err := c.tlsConfig().GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return pair.Leaf.Subject.CommonName
	}

	second := ca.issue(t, "second")
	broken := bytes.Replace(second.cert, []byte("BEGIN CERTIFICATE"), []byte("BEGIN CERTIFICATX"), 1)
	writeStamped(t, files.CertFile, broken, 2)
	writeStamped(t, files.KeyFile, second.key, 2)
	c.check()
	if c.failures.Load() != 1 || served() != "first" {
		t.Fatalf("a broken certificate: failures %d, serving %q; want 1, first", c.failures.Load(), served())
	}

	rewriteUnseen(t, files.CertFile, second.cert)
	for range 30 { // thirty ticks of watch
		c.check()
	}
	if r, f := c.reloads.Load(), c.failures.Load(); r != 0 || f != 1 || served() != "first" {
		t.Fatalf("unchanged files that failed to load were read again: reloads %d, failures %d, serving %q; want 0, 1, first", r, f, served())
	}

	writeStamped(t, files.CertFile, nil, 3)
	c.check()
	if r := c.reloads.Load(); r != 1 || served() != "second" {
		t.Errorf("after the file changed: reloads %d, serving %q; want 1, second", r, served())
	}
	if n := strings.Count(logs.String(), "TLS certificate reload failed"); n != 1 {
		t.Errorf("logged %d reload failures; want one:\n%s", n, logs.String())
	}
}
