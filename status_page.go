package main

import (
	"cmp"
	"fmt"
	"html"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// statusPageRefreshSeconds is how often the status page reloads itself: as
// often as a default poll, so what a person watches is never far behind.
const statusPageRefreshSeconds = 10

// writeStatusPage answers a browser with the status as one self-contained
// page: every figure is in the HTML, the style is inline, and nothing is
// fetched from elsewhere (no script, style sheet, font or image), so it
// works on an air-gapped gateway and under the strictest CSP.
func (s *server) writeStatusPage(w http.ResponseWriter, report statusReport) {
	page := renderStatusPage(report, statusPageRefreshSeconds)
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// The page needs nothing from anywhere: say so, so that a browser
	// refuses any resource even if a value ever slipped through escaping.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(page)
}

// renderStatusPage writes the page by hand, every value through
// html.EscapeString (document names are the document author's text, errors
// the upstream's): html/template would add 1.7 MB to the binary (its
// reflection keeps every exported method linked), and the resident binary
// counts in a large document's RSS (bench/RESULTS.md, 2026-12-07).
func renderStatusPage(r statusReport, refresh int) []byte {
	var b strings.Builder
	// raw writes HTML as it is; text writes a value, escaped.
	raw := func(parts ...string) {
		for _, p := range parts {
			b.WriteString(p)
		}
	}
	text := func(s string) { b.WriteString(html.EscapeString(s)) }
	notOK := 0
	for _, e := range r.Environments {
		if e.Stale {
			notOK++
		}
	}
	envs := len(r.Environments)

	raw("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
	raw("<meta http-equiv=\"refresh\" content=\"", strconv.Itoa(refresh), "\">\n")
	raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>")
	if r.Stale {
		raw("[", strconv.Itoa(notOK), " not ok] ")
	}
	raw("Edge proxy status</title>\n<style>\n", statusPageStyle, "</style>\n</head>\n<body>\n<h1>Edge proxy status</h1>\n")
	if r.Stale {
		raw("<p class=\"summary bad\">", strconv.Itoa(notOK), " of ", strconv.Itoa(envs), " environments not ok</p>\n")
	} else {
		raw("<p class=\"summary ok\">All ", strconv.Itoa(envs), " environments ok</p>\n")
	}
	raw("<dl class=\"facts\">\n<dt>Version</dt><dd>")
	text(r.Version)
	raw("</dd>\n<dt>Started</dt><dd>", pageTime(r.StartedAt), " (", roughDuration(r.GeneratedAt.Sub(r.StartedAt)), " ago)</dd>\n")
	raw("<dt>Configuration</dt><dd>generation ", strconv.FormatUint(r.Config.Generation, 10), ", loaded ", pageTime(r.Config.LoadedAt), "</dd>\n")
	raw("<dt>TLS certificate</dt><dd>")
	if r.TLS != nil {
		raw("expires ", pageTime(r.TLS.NotAfter), " (")
		text(strings.Join(r.TLS.DNSNames, ", "))
		raw(")")
	} else {
		raw("not serving HTTPS")
	}
	raw("</dd>\n<dt>Realtime streams</dt><dd>")
	if r.SSE.Enabled {
		raw(strconv.Itoa(r.SSE.Subscribers), " subscribers")
	} else {
		raw("disabled")
	}
	raw("</dd>\n<dt>Shown at</dt><dd>", pageTime(r.GeneratedAt), "; this page reloads every ", strconv.Itoa(refresh), " s</dd>\n</dl>\n")

	raw("<table>\n<thead><tr><th>Environment</th><th>State</th><th>Document</th><th>Last poll</th><th>Next poll</th><th>Upstream stream</th><th>SDK streams</th><th>Analytics</th></tr></thead>\n<tbody>\n")
	for _, e := range r.Environments {
		raw("<tr class=\"")
		text(e.State)
		raw("\" data-state=\"")
		text(e.State)
		raw("\">\n<td><strong>")
		text(cmp.Or(e.Name, "(no document yet)"))
		raw("</strong><br><span class=\"muted\">client key</span> <code>")
		text(e.ClientKey)
		raw("</code><br><span class=\"muted\">server keys</span> <code>")
		text(strings.Join(e.ServerKeys, ", "))
		raw("</code></td>\n<td><span class=\"mark ")
		text(e.State)
		raw("\">")
		text(strings.ToUpper(e.State))
		raw("</span>")
		switch {
		case e.State == "stale":
			raw("<div class=\"err\">serving the last good document: the last poll failed</div>")
		case e.Error != "":
			raw("<div class=\"err\">")
			text(e.Error)
			raw("</div>")
		}
		raw("</td>\n<td>")
		if e.Source != "" {
			raw("from ")
			text(e.Source)
			if e.DocumentPath != "" {
				raw(" <code title=\"")
				text(e.DocumentPath)
				raw("\">")
				text(filepath.Base(e.DocumentPath))
				raw("</code>")
			}
			raw("<br>updated_at ")
			text(cmp.Or(e.UpdatedAt, "—"))
			raw("<br>content version ")
			text(cmp.Or(e.ContentVersion, "—"))
			raw(" (age ", pageAge(e.ContentAgeSeconds), ")<br>published ", pageTimeOf(e.PublishedAt))
			if e.PagesFetched != 0 {
				raw("<br>pages fetched ", strconv.Itoa(e.PagesFetched))
			}
		} else {
			raw("—")
		}
		raw("</td>\n<td>")
		if p := e.LastPoll; p != nil {
			text(p.Outcome)
			if p.HTTPStatus != 0 {
				raw(" (HTTP ", strconv.Itoa(p.HTTPStatus), ")")
			}
			raw("<br>", pageTime(p.At), "<br>", fmt.Sprintf("%.1f", p.LatencyMS), " ms")
			if p.Error != "" {
				raw("<div class=\"err\">")
				text(p.Error)
				raw("</div>")
			}
		} else {
			raw("none yet")
		}
		raw("</td>\n<td>", pageUntil(r.GeneratedAt, e.NextPoll), "</td>\n<td>")
		text(e.UpstreamStream)
		raw("</td>\n<td>", strconv.Itoa(e.SSESubscribers), "</td>\n<td>")
		if a := e.Analytics; a != nil {
			raw(strconv.FormatUint(a.Received, 10), " received<br>")
			if a.Forwarding {
				raw(strconv.FormatUint(a.Forwarded, 10), " forwarded<br>", strconv.FormatInt(a.PendingKeys, 10), " keys pending")
			} else {
				raw("counted only (no upstream)")
			}
			raw("<br>", strconv.FormatUint(a.Dropped, 10), " dropped")
		} else {
			raw("off")
		}
		if ev := e.Events; ev != nil {
			raw("<br>events: ", strconv.FormatInt(ev.Pending, 10), " pending, ", strconv.FormatUint(ev.Forwarded, 10), " forwarded, ", strconv.FormatUint(ev.Dropped, 10), " dropped")
		}
		raw("</td>\n</tr>\n")
	}
	raw("</tbody>\n</table>\n")

	if len(r.VerifyMismatches) > 0 {
		raw("<h2>Shadow verification: the last mismatches with Flagsmith</h2>\n<table>\n")
		raw("<thead><tr><th>When</th><th>Environment</th><th>Feature</th><th>Identity (hash)</th><th>Document version</th><th>Proxy answered</th><th>Flagsmith answered</th></tr></thead>\n<tbody>\n")
		for _, m := range r.VerifyMismatches {
			raw("<tr><td>", pageTime(m.At), "</td><td><code>")
			text(m.Environment)
			raw("</code></td><td>")
			text(m.Feature)
			raw("</td><td><code>")
			text(m.Identity)
			raw("</code></td><td>")
			text(m.DocumentVersion)
			raw("</td><td>")
			text(answerText(m.Proxy))
			raw("</td><td>")
			text(answerText(m.Upstream))
			raw("</td></tr>\n")
		}
		raw("</tbody>\n</table>\n")
	}
	raw("</body>\n</html>\n")
	return []byte(b.String())
}

// pageTime, pageTimeOf, pageUntil and pageAge are the page's times, all
// our own text.
func pageTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func pageTimeOf(t *time.Time) string {
	if t == nil {
		return "—"
	}
	return pageTime(*t)
}

func pageUntil(now time.Time, t *time.Time) string {
	if t == nil {
		return "—"
	}
	if d := t.Sub(now); d > 0 {
		return "in " + roughDuration(d)
	}
	return "due"
}

func pageAge(seconds *float64) string {
	if seconds == nil {
		return "—"
	}
	return roughDuration(time.Duration(*seconds * float64(time.Second)))
}

// answerText is a flag answer of a mismatch in words; its value and variant
// are the upstream's JSON, escaped by the caller.
func answerText(a *flagAnswer) string {
	if a == nil {
		return "no such flag"
	}
	text := fmt.Sprintf("enabled %t, value %s", a.Enabled, a.Value)
	if len(a.Variant) > 0 && string(a.Variant) != "null" {
		text += ", variant " + string(a.Variant)
	}
	return text
}

// roughDuration is d to a person's precision: seconds under a minute,
// then minutes, hours, days.
func roughDuration(d time.Duration) string {
	switch d = max(d, 0); {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

const statusPageStyle = `body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;color:#1b1f24;background:#fff}
h1{font-size:1.4em;margin:0 0 .4em}h2{font-size:1.1em;margin:1.5em 0 0}
.summary{font-size:1.1em;font-weight:600;padding:.5em .8em;border-radius:4px;display:inline-block}
.summary.ok{background:#dafbe1;color:#116329}.summary.bad{background:#ffebe9;color:#a40e26}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;margin:1em 0}
dl.facts dt{color:#57606a}dl.facts dd{margin:0}
table{border-collapse:collapse;width:100%;margin-top:1em}
th,td{border:1px solid #d0d7de;padding:.4em .5em;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
tr.stale td,tr.error td{background:#fff8f7}
.mark{font-weight:700;padding:.1em .5em;border-radius:3px;white-space:nowrap}
.mark.ok{background:#1a7f37;color:#fff}.mark.stale{background:#bf8700;color:#fff}.mark.error{background:#cf222e;color:#fff}
.err{color:#a40e26}.muted{color:#57606a}code{font-size:.95em}
`
