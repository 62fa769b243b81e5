package main

import (
	"bytes"
	"cmp"
	"fmt"
	"html/template"
	"net/http"
	"path/filepath"
	"strings"
	"time"
)

// statusPageRefreshSeconds is how often the status page reloads itself: as
// often as a default poll, so what a person watches is never far behind.
const statusPageRefreshSeconds = 10

// writeStatusPage answers a browser with the status as one self-contained
// page: every figure is in the HTML, the style is inline, and nothing is
// fetched from elsewhere (no script, style sheet, font or image), so it
// works on an air-gapped gateway and under the strictest CSP. html/template
// escapes every value (document names are the document author's text).
func (s *server) writeStatusPage(w http.ResponseWriter, report statusReport) {
	var buf bytes.Buffer
	if err := statusPage.Execute(&buf, statusPageData{statusReport: report, Refresh: statusPageRefreshSeconds}); err != nil {
		writeError(w, http.StatusInternalServerError, "error", "could not render the status page")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// The page needs nothing from anywhere: say so, so that a browser
	// refuses any resource even if a value ever slipped through escaping.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

type statusPageData struct {
	statusReport
	Refresh int
}

// NotOK is the number of environments that are not ok.
func (d statusPageData) NotOK() int {
	n := 0
	for _, e := range d.Environments {
		if e.Stale {
			n++
		}
	}
	return n
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"whenp": func(t *time.Time) string {
		if t == nil {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"since": func(now time.Time, t time.Time) string { return roughDuration(now.Sub(t)) + " ago" },
	"until": func(now time.Time, t *time.Time) string {
		if t == nil {
			return "—"
		}
		if d := t.Sub(now); d > 0 {
			return "in " + roughDuration(d)
		}
		return "due"
	},
	"age": func(seconds *float64) string {
		if seconds == nil {
			return "—"
		}
		return roughDuration(time.Duration(*seconds * float64(time.Second)))
	},
	"upper": strings.ToUpper,
	"base":  filepath.Base,
	"answer": func(a *flagAnswer) string {
		if a == nil {
			return "no such flag"
		}
		text := fmt.Sprintf("enabled %t, value %s", a.Enabled, a.Value)
		if len(a.Variant) > 0 && string(a.Variant) != "null" {
			text += ", variant " + string(a.Variant)
		}
		return text
	},
	"join":   func(list []string) string { return strings.Join(list, ", ") },
	"orElse": func(s, alt string) string { return cmp.Or(s, alt) },
}).Parse(statusPageHTML))

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

const statusPageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{if .Stale}}[{{.NotOK}} not ok] {{end}}Edge proxy status</title>
<style>
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;color:#1b1f24;background:#fff}
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
</style>
</head>
<body>
<h1>Edge proxy status</h1>
{{if .Stale}}<p class="summary bad">{{.NotOK}} of {{len .Environments}} environments not ok</p>
{{else}}<p class="summary ok">All {{len .Environments}} environments ok</p>
{{end}}<dl class="facts">
<dt>Version</dt><dd>{{.Version}}</dd>
<dt>Started</dt><dd>{{when .StartedAt}} ({{since .GeneratedAt .StartedAt}})</dd>
<dt>Configuration</dt><dd>generation {{.Config.Generation}}, loaded {{when .Config.LoadedAt}}</dd>
<dt>TLS certificate</dt><dd>{{with .TLS}}expires {{when .NotAfter}} ({{join .DNSNames}}){{else}}not serving HTTPS{{end}}</dd>
<dt>Realtime streams</dt><dd>{{if .SSE.Enabled}}{{.SSE.Subscribers}} subscribers{{else}}disabled{{end}}</dd>
<dt>Shown at</dt><dd>{{when .GeneratedAt}}; this page reloads every {{.Refresh}} s</dd>
</dl>
<table>
<thead><tr><th>Environment</th><th>State</th><th>Document</th><th>Last poll</th><th>Next poll</th><th>Upstream stream</th><th>SDK streams</th><th>Analytics</th></tr></thead>
<tbody>
{{range .Environments}}<tr class="{{.State}}" data-state="{{.State}}">
<td><strong>{{orElse .Name "(no document yet)"}}</strong><br><span class="muted">client key</span> <code>{{.ClientKey}}</code><br><span class="muted">server keys</span> <code>{{join .ServerKeys}}</code></td>
<td><span class="mark {{.State}}">{{upper .State}}</span>{{if eq .State "stale"}}<div class="err">serving the last good document: the last poll failed</div>{{else if .Error}}<div class="err">{{.Error}}</div>{{end}}</td>
<td>{{if .Source}}from {{.Source}}{{if .DocumentPath}} <code title="{{.DocumentPath}}">{{base .DocumentPath}}</code>{{end}}<br>updated_at {{orElse .UpdatedAt "—"}}<br>content version {{orElse .ContentVersion "—"}} (age {{age .ContentAgeSeconds}})<br>published {{whenp .PublishedAt}}{{if .PagesFetched}}<br>pages fetched {{.PagesFetched}}{{end}}{{else}}—{{end}}</td>
<td>{{with .LastPoll}}{{.Outcome}}{{if .HTTPStatus}} (HTTP {{.HTTPStatus}}){{end}}<br>{{when .At}}<br>{{printf "%.1f" .LatencyMS}} ms{{if .Error}}<div class="err">{{.Error}}</div>{{end}}{{else}}none yet{{end}}</td>
<td>{{until $.GeneratedAt .NextPoll}}</td>
<td>{{.UpstreamStream}}</td>
<td>{{.SSESubscribers}}</td>
<td>{{with .Analytics}}{{.Received}} received<br>{{if .Forwarding}}{{.Forwarded}} forwarded<br>{{.PendingKeys}} keys pending{{else}}counted only (no upstream){{end}}<br>{{.Dropped}} dropped{{else}}off{{end}}{{with .Events}}<br>events: {{.Pending}} pending, {{.Forwarded}} forwarded, {{.Dropped}} dropped{{end}}</td>
</tr>
{{end}}</tbody>
</table>
{{with .VerifyMismatches}}<h2>Shadow verification: the last mismatches with Flagsmith</h2>
<table>
<thead><tr><th>When</th><th>Environment</th><th>Feature</th><th>Identity (hash)</th><th>Document version</th><th>Proxy answered</th><th>Flagsmith answered</th></tr></thead>
<tbody>
{{range .}}<tr><td>{{when .At}}</td><td><code>{{.Environment}}</code></td><td>{{.Feature}}</td><td><code>{{.Identity}}</code></td><td>{{.DocumentVersion}}</td><td>{{answer .Proxy}}</td><td>{{answer .Upstream}}</td></tr>
{{end}}</tbody>
</table>
{{end}}</body>
</html>
`
