package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Page ids as an API may choose them: each needs escaping in a URL.
const (
	pageID2 = "identity_override:2:a/b+c=d e"
	pageID3 = "page 3/of=3+more"
)

// pagedDocument is environment A's document in three pages with the
// environment default banner; page N overrides it for pN-user only, with
// "one", "two" or "three" and suffix.
func pagedDocument(banner, suffix string) (first []byte, later []upstreamPage) {
	first = testDocument(clientKeyA, pollerUpdatedAt, banner, withOverride("p1-user", "one"+suffix))
	return first, []upstreamPage{
		overridesPage(pageID2, "p2-user", "two"+suffix),
		overridesPage(pageID3, "p3-user", "three"+suffix),
	}
}

// withOverride adds an identity override of banner for identifier.
func withOverride(identifier, banner string) docEdit {
	return func(doc map[string]any) {
		doc["identity_overrides"] = append(doc["identity_overrides"].([]any), pagesOverride(identifier, banner))
	}
}

// pagesOverride is an identity override of banner, shaped as Flagsmith
// sends it.
func pagesOverride(identifier, banner string) map[string]any {
	return map[string]any{
		"identifier": identifier,
		"identity_features": []any{map[string]any{
			"feature": map[string]any{"id": 1, "name": "banner", "type": "STANDARD"},
			"enabled": true, "django_id": 90, "featurestate_uuid": "5b1a3c1e-0000-4000-8000-000000000090",
			"feature_state_value": banner, "multivariate_feature_state_values": []any{},
		}},
	}
}

// overridesPage is a later page that overrides banner for identifier.
func overridesPage(id, identifier, banner string) upstreamPage {
	body, err := json.Marshal(map[string]any{
		"api_key":            clientKeyA,
		"identity_overrides": []any{pagesOverride(identifier, banner)},
	})
	if err != nil {
		panic(err)
	}
	return upstreamPage{id: id, body: body}
}

// identityBanner is the banner POST /api/v1/identities/ answers identifier.
func identityBanner(t testing.TB, s *testServer, identifier string) string {
	t.Helper()
	rec := callHandler(t, s.handler(), http.MethodPost, "/api/v1/identities/", withKey(clientKeyA), `{"identifier": "`+identifier+`"}`)
	if rec.Code != http.StatusOK {
		t.Fatalf("POST /api/v1/identities/ %q = %d %s; want 200", identifier, rec.Code, rec.Body)
	}
	var body struct {
		Flags []apiFlag `json:"flags"`
	}
	mustUnmarshal(t, rec.Body.Bytes(), &body)
	var banner string
	mustUnmarshal(t, flagsByName(body.Flags)["banner"].Value, &banner)
	return banner
}

// documentOverrides is the identifiers of a document's identity overrides.
func documentOverrides(t testing.TB, doc []byte) []string {
	t.Helper()
	var fields struct {
		IdentityOverrides []struct {
			Identifier string `json:"identifier"`
		} `json:"identity_overrides"`
	}
	mustUnmarshal(t, doc, &fields)
	var ids []string
	for _, o := range fields.IdentityOverrides {
		ids = append(ids, o.Identifier)
	}
	return ids
}

// pagesWantBanners fails unless each identity is answered its banner
// through POST /api/v1/identities/.
func pagesWantBanners(t testing.TB, s *testServer, want map[string]string) {
	t.Helper()
	for identifier, banner := range want {
		if got := identityBanner(t, s, identifier); got != banner {
			t.Errorf("POST /api/v1/identities/ %q: banner = %q; want %q", identifier, got, banner)
		}
	}
}

// TestPagesMerged: every page of a paginated document is fetched with the
// server key, page ids decoded as the Link gives them, and the overrides
// of every page evaluate; the proxy's environment-document, the cache file
// and a proxy polling this one hold the merged document; /metrics shows the
// pages.
func TestPagesMerged(t *testing.T) {
	first, later := pagedDocument("blue", "")
	up := newUpstream(t)
	up.setPages(serverKeyA, first, later...)
	dir := t.TempDir()
	s := newTestServer(t, withUpstream(up), withPairs(pairA), func(c *Config) { c.CacheDir = dir })
	env := s.environments()[0]
	pollerMustPoll(t, s, env, pollClient(t))

	pagesWantBanners(t, s, map[string]string{"p1-user": "one", "p2-user": "two", "p3-user": "three", "nobody": "blue"})
	var pages []string
	for _, r := range up.recorded() {
		pages = append(pages, r.page)
		if got := r.header.Get("X-Environment-Key"); got != serverKeyA {
			t.Errorf("request for page %q: X-Environment-Key = %q; want the server key", r.page, got)
		}
	}
	if diff := cmp.Diff([]string{"", pageID2, pageID3}, pages); diff != "" {
		t.Errorf("page_ids requested (-want +got):\n%s", diff)
	}

	s.listen(t, nil)
	code, _, served := s.do(t, http.MethodGet, "/api/v1/environment-document/", http.Header{"X-Environment-Key": {serverKeyA}})
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/environment-document/ = %d; want 200", code)
	}
	if got, want := documentOverrides(t, served), []string{"p1-user", "p2-user", "p3-user"}; !slices.Equal(got, want) {
		t.Errorf("served document's identity_overrides name %q; want %q", got, want)
	}
	// Apart from the overrides, the served document is page 1.
	var gotRest, wantRest map[string]any
	mustUnmarshal(t, served, &gotRest)
	mustUnmarshal(t, first, &wantRest)
	delete(gotRest, "identity_overrides")
	delete(wantRest, "identity_overrides")
	if diff := cmp.Diff(wantRest, gotRest); diff != "" {
		t.Errorf("served document apart from identity_overrides (-page 1 +served):\n%s", diff)
	}
	cached, err := os.ReadFile(cachePath(dir, clientKeyA))
	if err != nil {
		t.Fatal(err)
	}
	if string(cached) != string(served) {
		t.Errorf("cache file = %s; want the merged document served %s", cached, served)
	}

	// A proxy whose upstream is this one sees every override in one page.
	downstream := newTestServer(t, withPairs(pairA), func(c *Config) { c.APIURL = s.url + "/api/v1" })
	pollerMustPoll(t, downstream, downstream.environments()[0], pollClient(t))
	pagesWantBanners(t, downstream, map[string]string{"p3-user": "three"})

	if got := env.documentPages.Load(); got != 3 {
		t.Errorf("documentPages = %d; want 3", got)
	}
	metrics := string(s.exposition())
	for _, line := range []string{
		`edge_proxy_document_pages{environment="` + clientKeyA + `"} 3`,
		`edge_proxy_document_pages_fetched_total{environment="` + clientKeyA + `"} 3`,
	} {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", line, metrics)
		}
	}
	s.logs.mustHave(t, logRecord{level: "INFO", msg: "environment updated", env: clientKeyA})
	s.logs.noServerKeys(t)
}

// TestPagesWholeOrNothing: a poll whose later page fails publishes nothing:
// the previous document (flags, overrides, cache file) stays whole, the
// poll counts as failed, and the next good poll brings the new document.
func TestPagesWholeOrNothing(t *testing.T) {
	tests := []struct {
		name    string
		fault   fault // on the polls of the new document
		later   func([]upstreamPage) []upstreamPage
		pages   int     // max_document_pages for the new document, when not the default
		timeout float64 // api_poll_timeout_seconds for the new document, when not the default
		wantErr string
		wantIs  error
	}{
		{
			name: "page 3 answers 503", wantErr: "page 3: upstream status 503",
			fault: pagesFaultOn(pageID3, failWith(http.StatusServiceUnavailable)),
		},
		{
			name: "page 2 times out", timeout: 0.2, wantErr: "page 2", wantIs: context.DeadlineExceeded,
			fault: pagesFaultOn(pageID2, hang),
		},
		{
			name: "page 3 is not JSON", wantErr: "page 3: parse",
			fault: pagesFaultOn(pageID3, answerWith([]byte("<html>oops</html>"))),
		},
		{
			name: "page 2's identity_overrides is not an array", wantErr: "not an array",
			fault: pagesFaultOn(pageID2, answerWith([]byte(`{"identity_overrides": {"identifier": "x"}}`))),
		},
		{
			name: "a next link without a page_id", wantErr: "no page_id",
			fault: pagesFaultOn(pageID2, func(w http.ResponseWriter, r *http.Request, n int) bool {
				w.Header().Set("Link", `</api/v1/environment-document/>; rel="next"`)
				return answerWith([]byte(`{}`))(w, r, n)
			}),
		},
		{
			name: "page 3 links to itself", wantErr: "again", wantIs: errPageLoop,
			later: func(p []upstreamPage) []upstreamPage { p[1].next = pageID3; return p },
		},
		{
			name: "page 3 links back to page 2", wantErr: "again", wantIs: errPageLoop,
			later: func(p []upstreamPage) []upstreamPage { p[1].next = pageID2; return p },
		},
		{
			name: "more pages than max_document_pages", pages: 2, wantErr: "max_document_pages", wantIs: errTooManyPages,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t)
			first, later := pagedDocument("blue", "")
			up.setPages(serverKeyA, first, later...)
			dir := t.TempDir()
			s := newTestServer(t, withUpstream(up), withPairs(pairA), func(c *Config) { c.CacheDir = dir })
			client, env := pollClient(t), s.environments()[0]
			pollerMustPoll(t, s, env, client)
			held := env.snap.Load()
			cached, err := os.ReadFile(cachePath(dir, clientKeyA))
			if err != nil {
				t.Fatal(err)
			}
			old := map[string]string{"p1-user": "one", "p2-user": "two", "p3-user": "three", "nobody": "blue"}

			// The new document, whose later pages fail.
			first, later = pagedDocument("green", "-new")
			first = buildDocument(first, withUpdatedAt("2026-11-21T08:30:15Z"))
			if tt.later != nil {
				later = tt.later(later)
			}
			up.setPages(serverKeyA, first, later...)
			up.setFault(tt.fault)
			if tt.pages != 0 {
				s.config().MaxDocumentPages = tt.pages
			}
			if tt.timeout != 0 {
				s.config().PollTimeout = tt.timeout
			}
			err = s.pollNow(context.Background(), env, client)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("poll of the new document = %v; want an error containing %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("poll of the new document = %v; want errors.Is %v", err, tt.wantIs)
			}
			if env.snap.Load() != held {
				t.Error("the failed poll replaced the held snapshot; want the previous document kept whole")
			}
			pagesWantBanners(t, s, old)
			if now, _ := os.ReadFile(cachePath(dir, clientKeyA)); string(now) != string(cached) {
				t.Errorf("cache file after the failed poll = %s; want the previous document %s", now, cached)
			}
			if m := string(s.exposition()); !strings.Contains(m, `edge_proxy_polls_total{environment="`+clientKeyA+`",result="error"} 1`) {
				t.Errorf("/metrics does not count the failed poll:\n%s", m)
			}

			// The upstream recovers: the next poll brings the whole new document.
			up.setPages(serverKeyA, first, pagedLater("-new")...)
			up.setFault(nil)
			s.config().MaxDocumentPages, s.config().PollTimeout = defaultMaxDocumentPages, 30
			pollerMustPoll(t, s, env, client)
			pagesWantBanners(t, s, map[string]string{"p1-user": "one-new", "p2-user": "two-new", "p3-user": "three-new", "nobody": "green"})
			s.logs.noServerKeys(t)
		})
	}
}

// pagedLater is the later pages of pagedDocument.
func pagedLater(suffix string) []upstreamPage {
	_, later := pagedDocument("", suffix)
	return later
}

// pagesFaultOn applies f to the requests for the page pageID only.
func pagesFaultOn(pageID string, f fault) fault {
	return func(w http.ResponseWriter, r *http.Request, n int) bool {
		return r.URL.Query().Get("page_id") == pageID && f(w, r, n)
	}
}

// TestPagesConditional: conditions go with page 1 only; a 304 there keeps
// the document and asks for no other page; a full refresh fetches every
// page again.
func TestPagesConditional(t *testing.T) {
	up := newUpstream(t)
	first, later := pagedDocument("blue", "")
	up.setPages(serverKeyA, first, later...)
	s := newTestServer(t, withUpstream(up), withPairs(pairA))
	client, env := pollClient(t), s.environments()[0]

	pollerMustPoll(t, s, env, client)
	pollerMustPoll(t, s, env, client) // 304
	held := env.snap.Load()
	s.config().FullRefresh = 0        // due at once
	pollerMustPoll(t, s, env, client) // full refresh

	type request struct{ page, ifNoneMatch string }
	var got []request
	for _, r := range up.recorded() {
		got = append(got, request{r.page, r.header.Get("If-None-Match")})
	}
	etag := pollerETag(first)
	want := []request{
		{"", ""}, {pageID2, ""}, {pageID3, ""}, // the first poll
		{"", etag},                             // answered 304: no other page asked for
		{"", ""}, {pageID2, ""}, {pageID3, ""}, // the full refresh
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(request{})); diff != "" {
		t.Errorf("requests (page_id, If-None-Match) (-want +got):\n%s", diff)
	}
	for _, r := range up.recorded() {
		if r.page != "" && (r.header.Get("If-Modified-Since") != "" || r.header.Get("If-None-Match") != "") {
			t.Errorf("page %q requested with conditions %v; want none", r.page, r.header)
		}
	}
	if up.notModified() != 1 {
		t.Errorf("304s answered = %d; want 1", up.notModified())
	}
	if env.snap.Load() != held {
		t.Error("the full refresh of an unchanged document replaced the snapshot; want it kept")
	}
	pagesWantBanners(t, s, map[string]string{"p3-user": "three"})
}

// TestPagesLinkToAnotherHost: a Link that names another host is used for
// its page_id only. The page is fetched from api_url with the server key,
// and the host the Link names receives nothing (so never the key).
func TestPagesLinkToAnotherHost(t *testing.T) {
	other := newUpstream(t)
	up := newUpstream(t)
	first, later := pagedDocument("blue", "")
	up.setPages(serverKeyA, first, later...)
	up.setLinkBase(other.srv.URL)
	s := newTestServer(t, withUpstream(up), withPairs(pairA))
	pollerMustPoll(t, s, s.environments()[0], pollClient(t))

	pagesWantBanners(t, s, map[string]string{"p2-user": "two", "p3-user": "three"})
	if reqs := other.recorded(); len(reqs) != 0 {
		t.Errorf("the host the Link names received %d requests (first with headers %v); want none", len(reqs), reqs[0].header)
	}
	if n := len(up.recorded()); n != 3 {
		t.Errorf("api_url received %d requests; want the 3 pages", n)
	}
}

// TestPagesByteBound: the pages of one document are read through one
// bound together, not one each.
func TestPagesByteBound(t *testing.T) {
	first, later := pagedDocument("blue", "")
	up := newUpstream(t)
	up.setPages(serverKeyA, first, later...)
	s := newTestServer(t, withUpstream(up), withPairs(pairA))
	client := pollClient(t)
	header := http.Header{"Link": {"<" + documentPath + "?page_id=" + url.QueryEscape(pageID2) + `>; rel="next"`}}
	whole := len(first) + len(later[0].body) + len(later[1].body)

	tests := []struct {
		name    string
		limit   int
		wantErr string
	}{
		{"every page within the bound", whole, ""},
		{"page 3 crosses the bound", whole - 1, "page 3: the pages together: document larger than"},
		{"page 2 crosses the bound", len(first) + len(later[0].body) - 1, "page 2: the pages together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			merged, pages, err := newFetcher(client, s.config(), serverKeyA).laterPages(t.Context(), header, first, tt.limit)
			if tt.wantErr == "" {
				if err != nil || pages != 3 || len(merged) > tt.limit {
					t.Errorf("laterPages(limit %d) = %d bytes, %d pages, %v; want 3 pages within the limit", tt.limit, len(merged), pages, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errDocumentSize) {
				t.Errorf("laterPages(limit %d) = %v; want errDocumentSize, containing %q", tt.limit, err, tt.wantErr)
			}
		})
	}
}

// TestPagesLinkForms: the next page is the link whose rel is next, however
// the Link field spells it (RFC 8288); a Link without one ends the
// document.
func TestPagesLinkForms(t *testing.T) {
	q := url.QueryEscape(pageID2)
	tests := []struct {
		name, link string
		wantPages  []string
	}{
		{"quoted rel", `</api/v1/environment-document/?page_id=` + q + `>; rel="next"`, []string{"", pageID2, pageID3}},
		{"bare rel, no space", `</api/v1/environment-document/?page_id=` + q + `>;rel=next`, []string{"", pageID2, pageID3}},
		{"rel among others, in capitals", `</x?page_id=` + q + `>; REL="prefetch Next"`, []string{"", pageID2, pageID3}},
		{"next after a prev link", `</x?page_id=p,0>; rel="prev", <?page_id=` + q + `&other=1>; rel="next"`, []string{"", pageID2, pageID3}},
		{"id escaped with %20", `</x?page_id=` + strings.ReplaceAll(url.PathEscape(pageID2), "+", "%2B") + `>; rel="next"`, []string{"", pageID2, pageID3}},
		{"only a prev link", `</x?page_id=` + q + `>; rel="prev"`, []string{""}},
		{"no rel", `</x?page_id=` + q + `>`, []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, later := pagedDocument("blue", "")
			up := newUpstream(t)
			up.setPages(serverKeyA, first, later...)
			up.setFault(func(w http.ResponseWriter, r *http.Request, n int) bool {
				if r.URL.Query().Has("page_id") {
					return false
				}
				w.Header().Set("Link", tt.link)
				return answerWith(first)(w, r, n)
			})
			s := newTestServer(t, withUpstream(up), withPairs(pairA))
			pollerMustPoll(t, s, s.environments()[0], pollClient(t))
			var pages []string
			for _, r := range up.recorded() {
				pages = append(pages, r.page)
			}
			if diff := cmp.Diff(tt.wantPages, pages); diff != "" {
				t.Errorf("Link %s: page_ids requested (-want +got):\n%s", tt.link, diff)
			}
		})
	}
}

// TestPagesMergeShapes: the overrides of every page end up in one array
// whatever page 1 holds, and a page without overrides adds none.
func TestPagesMergeShapes(t *testing.T) {
	without := func(doc map[string]any) { delete(doc, "identity_overrides") }
	null := func(doc map[string]any) { doc["identity_overrides"] = nil }
	emptyPage := upstreamPage{id: pageID2, body: []byte(` { "identity_overrides" : [ ] } `)}
	noKeyPage := upstreamPage{id: pageID2, body: []byte(`{"api_key": "` + clientKeyA + `"}`)}
	tests := []struct {
		name  string
		first []byte
		later []upstreamPage
		want  []string
	}{
		{"page 1 has overrides", testDocument(clientKeyA, pollerUpdatedAt, "blue", withOverride("p1-user", "one")),
			[]upstreamPage{overridesPage(pageID2, "p2-user", "two")}, []string{"p1-user", "p2-user"}},
		{"page 1 has an empty array", testDocument(clientKeyA, pollerUpdatedAt, "blue"),
			[]upstreamPage{overridesPage(pageID2, "p2-user", "two")}, []string{"p2-user"}},
		{"page 1 has no identity_overrides", testDocument(clientKeyA, pollerUpdatedAt, "blue", without),
			[]upstreamPage{overridesPage(pageID2, "p2-user", "two")}, []string{"p2-user"}},
		{"page 1's identity_overrides is null", testDocument(clientKeyA, pollerUpdatedAt, "blue", null),
			[]upstreamPage{overridesPage(pageID2, "p2-user", "two")}, []string{"p2-user"}},
		{"a later page with an empty array", testDocument(clientKeyA, pollerUpdatedAt, "blue", withOverride("p1-user", "one")),
			[]upstreamPage{emptyPage, overridesPage(pageID3, "p3-user", "three")}, []string{"p1-user", "p3-user"}},
		{"a later page without identity_overrides", testDocument(clientKeyA, pollerUpdatedAt, "blue", without),
			[]upstreamPage{noKeyPage, overridesPage(pageID3, "p3-user", "three")}, []string{"p3-user"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t)
			up.setPages(serverKeyA, tt.first, tt.later...)
			s := newTestServer(t, withUpstream(up), withPairs(pairA))
			pollerMustPoll(t, s, s.environments()[0], pollClient(t))
			served := s.env(t, clientKeyA).snap.Load().document.body
			if !json.Valid(served) {
				t.Fatalf("merged document is not JSON: %s", served)
			}
			if diff := cmp.Diff(tt.want, documentOverrides(t, served)); diff != "" {
				t.Errorf("merged identity_overrides (-want +got):\n%s", diff)
			}
			for _, id := range tt.want {
				if got := identityBanner(t, s, id); got == "blue" {
					t.Errorf("identity %q is answered the default banner; want its override", id)
				}
			}
		})
	}
}

// TestPagesBackoff: a failing later page is a failed poll of the loop:
// logged, retried with the usual backoff, and the document arrives whole
// once the page recovers.
func TestPagesBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := newUpstreamInMemory(t)
		first, later := pagedDocument("blue", "")
		up.setPages(serverKeyA, first, later...)
		failures := 0
		up.setFault(pagesFaultOn(pageID3, func(w http.ResponseWriter, r *http.Request, n int) bool {
			if failures++; failures > 2 {
				return false
			}
			w.WriteHeader(http.StatusBadGateway)
			return true
		}))
		start := time.Now()
		s := newTestServer(t, withPairs(pairA), func(c *Config) { c.PollFrequency = 10 })
		s.poll(t, &http.Client{Transport: up})
		time.Sleep(15 * time.Second)
		synctest.Wait()

		var firstPages []time.Duration
		for _, r := range up.recorded() {
			if r.page == "" {
				firstPages = append(firstPages, r.at.Sub(start))
			}
		}
		// Fails at 0 and after about 1 s, succeeds after about 2 s more,
		// then polls at the frequency.
		if len(firstPages) != 4 {
			t.Fatalf("page 1 requested at %v; want 4 polls in 15 s", firstPages)
		}
		gaps := []time.Duration{firstPages[1] - firstPages[0], firstPages[2] - firstPages[1], firstPages[3] - firstPages[2]}
		doubled := (gaps[1] - 2*gaps[0]).Abs() <= time.Microsecond // float rounding of the jitter
		if gaps[0] < 800*time.Millisecond || gaps[0] > time.Second || !doubled || gaps[2] != 10*time.Second {
			t.Errorf("gaps between polls %v; want the first backoff (0.8-1 s), double it, then the poll frequency 10 s", gaps)
		}
		s.logs.mustHave(t, logRecord{level: "WARN", msg: "poll failed", env: clientKeyA, err: "page 3: upstream status 502"})
		pagesWantBanners(t, s, map[string]string{"p3-user": "three"})
	})
}

// TestPagesRedirect: a later page's redirect is followed as page 1's is,
// and the server key goes to no other host.
func TestPagesRedirect(t *testing.T) {
	for _, tt := range []struct {
		name      string
		otherHost bool
	}{{"to the same host", false}, {"to another host", true}} {
		t.Run(tt.name, func(t *testing.T) {
			otherHost := tt.otherHost
			first, later := pagedDocument("blue", "")
			up, other := newUpstream(t), newUpstream(t)
			up.setPages(serverKeyA, first, later...)
			other.setPages(serverKeyA, first, later...)
			target := up
			if otherHost {
				target = other
			}
			up.setFault(pagesMoved(pageID3, target.srv.URL))
			other.setFault(pagesMoved(pageID3, target.srv.URL))
			s := newTestServer(t, withUpstream(up), withPairs(pairA))
			err := s.pollNow(t.Context(), s.environments()[0], pollClient(t))
			if !otherHost {
				if err != nil {
					t.Fatalf("poll with page 3 redirected on its host = %v; want nil", err)
				}
				pagesWantBanners(t, s, map[string]string{"p3-user": "three"})
				if got := up.last(t).Get("X-Environment-Key"); got != serverKeyA {
					t.Errorf("redirected page 3: X-Environment-Key = %q; want the server key", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "page 3: upstream status 401") {
				t.Errorf("poll with page 3 redirected to another host = %v; want page 3 refused there, sent without the key", err)
			}
			if got := other.last(t).Get("X-Environment-Key"); got != "" {
				t.Errorf("X-Environment-Key sent to another host = %q; want none", got)
			}
			pollerWantNoFlags(t, s, clientKeyA)
		})
	}
}

// pagesMoved redirects the request for page pageID to base+"/moved", and
// serves what is asked for under /moved as if it were not.
func pagesMoved(pageID, base string) fault {
	return func(w http.ResponseWriter, r *http.Request, n int) bool {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/moved"); ok {
			r.URL.Path = rest
			return false
		}
		if r.URL.Query().Get("page_id") == pageID {
			http.Redirect(w, r, base+"/moved"+r.URL.RequestURI(), http.StatusFound)
			return true
		}
		return false
	}
}

// FuzzMergeOverrides compares the merge, which splices bytes, with
// encoding/json: the merged document decodes as page 1 with the later
// pages' overrides appended to its own, or the merge refuses page 1 when
// encoding/json would.
func FuzzMergeOverrides(f *testing.F) {
	f.Add([]byte(smallDocument), []byte(`[{"identifier": "a"}]`), []byte(`[]`))
	f.Add([]byte(`{"a": "}\"{", "identity_overrides" : null , "b": [1, {"c": "]"}]}`), []byte(`[1]`), []byte(`[2, 3]`))
	f.Add([]byte(` { } `), []byte(`[{"x": "\u005d"}]`), []byte(`[ ]`))
	f.Add([]byte(`{"identity_overrides": [0], "identity_overrides": [9]}`), []byte(`[1]`), []byte(`[]`))
	f.Add([]byte(`{"identity_overrides": {}}`), []byte(`[1]`), []byte(`[]`))
	f.Add([]byte(`null`), []byte(`[1]`), []byte(`[]`))
	f.Fuzz(func(t *testing.T, first, page2, page3 []byte) {
		var later [][]byte
		var want []any
		for _, p := range [][]byte{page2, page3} {
			var elems []any
			if json.Unmarshal(p, &elems) != nil || !bytes.HasPrefix(bytes.TrimSpace(p), []byte("[")) {
				return // later pages' arrays come from pageOverrides
			}
			later = append(later, bytes.TrimSpace(p))
			want = append(want, elems...)
		}
		var page1 map[string]any
		page1Err := json.Unmarshal(first, &page1)
		own, isArray := page1["identity_overrides"].([]any)
		switch {
		case page1Err == nil && page1 == nil:
			page1Err = errors.New("null is not an object")
		case page1Err == nil && page1["identity_overrides"] != nil && !isArray:
			page1Err = errors.New("identity_overrides is not an array")
		}
		merged, err := mergeOverrides(first, later)
		if page1Err != nil {
			if err == nil {
				t.Fatalf("mergeOverrides(%q) = %q; want an error, as encoding/json gives %v", first, merged, page1Err)
			}
			return
		}
		if err != nil {
			t.Fatalf("mergeOverrides(%q) = %v; want a document", first, err)
		}
		var got map[string]any
		if err := json.Unmarshal(merged, &got); err != nil {
			t.Fatalf("mergeOverrides(%q, %q) = %q, not JSON: %v", first, later, merged, err)
		}
		page1["identity_overrides"] = append(own, want...)
		if len(page1["identity_overrides"].([]any)) == 0 {
			page1["identity_overrides"] = []any{}
		}
		if diff := cmp.Diff(page1, got); diff != "" {
			t.Fatalf("mergeOverrides(%q, %q) = %q (-want +got):\n%s", first, later, merged, diff)
		}
	})
}

// BenchmarkPagesFetch fetches and merges the later pages of a document
// of ten pages of 5,000 identity overrides each, from an in-memory
// upstream: the cost pagination adds to a poll before compiling. Bytes are
// those of all ten pages; allocations include the in-memory transport's
// copies of each body.
func BenchmarkPagesFetch(b *testing.B) {
	overrides := func(page int) []any {
		out := make([]any, 5000)
		for i := range out {
			out[i] = pagesOverride(fmt.Sprintf("user-%d-%06d", page, i), fmt.Sprintf("v%d", i%7))
		}
		return out
	}
	first := testDocument(clientKeyA, pollerUpdatedAt, "blue", func(doc map[string]any) { doc["identity_overrides"] = overrides(0) })
	later := make([]upstreamPage, 9)
	for i := range later {
		body, err := json.Marshal(map[string]any{"api_key": clientKeyA, "identity_overrides": overrides(i + 1)})
		if err != nil {
			b.Fatal(err)
		}
		later[i] = upstreamPage{id: fmt.Sprintf("identity_override:%d:a/b+c", i+1), body: body}
	}
	up := newUpstreamInMemory(b)
	up.setPages(serverKeyA, first, later...)
	total := len(first)
	for _, p := range later {
		total += len(p.body)
	}
	b.SetBytes(int64(total))
	s := newTestServer(b, withPairs(pairA))
	header := http.Header{"Link": {"<" + documentPath + "?page_id=" + url.QueryEscape(later[0].id) + `>; rel="next"`}}
	client := &http.Client{Transport: up}
	b.ReportAllocs()
	for b.Loop() {
		if _, pages, err := newFetcher(client, s.config(), serverKeyA).laterPages(b.Context(), header, first, maxDocumentBytes); err != nil || pages != 10 {
			b.Fatalf("laterPages = %d pages, %v; want 10", pages, err)
		}
	}
}
