package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// maxStatusBytes bounds the status answer read: a few hundred bytes per
// environment.
const maxStatusBytes = 16 << 20

// runStatus is `edge-proxy status`: GET /proxy/status of a running proxy,
// printed as a table, for a scratch container that has no curl (docker
// exec … /edge-proxy status). It exits 1 when any environment is not ok, 2
// when the status could not be read.
//
// Without -url it asks the proxy the configuration describes (as
// -healthcheck does); without -token it takes $ADMIN_TOKEN, else the
// configuration's admin_token, so inside the proxy's own container it
// needs no flags.
func runStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", "", "the proxy's base URL (default: the address the configuration gives, else http://127.0.0.1:8000)")
	token := fs.String("token", "", "the admin token (default $ADMIN_TOKEN, else admin_token of the configuration)")
	configPath := fs.String("config", "", "the configuration to take the address and token from (default $CONFIG_PATH, else ./config.json)")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	fail := func(err error) error { return &exitError{2, err} }
	if done, err := parseArgs(fs, args, "Usage: edge-proxy status [-url URL] [-token TOKEN] [-json]\n\nExit status: 0 every environment ok, 1 any stale or without a document, 2 the status could not be read.\n\n"); done {
		return err
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("status: unexpected argument %q", fs.Arg(0)))
	}
	if *token == "" {
		*token = getenv("ADMIN_TOKEN")
	}
	local := false
	if *target == "" || *token == "" {
		src := &configSource{path: *configPath, explicit: *configPath != "", getenv: getenv}
		if !src.explicit {
			src.path, src.explicit = getenv("CONFIG_PATH"), getenv("CONFIG_PATH") != ""
			if !src.explicit {
				src.path = defaultConfigPath
			}
		}
		cfg, _, err := src.load()
		if err != nil && *token == "" {
			return fail(fmt.Errorf("status: no -token or $ADMIN_TOKEN, and the configuration did not load: %w", err))
		}
		if err != nil {
			cfg = defaultConfig()
		}
		if *token == "" {
			*token = string(cfg.AdminToken)
		}
		if *target == "" {
			*target, local = localURL(cfg), true
		}
	}
	if *token == "" {
		return fail(errors.New("status: give -token, or set $ADMIN_TOKEN (the proxy's admin_token)"))
	}
	report, err := fetchStatus(ctx, strings.TrimRight(*target, "/")+"/proxy/status", *token, local)
	if err != nil {
		return fail(fmt.Errorf("status: %w", err))
	}
	if *asJSON {
		err = printJSON(stdout, report)
	} else {
		err = printStatus(stdout, report)
	}
	if err != nil {
		return fail(err)
	}
	if report.Stale {
		n := 0
		for _, e := range report.Environments {
			if e.Stale {
				n++
			}
		}
		return &exitError{1, fmt.Errorf("%d of %d environments not ok", n, len(report.Environments))}
	}
	return nil
}

// localURL is the base URL of the proxy cfg describes, reached over
// loopback when it listens on every address.
func localURL(cfg Config) string {
	host := cfg.Server.Host
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "http"
	if cfg.Server.TLS.enabled() {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(cfg.Server.Port))
}

// fetchStatus gets and decodes the status. Only for the local proxy (local)
// is its certificate not verified: it names the public host, not the
// loopback address asked, as for -healthcheck. A URL given by hand is
// verified, since the token goes with the request.
func fetchStatus(ctx context.Context, target, token string, local bool) (statusReport, error) {
	var report statusReport
	if _, err := url.Parse(target); err != nil {
		return report, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return report, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	transport := &http.Transport{Proxy: http.ProxyFromEnvironment, DisableKeepAlives: true}
	if local {
		transport.Proxy = nil
		transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return report, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusBytes))
	if err != nil {
		return report, fmt.Errorf("read %s: %w", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(body, &e) == nil && e.Message != "" {
			return report, fmt.Errorf("%s answered %d: %s", target, resp.StatusCode, e.Message)
		}
		return report, fmt.Errorf("%s answered %d", target, resp.StatusCode)
	}
	if err := json.Unmarshal(body, &report); err != nil {
		return report, fmt.Errorf("decode the status from %s: %w", target, err)
	}
	return report, nil
}

// printStatus prints the report for a person: the proxy, then a row per
// environment, then the problems in full.
func printStatus(w io.Writer, r statusReport) error {
	now := r.GeneratedAt
	tlsText := "not serving HTTPS"
	if r.TLS != nil {
		tlsText = "certificate expires " + r.TLS.NotAfter.Format(time.RFC3339) + " (in " + roughDuration(r.TLS.NotAfter.Sub(now)) + ")"
	}
	fmt.Fprintf(w, "edge-proxy %s, started %s (%s ago), configuration generation %d loaded %s\nTLS: %s\n\n",
		r.Version, r.StartedAt.Format(time.RFC3339), roughDuration(now.Sub(r.StartedAt)),
		r.Config.Generation, r.Config.LoadedAt.Format(time.RFC3339), tlsText)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ENVIRONMENT\tCLIENT KEY\tSTATE\tSOURCE\tUPDATED_AT\tCONTENT VERSION\tAGE\tPAGES\tLAST POLL\tNEXT POLL\tSTREAM\tSSE\tANALYTICS pend/fwd/drop")
	for _, e := range r.Environments {
		poll := "none yet"
		if p := e.LastPoll; p != nil {
			poll = p.Outcome
			if p.HTTPStatus != 0 {
				poll += " " + strconv.Itoa(p.HTTPStatus)
			}
			poll += fmt.Sprintf(" %.0fms %s ago", p.LatencyMS, roughDuration(now.Sub(p.At)))
		}
		next := "-"
		if e.NextPoll != nil {
			next = "in " + roughDuration(e.NextPoll.Sub(now))
		}
		age := "-"
		if e.ContentAgeSeconds != nil {
			age = roughDuration(time.Duration(*e.ContentAgeSeconds * float64(time.Second)))
		}
		analytics := "off"
		if a := e.Analytics; a != nil {
			analytics = fmt.Sprintf("%d/%d/%d", a.PendingKeys, a.Forwarded, a.Dropped)
		}
		if ev := e.Events; ev != nil {
			analytics += fmt.Sprintf(" events %d/%d/%d", ev.Pending, ev.Forwarded, ev.Dropped)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%s\n",
			dash(e.Name), e.ClientKey, strings.ToUpper(e.State), dash(e.Source), dash(e.UpdatedAt), dash(e.ContentVersion),
			age, e.PagesFetched, poll, next, e.UpstreamStream, e.SSESubscribers, analytics)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, e := range r.Environments {
		if e.Error != "" {
			fmt.Fprintf(w, "\n%s (%s) %s: %s", dash(e.Name), e.ClientKey, strings.ToUpper(e.State), e.Error)
		}
	}
	if r.Stale {
		fmt.Fprintln(w)
	}
	for _, m := range r.VerifyMismatches {
		fmt.Fprintf(w, "\nshadow verification mismatch %s: %s %s, identity %s, document %s\n",
			m.At.Format(time.RFC3339), m.Environment, m.Feature, m.Identity, m.DocumentVersion)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
