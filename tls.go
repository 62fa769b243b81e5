package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// certCheckInterval is how often the certificate files are checked for a
// change: two stats, and rotation tools (cert-manager, ACME clients) renew
// days before expiry, so a second is more than quick enough.
const certCheckInterval = time.Second

// certReloader hands the current certificate pair to every TLS handshake and
// swaps in a new pair when its files change. Connections already open keep
// the pair they negotiated; only new handshakes see the new one. A pair that
// fails to load is logged and counted, and the old pair stays.
//
// It is safe for concurrent use; use newCertReloader.
type certReloader struct {
	files ServerTLSConfig
	log   *slog.Logger
	pair  atomic.Pointer[tls.Certificate]

	reloads  atomic.Uint64 // pairs loaded after the first
	failures atomic.Uint64 // changes whose pair did not load

	// change is the state of the files when they were last read, loaded or
	// not: a bad pair is reported once, not on every check. Only watch
	// touches it.
	change fileChange
}

// newCertReloader loads the pair named by files. An error names the key and
// the file at fault.
func newCertReloader(files ServerTLSConfig, log *slog.Logger) (*certReloader, error) {
	c := &certReloader{files: files, log: log}
	c.change.changed(files.CertFile, files.KeyFile)
	pair, err := loadCertificate(files)
	if err != nil {
		return nil, err
	}
	c.pair.Store(pair)
	c.logLoaded("TLS certificate loaded", pair)
	return c, nil
}

// tlsConfig is the listener's TLS configuration. http.Server.ServeTLS adds
// HTTP/2 to it.
func (c *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{
		// TLS 1.0 and 1.1 are deprecated (RFC 8996); every maintained
		// Flagsmith SDK runtime speaks 1.2.
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.pair.Load(), nil
		},
	}
}

// watch checks the files every interval until ctx ends and reloads the pair
// when they change.
func (c *certReloader) watch(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			c.check()
		}
	}
}

// check reloads the pair if either file changed since it was last read.
// Rotation tools write the two files one after the other, so a check may see
// a new certificate with the old key: that load fails, the old pair stays,
// and the next check, seeing the key change too, loads the new pair.
func (c *certReloader) check() {
	if !c.change.changed(c.files.CertFile, c.files.KeyFile) {
		return
	}
	pair, err := loadCertificate(c.files)
	if err != nil {
		c.failures.Add(1)
		c.log.Error("TLS certificate reload failed; serving the previous certificate", "error", err.Error())
		return
	}
	c.pair.Store(pair)
	c.reloads.Add(1)
	c.logLoaded("TLS certificate reloaded", pair)
}

func (c *certReloader) logLoaded(msg string, pair *tls.Certificate) {
	leaf := pair.Leaf
	c.log.Info(msg, "cert_file", c.files.CertFile, "subject", leaf.Subject.String(),
		"dns_names", leaf.DNSNames, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	// Gateways without a battery-backed clock boot in 1970, so an "expired"
	// or "not yet valid" reading may be the clock's fault: warn, serve.
	if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		c.log.Warn("TLS certificate is outside its validity period (or the clock is wrong)",
			"cert_file", c.files.CertFile, "not_before", leaf.NotBefore.UTC().Format(time.RFC3339),
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
}

// writeMetrics appends the TLS families to the Prometheus exposition.
func (c *certReloader) writeMetrics(b *bytes.Buffer) {
	b.WriteString("# HELP edge_proxy_tls_certificate_reloads_total Certificate file changes by result: reloaded (ok) or kept the previous pair (error).\n")
	b.WriteString("# TYPE edge_proxy_tls_certificate_reloads_total counter\n")
	fmt.Fprintf(b, "edge_proxy_tls_certificate_reloads_total{result=\"error\"} %d\n", c.failures.Load())
	fmt.Fprintf(b, "edge_proxy_tls_certificate_reloads_total{result=\"ok\"} %d\n", c.reloads.Load())
	b.WriteString("# HELP edge_proxy_tls_certificate_not_after_seconds Expiry of the certificate being served, Unix seconds.\n")
	b.WriteString("# TYPE edge_proxy_tls_certificate_not_after_seconds gauge\n")
	fmt.Fprintf(b, "edge_proxy_tls_certificate_not_after_seconds %d\n", c.pair.Load().Leaf.NotAfter.Unix())
}

// maxPEMBytes bounds a certificate or key file read: a long chain is a few
// kilobytes.
const maxPEMBytes = 1 << 20

// loadCertificate reads and checks the pair. Each error names the
// configuration key and the file it is about.
func loadCertificate(files ServerTLSConfig) (*tls.Certificate, error) {
	certPEM, err := readRegularFile(files.CertFile, maxPEMBytes)
	if err != nil {
		return nil, fmt.Errorf("server.tls.cert_file: %w", err)
	}
	if err := checkCertificatePEM(certPEM); err != nil {
		return nil, fmt.Errorf("server.tls.cert_file %s: %w", files.CertFile, err)
	}
	keyPEM, err := readRegularFile(files.KeyFile, maxPEMBytes)
	if err != nil {
		return nil, fmt.Errorf("server.tls.key_file: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The certificate parsed above, so the key is at fault: not PEM, not
		// a key, or not the certificate's key.
		return nil, fmt.Errorf("server.tls.key_file %s (for the certificate in %s): %w", files.KeyFile, files.CertFile, err)
	}
	return &pair, nil
}

// checkCertificatePEM reports a certificate file that holds no certificate
// or a certificate that does not parse, which tls.X509KeyPair would blame on
// the pair as a whole.
func checkCertificatePEM(data []byte) error {
	found := false
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("certificate does not parse: %w", err)
		}
		found = true
	}
	if !found {
		return errors.New("no PEM \"CERTIFICATE\" block found")
	}
	return nil
}
