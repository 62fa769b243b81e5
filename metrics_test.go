package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRouteName(t *testing.T) {
	tests := []struct{ pattern, want string }{
		{"GET /api/v1/flags/{$}", "/api/v1/flags"},
		{"GET /api/v1/flags", "/api/v1/flags"},
		{"POST /api/v1/identities/{$}", "/api/v1/identities"},
		{"GET /sse/environments/{client_key}/stream", "/sse/environments/stream"},
		{"GET /sse/environments/{client_key}/stream/{$}", "/sse/environments/stream"},
		{"POST /ofrep/v1/evaluate/flags/{key...}", "/ofrep/v1/evaluate/flags/{key...}"},
		{"POST /ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags"},
		{"GET /metrics", "/metrics"},
		{"/", "unrouted"},
		{"", "unrouted"},
	}
	for _, tc := range tests {
		if got := routeName(tc.pattern); got != tc.want {
			t.Errorf("routeName(%q) = %q; want %q", tc.pattern, got, tc.want)
		}
	}
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
	s.stats.observePoll(key, pollResult{outcome: "error"})
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

var (
	promMetricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	promLabelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)
