// The edge-proxy command serves Flagsmith feature flags from memory, next to
// the servers that use them.
//
// For every configured environment it keeps the latest Flagsmith environment
// document, polled from the Flagsmith API (or read from a local file),
// compiles it into an immutable snapshot, evaluates flags itself and answers
// the Flagsmith SDK endpoints with the JSON the Flagsmith API gives:
//
//	GET  /api/v1/flags/                     environment flags (?feature=NAME for one)
//	POST /api/v1/identities/                identity flags for the traits sent
//	GET  /api/v1/identities/?identifier=ID  identity flags, no traits
//	GET  /api/v1/environment-document/      the document (server-side keys only)
//	GET  /proxy/health/readiness            readiness (also /proxy/health, /health)
//	GET  /proxy/health/liveness             liveness
//	GET  /sse/environments/{key}/stream     realtime updates (Server-Sent Events)
//	POST /api/v1/analytics/flags/           flag analytics (also /api/v2/…), forwarded upstream
//	POST /v1/events                         experimentation events, relayed to analytics.events_api_url
//	POST /ofrep/v1/evaluate/flags[/{key}]   OpenFeature remote evaluation (OFREP)
//	POST /proxy/refresh                     poll now (needs admin_token)
//	GET  /proxy/config                      the configuration in force (needs admin_token)
//	GET  /proxy/status                      every environment's state, JSON or a page (needs admin_token)
//	POST /proxy/explain                     why an identity gets each flag (server key)
//	POST /proxy/webhook                     Flagsmith webhooks (needs webhook_secret)
//	POST /proxy/peer-refresh                a push relayed by another replica (needs peer_secret)
//	POST /sse/environments/{key}/queue-change  self-hosted Flagsmith's realtime push
//	GET  /metrics                           Prometheus metrics
//
// A document becomes what a request reads in four stages, each named once and
// by that name everywhere:
//
//	environmentDocument  document.go  the JSON as received (its bytes kept for serving)
//	evalContext          context.go   Flagsmith's evaluation context it maps to
//	engine               engine.go    the context compiled: conditions parsed, overrides
//	                                  ranked, identity overrides a lookup by identifier
//	snapshot             snapshot.go  the engine plus every response body pre-encoded
//
// A compiled engine is packed (pack.go) so that a large document costs about
// its size in memory, and after a publish the collector's room to grow is
// sized to what stays live (memory.go).
//
// Each configured environment (server.go) holds its current snapshot behind
// an atomic pointer. Its poll loop (poller.go) fetches the document's pages
// (pages.go), publishes it off the request path (snapshot.go), records the
// poll (status.go) and waits (backoff.go). A request is read (request.go;
// decode.go for a body), evaluated (engine.go), encoded by its feature's
// file (flags.go, identities.go and identities_answer.go, ofrep.go) and
// written (respond.go), inside middleware.go; it loads the snapshot once
// and takes no lock.
//
// Configuration comes from config.json (-config, else $CONFIG_PATH, else
// ./config.json) and environment variables named like its top-level keys in
// upper case: environment_key_pairs, api_url, api_poll_frequency_seconds,
// api_poll_timeout_seconds, allow_origins, allow_credentials, server (with
// server.tls for HTTPS), logging, health_check, cache_dir, admin_token, sse,
// limits, analytics, full_refresh_seconds, max_document_pages,
// realtime_api_url, webhook_secret, peers, peer_secret, verify (shadow
// verification, verify.go) and write_back (trait write-back, writeback.go).
// SIGHUP, or a change of the file, reloads it (reload.go); SIGTERM turns
// readiness off, drains for server.drain_seconds, then shuts down. See
// README.md for the reference.
//
// Subcommands and flags:
//
//	edge-proxy evaluate CONTEXT.json                    evaluate an evaluation context
//	edge-proxy evaluate -document DOC -identifier ID    explain one identity's flags
//	edge-proxy status [-url URL] [-token TOKEN]         print a running proxy's status
//	edge-proxy -healthcheck                             probe the local readiness endpoint
//	edge-proxy -print-config                            print the effective configuration
//	edge-proxy -version
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
)

// version is stamped at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	// Nothing reads allocation profiles in a running proxy, and sampling
	// them keeps a table of call stacks (over a MiB with large documents).
	runtime.MemProfileRate = 0
	// Ctrl-C stops at once (gracefully, without draining); serve handles
	// SIGTERM (drain, then stop) and SIGHUP (reload).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge-proxy:", err)
		os.Exit(exitCode(err))
	}
}

// exitError carries a process exit status other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// run is the whole program, callable from tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "evaluate" {
		return runEvaluate(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "status" {
		return runStatus(ctx, args[1:], getenv, stdout, stderr)
	}
	fs := flag.NewFlagSet("edge-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "path of config.json (default $CONFIG_PATH, else ./config.json)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	healthcheck := fs.Bool("healthcheck", false, "probe the local readiness endpoint; exit 0 when ready, 1 otherwise")
	printConfig := fs.Bool("print-config", false, "print the configuration the file and environment give (secrets masked) and exit; a running proxy answers the one in force at GET /proxy/config")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: edge-proxy [flags]\n       edge-proxy evaluate CONTEXT.json\n       edge-proxy evaluate -document DOC.json -identifier ID [-trait key=value]... [-json]\n       edge-proxy status [-url URL] [-token TOKEN] [-json]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{2, err}
	}
	if fs.NArg() > 0 {
		return &exitError{2, fmt.Errorf("unexpected argument %q (did you mean \"evaluate\" or \"status\"?)", fs.Arg(0))}
	}
	if *showVersion {
		fmt.Fprintln(stdout, "edge-proxy", buildVersion())
		return nil
	}
	src := &configSource{path: *configPath, explicit: *configPath != "", getenv: getenv}
	if !src.explicit {
		if src.path = getenv("CONFIG_PATH"); src.path != "" {
			src.explicit = true
		} else {
			src.path = defaultConfigPath
		}
	}
	cfg, written, warnings, err := loadConfigPaths(src.path, src.explicit, src.getenv)
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	if *printConfig {
		out, err := cfg.printable()
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(out))
		return nil
	}
	if *healthcheck {
		return probeReadiness(ctx, cfg)
	}
	// Serving needs its document files; printing or probing does not.
	if err := checkDocumentFiles(&cfg, src.path, written); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	log := newLogger(cfg.Logging, stderr)
	for _, w := range warnings {
		log.Warn("config", "warning", w)
	}
	if getenv("WEB_CONCURRENCY") != "" {
		log.Info("WEB_CONCURRENCY is ignored: one Go process uses every core")
	}
	return serve(ctx, cfg, src, log)
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return version
}

// newLogger builds the logger the logging settings describe, as Flagsmith's
// proxy offers them: generic (text) or json, the level, and the message
// field renamed as configured.
func newLogger(cfg LoggingConfig, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch strings.ToUpper(cfg.LogLevel) {
	case "DEBUG":
		level = slog.LevelDebug
	case "WARNING", "WARN":
		level = slog.LevelWarn
	case "ERROR", "CRITICAL":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.MessageKey {
			a.Key = cfg.MessageField
		}
		return a
	}}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the HTTP server and the pollers until ctx ends or SIGTERM
// arrives, reloading the configuration from src (when not nil) on SIGHUP and
// when its file changes. Then it shuts down gracefully: readiness turns off,
// on SIGTERM the proxy keeps serving for server.drain_seconds so that load
// balancers stop sending, in-flight requests finish, streams close, pollers
// stop.
func serve(ctx context.Context, cfg Config, src *configSource, log *slog.Logger) error {
	// First of all: SIGHUP's default action kills the process.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(signals)

	s := newServer(cfg, log)
	if cfg.Server.TLS.enabled() {
		// Loaded before listening: a bad pair stops the start, naming the file.
		certs, err := newCertReloader(cfg.Server.TLS, log)
		if err != nil {
			return err
		}
		s.certs = certs
	}
	s.loadCache()
	ln, err := net.Listen("tcp", cfg.addr())
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.addr(), err)
	}
	// Before any relay: a peer address equal to it is this replica.
	s.fleet.listen = ln.Addr().(*net.TCPAddr).AddrPort()
	srv := &http.Server{
		Handler: s.handler(),
		// Slow clients must not hold connections open before sending a request.
		ReadHeaderTimeout: seconds(cfg.Server.ReadHeaderTimeout),
		// Bodies are at most 1 MiB; anything slower than this is abuse.
		ReadTimeout: seconds(cfg.Server.ReadHeaderTimeout + cfg.Server.WriteTimeout),
		// Bounds non-streaming responses; the SSE handler lifts it per write.
		WriteTimeout: seconds(cfg.Server.WriteTimeout),
		// Keep-alive connections idle longer than this are closed, as uvicorn does.
		IdleTimeout: time.Duration(cfg.Server.TimeoutKeepAlive) * time.Second,
		// net/http's own limit, above the configured one: requests between
		// the two get the JSON 431 of limitRequest; only those beyond get
		// net/http's plain-text answer.
		MaxHeaderBytes: cfg.Server.hardHeaderBytes(),
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnContext:    connContext,
	}
	srv.RegisterOnShutdown(s.hub.close)

	client := newPollClient()
	pollCtx, stopPolls := context.WithCancel(context.Background())
	defer stopPolls()
	pollersDone := make(chan error, 1)
	go func() { pollersDone <- s.runLoops(pollCtx, client) }()
	relaysDone := make(chan struct{})
	go func() { s.runRelays(pollCtx, newPeerClient()); close(relaysDone) }()
	identityWorkersDone := s.startIdentityWorkers(pollCtx, client)
	reloads := make(chan struct{}, 1)
	watcherDone := make(chan struct{})
	if src != nil {
		go func() { s.watchConfig(pollCtx, src, reloads); close(watcherDone) }()
	} else {
		close(watcherDone)
	}

	served := make(chan error, 1)
	scheme := "http"
	if s.certs != nil {
		scheme = "https"
		srv.TLSConfig = s.certs.tlsConfig()
		go s.certs.watch(pollCtx, certCheckInterval)
		// ServeTLS adds HTTP/2 to the configuration; the pair comes from
		// GetCertificate, not from files named here.
		go func() { served <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { served <- srv.Serve(ln) }()
	}
	log.Info("listening", "addr", ln.Addr().String(), "scheme", scheme, "environments", len(s.environments()), "version", buildVersion())

	drain := false
wait:
	for {
		select {
		case err := <-served:
			return fmt.Errorf("serve: %w", err)
		case <-ctx.Done():
			break wait
		case sig := <-signals:
			if sig == syscall.SIGTERM {
				drain = true
				break wait
			}
			if src == nil {
				log.Warn("SIGHUP ignored: the configuration was not read from a file")
				continue
			}
			select {
			case reloads <- struct{}{}:
			default: // a reload is pending already
			}
		}
	}
	s.stopping.Store(true)
	if d := s.config().Server.DrainSeconds; drain && d > 0 {
		log.Info("draining", "seconds", d)
		s.drain(ctx, signals, seconds(d))
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), seconds(s.config().Server.ShutdownTimeout))
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	stopPolls()
	<-watcherDone
	<-relaysDone
	<-pollersDone
	<-identityWorkersDone
	s.finalFlush(shutdownCtx, client) // after the last request and the last periodic flush
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// drain keeps serving, readiness already 503, for d: long enough for load
// balancers to see the pod leave (Kubernetes endpoints, a readiness probe)
// and stop sending. A second SIGTERM, or ctx ending, cuts it short.
// Responses meanwhile close their connection (closeWhenStopping), so that
// clients still sending reconnect, rather than race the closing of idle
// connections at shutdown.
func (s *server) drain(ctx context.Context, signals <-chan os.Signal, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		case sig := <-signals:
			if sig == syscall.SIGTERM {
				return
			}
			s.log.Warn("SIGHUP ignored: the proxy is shutting down")
		}
	}
}

// probeReadiness is -healthcheck: a scratch image has no curl, so the binary
// probes itself.
func probeReadiness(ctx context.Context, cfg Config) error {
	url := localURL(cfg) + "/proxy/health/readiness"
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{
		// The probe asks this process whether it is ready, not who it is:
		// the certificate names the public host, not the address probed, and
		// its CA need not be in the image. Kubernetes' HTTPS probes skip
		// verification for the same reason.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		// The process is local: HTTPS_PROXY, set for the upstream, must not
		// route the probe away.
		Proxy:             nil,
		DisableKeepAlives: true,
	}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %d", url, resp.StatusCode)
	}
	return nil
}

// parseArgs parses a subcommand's flags; its help is usage, then the flags.
// done says the subcommand is over: it printed its help (-h), or its
// arguments were wrong (an exit status 2 error, as flag's own).
func parseArgs(fs *flag.FlagSet, args []string, usage string) (done bool, err error) {
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return true, &exitError{2, err}
	}
	return false, nil
}
