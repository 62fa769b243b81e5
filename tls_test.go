package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// tlsCA is a certificate authority made up for one test; clients trust it
// through their own pool, never the system's.
type tlsCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

func newTLSCA(t testing.TB) *tlsCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "edge-proxy test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tlsCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: pool}
}

var tlsSerial struct {
	sync.Mutex
	n int64
}

// tlsPair is a certificate and its private key, PEM encoded.
type tlsPair struct{ cert, key []byte }

// issue makes a server certificate for 127.0.0.1, localhost and names, with
// commonName telling certificates apart.
func (ca *tlsCA) issue(t testing.TB, commonName string, names ...string) tlsPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tlsSerial.Lock()
	tlsSerial.n++
	serial := tlsSerial.n + 1
	tlsSerial.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     append([]string{"localhost"}, names...),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return tlsPair{
		cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

// tlsFiles is a certificate and key file pair in a directory of its own.
func tlsFiles(t testing.TB, pair tlsPair) ServerTLSConfig {
	t.Helper()
	dir := t.TempDir()
	files := ServerTLSConfig{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	tlsWrite(t, files, pair)
	return files
}

// tlsWrite replaces both files the way rotation tools do: each written
// whole to a temporary file and renamed over the old one.
func tlsWrite(t testing.TB, files ServerTLSConfig, pair tlsPair) {
	t.Helper()
	for path, data := range map[string][]byte{files.CertFile: pair.cert, files.KeyFile: pair.key} {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
}

// tlsConfig is a configuration serving the demo document over HTTPS.
func tlsConfig(t testing.TB, files ServerTLSConfig, edit func(*Config)) Config {
	t.Helper()
	cfg := defaultConfig()
	doc, err := filepath.Abs(demoDocumentPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.EnvironmentKeyPairs = []KeyPair{{ServerSideKey: demoServerKey, ClientSideKey: demoClientKey, DocumentPath: doc}}
	cfg.Server.TLS = files
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("test configuration invalid: %v", err)
	}
	return cfg
}

// tlsClient is a client trusting ca only. http2 chooses whether it offers
// HTTP/2 (through ALPN) or HTTP/1.1 alone.
func tlsClient(t testing.TB, ca *tlsCA, http2 bool) *http.Client {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: ca.pool},
		ForceAttemptHTTP2: http2,
	}
	if !http2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// tlsGet makes a request and returns the response with its body read.
func tlsGet(t testing.TB, client *http.Client, method, url, key, body string) (*http.Response, string) {
	t.Helper()
	resp, raw := httpDo(t, client, method, url, key, body)
	return resp, string(raw)
}

// tlsHandshakeCN opens a new connection and returns the common name of the
// certificate the server presents.
func tlsHandshakeCN(t testing.TB, ca *tlsCA, addr string) string {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: ca.pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// tlsWaitHeartbeat reads the stream up to its next heartbeat comment: the
// stream is alive.
func tlsWaitHeartbeat(t testing.TB, st *sseStream) {
	t.Helper()
	for !st.next(t, "a heartbeat").isComment {
	}
}

// TestTLSServe: with server.tls set the proxy speaks HTTPS, HTTP/1.1 and
// HTTP/2, serves the SDK endpoints and streams over it, and refuses TLS
// versions below 1.2.
func TestTLSServe(t *testing.T) {
	ca := newTLSCA(t)
	files := tlsFiles(t, ca.issue(t, "first"))
	cfg := tlsConfig(t, files, func(c *Config) { c.SSE.HeartbeatSeconds = 0.2 })
	addr, _ := serveAddr(t, cfg)
	base := "https://" + addr

	wantFlags, err := os.ReadFile(demoDocumentPath)
	if err != nil {
		t.Fatal(err)
	}
	plain := newServer(tlsConfig(t, ServerTLSConfig{}, nil), slog.New(slog.DiscardHandler))
	if _, err := plain.publish(plain.environments()[0], wantFlags, "file"); err != nil {
		t.Fatal(err)
	}
	flagsWant := callHandler(t, plain.handler(), "GET", "/api/v1/flags/", withKey(demoClientKey), "").Body.String()
	identityWant := callHandler(t, plain.handler(), "POST", "/api/v1/identities/", withKey(demoClientKey), `{"identifier":"carol","traits":[{"trait_key":"plan","trait_value":"premium"}]}`).Body.String()

	for _, tt := range []struct {
		name      string
		http2     bool
		wantProto string
	}{
		{"HTTP/1.1", false, "HTTP/1.1"},
		{"HTTP/2", true, "HTTP/2.0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client := tlsClient(t, ca, tt.http2)
			waitStatus(t, client, base+"/proxy/health/readiness", http.StatusOK, 10*time.Second)

			resp, body := tlsGet(t, client, "GET", base+"/api/v1/flags/", demoClientKey, "")
			if resp.StatusCode != http.StatusOK || body != flagsWant {
				t.Errorf("GET /api/v1/flags/ over %s = %d %.200s; want 200 and the plain HTTP answer %.200s", tt.name, resp.StatusCode, body, flagsWant)
			}
			if resp.Proto != tt.wantProto {
				t.Errorf("GET /api/v1/flags/: protocol %s; want %s", resp.Proto, tt.wantProto)
			}
			if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
				t.Errorf("GET /api/v1/flags/: TLS state %+v; want TLS 1.2 or later", resp.TLS)
			}
			resp, body = tlsGet(t, client, "POST", base+"/api/v1/identities/", demoClientKey, `{"identifier":"carol","traits":[{"trait_key":"plan","trait_value":"premium"}]}`)
			if resp.StatusCode != http.StatusOK || body != identityWant {
				t.Errorf("POST /api/v1/identities/ over %s = %d %.200s; want 200 and %.200s", tt.name, resp.StatusCode, body, identityWant)
			}

			st := sseOpenStream(t, client, base+sseStreamPath(demoClientKey), nil)
			defer st.close(t)
			if st.resp.Proto != tt.wantProto {
				t.Errorf("stream protocol %s; want %s", st.resp.Proto, tt.wantProto)
			}
			if ev := st.nextEvent(t, "the current updated_at"); ev.event != "environment_updated" {
				t.Errorf("first stream event = %+v; want environment_updated", ev)
			}
			tlsWaitHeartbeat(t, st)
		})
	}

	t.Run("TLS 1.1 refused", func(t *testing.T) {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, MaxVersion: tls.VersionTLS11})
		if err == nil {
			conn.Close()
			t.Fatal("a TLS 1.1 handshake succeeded; want TLS 1.2 minimum")
		}
	})

	t.Run("plain HTTP to the TLS port", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/api/v1/flags/")
		if err != nil {
			return // a closed connection is a fine answer too
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS port = %d; want 400", resp.StatusCode)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		_, body := tlsGet(t, tlsClient(t, ca, true), "GET", base+"/metrics", "", "")
		fams, err := parseExposition(body)
		if err != nil {
			t.Fatalf("exposition: %v", err)
		}
		for _, name := range []string{"edge_proxy_tls_certificate_reloads_total", "edge_proxy_tls_certificate_not_after_seconds"} {
			if fams[name] == nil {
				t.Errorf("/metrics lacks %s", name)
			}
		}
	})
}

// TestTLSRotation swaps the certificate pair while a stream, an HTTP/1.1
// keep-alive connection and an HTTP/2 connection are open: all three
// survive (they keep the certificate they negotiated), new handshakes see
// the new certificate, and a bad pair written later is refused at reload
// while the good one keeps being served.
func TestTLSRotation(t *testing.T) {
	ca := newTLSCA(t)
	files := tlsFiles(t, ca.issue(t, "before"))
	cfg := tlsConfig(t, files, func(c *Config) {
		c.SSE.HeartbeatSeconds = 0.2
		c.Server.TimeoutKeepAlive = 120 // the keep-alive connection must not idle out meanwhile
	})
	addr, _ := serveAddr(t, cfg)
	base := "https://" + addr
	if cn := tlsHandshakeCN(t, ca, addr); cn != "before" {
		t.Fatalf("certificate before rotation: CN %q; want before", cn)
	}

	h1, h2 := tlsClient(t, ca, false), tlsClient(t, ca, true)
	waitStatus(t, h1, base+"/proxy/health/readiness", http.StatusOK, 10*time.Second)
	waitStatus(t, h2, base+"/proxy/health/readiness", http.StatusOK, 10*time.Second)
	// The stream has a connection of its own; h1's stays idle, kept alive.
	stream := sseOpenStream(t, tlsClient(t, ca, false), base+sseStreamPath(demoClientKey), nil)
	defer stream.close(t)
	stream.nextEvent(t, "the current updated_at")

	tlsWrite(t, files, ca.issue(t, "after"))
	deadline := time.Now().Add(10 * time.Second)
	for tlsHandshakeCN(t, ca, addr) != "after" {
		if time.Now().After(deadline) {
			t.Fatal("new handshakes still see the old certificate 10 s after the files changed")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// reused makes a request and reports whether it went over an existing
	// connection, and which certificate that connection holds.
	reused := func(client *http.Client) (bool, string) {
		var info httptrace.GotConnInfo
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { info = i },
		})
		req, err := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/flags/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Environment-Key", demoClientKey)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET after rotation: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET after rotation = %d; want 200", resp.StatusCode)
		}
		return info.Reused, resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	for name, client := range map[string]*http.Client{"HTTP/1.1 keep-alive": h1, "HTTP/2": h2} {
		if ok, cn := reused(client); !ok || cn != "before" {
			t.Errorf("%s connection after rotation: reused %t, certificate %q; want the open connection, still on \"before\"", name, ok, cn)
		}
	}
	tlsWaitHeartbeat(t, stream)

	// A key that does not match: the reload fails, "after" stays.
	certAfter, err := os.ReadFile(files.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	tlsWrite(t, files, tlsPair{cert: certAfter, key: ca.issue(t, "other").key})
	metrics := tlsClient(t, ca, true)
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, body := tlsGet(t, metrics, "GET", base+"/metrics", "", "")
		if strings.Contains(body, `edge_proxy_tls_certificate_reloads_total{result="error"} 1`) {
			if !strings.Contains(body, `edge_proxy_tls_certificate_reloads_total{result="ok"} 1`) {
				t.Errorf("/metrics after one good and one bad reload:\n%s\nwant ok 1 and error 1", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics counts no failed reload 10 s after a mismatched key was written:\n%s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cn := tlsHandshakeCN(t, ca, addr); cn != "after" {
		t.Errorf("certificate after a failed reload: CN %q; want the previous pair, after", cn)
	}
}

// TestTLSBadPairAtStart: a pair that cannot be served stops the start with
// an error naming the key and the file at fault.
func TestTLSBadPairAtStart(t *testing.T) {
	ca := newTLSCA(t)
	goodPair := ca.issue(t, "good")
	certPEM, keyPEM, otherKey := goodPair.cert, goodPair.key, ca.issue(t, "other").key
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good, key := write("good.crt", certPEM), write("good.key", keyPEM)
	tests := []struct {
		name       string
		files      ServerTLSConfig
		wantKey    string // the configuration key named
		wantInText []string
	}{
		{"missing certificate file", ServerTLSConfig{filepath.Join(dir, "nope.crt"), key}, "server.tls.cert_file", []string{"nope.crt", "no such file"}},
		{"missing key file", ServerTLSConfig{good, filepath.Join(dir, "nope.key")}, "server.tls.key_file", []string{"nope.key", "no such file"}},
		{"certificate file not PEM", ServerTLSConfig{write("text.crt", []byte("not a certificate")), key}, "server.tls.cert_file", []string{"text.crt", "CERTIFICATE"}},
		{"key in the certificate file", ServerTLSConfig{write("swapped.crt", keyPEM), write("swapped.key", certPEM)}, "server.tls.cert_file", []string{"swapped.crt"}},
		{"certificate garbled", ServerTLSConfig{write("garbled.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbage")})), key}, "server.tls.cert_file", []string{"garbled.crt", "does not parse"}},
		{"key file not PEM", ServerTLSConfig{good, write("text.key", []byte("not a key"))}, "server.tls.key_file", []string{"text.key"}},
		{"key of another certificate", ServerTLSConfig{good, write("other.key", otherKey)}, "server.tls.key_file", []string{"other.key", "good.crt", "does not match"}},
		{"empty files", ServerTLSConfig{write("empty.crt", nil), write("empty.key", nil)}, "server.tls.cert_file", []string{"empty.crt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tlsConfig(t, tt.files, func(c *Config) { c.Server.Host, c.Server.Port = "127.0.0.1", 0 })
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := serve(ctx, cfg, nil, slog.New(slog.DiscardHandler))
			if err == nil {
				t.Fatal("serve with a bad pair = nil; want an error")
			}
			for _, want := range append([]string{tt.wantKey}, tt.wantInText...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("serve error = %q; want it to contain %q", err, want)
				}
			}
		})
	}

	t.Run("one file only", func(t *testing.T) {
		for _, files := range []ServerTLSConfig{{CertFile: good}, {KeyFile: key}} {
			cfg := defaultConfig()
			cfg.EnvironmentKeyPairs = []KeyPair{{ServerSideKey: demoServerKey, ClientSideKey: demoClientKey}}
			cfg.Server.TLS = files
			if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "server.tls") {
				t.Errorf("validate(%+v) = %v; want an error naming server.tls", files, err)
			}
		}
	})
}

// TestTLSReloadKeepsPair drives the reloader's checks one by one: a change
// that does not load is logged once and counted, the old pair stays, and the
// next change that loads replaces it.
func TestTLSReloadKeepsPair(t *testing.T) {
	ca := newTLSCA(t)
	files := tlsFiles(t, ca.issue(t, "first"))
	var logs bytes.Buffer
	c, err := newCertReloader(files, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		pair, err := c.tlsConfig().GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return pair.Leaf.Subject.CommonName
	}
	steps := []struct {
		name                      string
		write                     func()
		wantCN                    string
		wantReloads, wantFailures uint64
	}{
		{"no change", func() {}, "first", 0, 0},
		{"new certificate, old key", func() {
			oldKey, _ := os.ReadFile(files.KeyFile)
			tlsWrite(t, files, tlsPair{cert: ca.issue(t, "second").cert, key: oldKey})
		}, "first", 0, 1},
		{"no change after a failure: not retried, not logged again", func() {}, "first", 0, 1},
		{"certificate file removed", func() {
			if err := os.Remove(files.CertFile); err != nil {
				t.Fatal(err)
			}
		}, "first", 0, 2},
		{"a good pair", func() { tlsWrite(t, files, ca.issue(t, "third")) }, "third", 1, 2},
		{"rewritten in place", func() {
			pair := ca.issue(t, "fourth")
			if err := os.WriteFile(files.KeyFile, pair.key, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(files.CertFile, pair.cert, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "fourth", 2, 2},
	}
	for _, step := range steps {
		step.write()
		c.check()
		if got := served(); got != step.wantCN {
			t.Errorf("%s: serving %q; want %q", step.name, got, step.wantCN)
		}
		if r, f := c.reloads.Load(), c.failures.Load(); r != step.wantReloads || f != step.wantFailures {
			t.Errorf("%s: reloads %d, failures %d; want %d, %d", step.name, r, f, step.wantReloads, step.wantFailures)
		}
	}
	failed := strings.Count(logs.String(), "TLS certificate reload failed")
	if failed != 2 {
		t.Errorf("logged %d reload failures; want 2 (one per change that did not load):\n%s", failed, logs.String())
	}
	if !strings.Contains(logs.String(), filepath.Base(files.CertFile)) {
		t.Errorf("the failure log does not name the certificate file:\n%s", logs.String())
	}
}

// TestTLSHealthcheck: -healthcheck probes an HTTPS listener whose
// certificate it cannot verify (its CA is not in any trust store), and a
// TLS listener refuses a probe made without TLS.
func TestTLSHealthcheck(t *testing.T) {
	ca := newTLSCA(t)
	files := tlsFiles(t, ca.issue(t, "probe", "edge.example.com"))
	cfg := tlsConfig(t, files, nil)
	addr, _ := serveAddr(t, cfg)
	waitStatus(t, tlsClient(t, ca, true), "https://"+addr+"/proxy/health/readiness", http.StatusOK, 10*time.Second)
	_, portText, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Server.Host, cfg.Server.Port = "0.0.0.0", port
	if err := probeReadiness(t.Context(), cfg); err != nil {
		t.Errorf("probeReadiness against the TLS listener = %v; want nil", err)
	}
	cfg.Server.TLS = ServerTLSConfig{}
	if err := probeReadiness(t.Context(), cfg); err == nil {
		t.Error("a plain HTTP probe of the TLS listener = nil; want an error")
	}

	// Through run, as the image's HEALTHCHECK calls it.
	cfgFile := e2eWriteFile(t, t.TempDir(), "config.json", map[string]any{
		"environment_key_pairs": []map[string]string{{"server_side_key": demoServerKey, "client_side_key": demoClientKey}},
		"server":                map[string]any{"port": port, "tls": map[string]string{"cert_file": files.CertFile, "key_file": files.KeyFile}},
	})
	if _, _, err := e2eRun(t, t.Context(), nil, "-config", cfgFile, "-healthcheck"); err != nil {
		t.Errorf("run -healthcheck against the TLS listener = %v; want nil", err)
	}
	var unreachable *net.OpError
	cfg.Server.Port = freePort(t)
	cfg.Server.TLS = files
	if err := probeReadiness(t.Context(), cfg); err == nil || !errors.As(err, &unreachable) {
		t.Errorf("probeReadiness of a closed port = %v; want a connection error", err)
	}
}

// serveAddr runs the real server with cfg; it returns its address and stop.
func serveAddr(t testing.TB, cfg Config) (string, func() error) {
	t.Helper()
	addr, _, stop := serveConfig(t, cfg)
	return addr, stop
}
