package main

// Paginated documents. As of 2026-12 Flagsmith's Edge API (the SaaS
// default) splits a large environment's document into pages: an answer
// that has a next page names it in a Link header,
//
//	Link: </api/v1/environment-document/?page_id=…>; rel="next"
//
// and each later page carries more identity_overrides; the first page is
// authoritative for everything else. The poller fetches every page and
// merges their identity overrides into the first page's body before
// compiling, so that everything downstream (the snapshot, cache_dir, this
// proxy's own environment-document endpoint) sees one whole document.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

var (
	errPageLoop     = errors.New("the upstream's pages link in a loop")
	errTooManyPages = errors.New("more pages than max_document_pages")
)

// fetcher fetches the document from the upstream with one server key,
// every page of it, counting what it reads for /metrics.
type fetcher struct {
	client    *http.Client
	apiURL    string
	timeout   time.Duration // of each page's request
	maxPages  int
	serverKey secret

	bytesRead int // document bytes read
	pagesRead int // pages read whole
}

func newFetcher(client *http.Client, cfg *Config, serverKey secret) *fetcher {
	return &fetcher{client: client, apiURL: cfg.APIURL, timeout: cfg.pollTimeout(),
		maxPages: cfg.MaxDocumentPages, serverKey: serverKey}
}

// conditions ask the upstream for the document only if it changed; the
// zero value asks for it whole.
type conditions struct {
	etag  string
	since time.Time
}

// fetchedDocument is a document as the upstream answered it: status and
// validators are page 1's, body every page's, merged (nil for a 304).
type fetchedDocument struct {
	status       int // 0 when no answer came
	body         []byte
	pages        int
	etag         string
	lastModified time.Time // zero when the upstream sent none
	received     time.Time // the upstream's Date, never later than our clock
}

// document fetches page 1 with cond, then, unless the upstream answered
// 304, every later page (laterPages), all read through maxDocumentBytes.
func (f *fetcher) document(ctx context.Context, cond conditions) (fetchedDocument, error) {
	resp, body, err := f.page(ctx, "", cond, maxDocumentBytes)
	var doc fetchedDocument
	if resp != nil {
		doc.status = resp.StatusCode
	}
	if err != nil || resp.StatusCode == http.StatusNotModified {
		return doc, err
	}
	doc.received = time.Now()
	if date, err := http.ParseTime(resp.Header.Get("Date")); err == nil && date.Before(doc.received) {
		doc.received = date
	}
	doc.etag = resp.Header.Get("ETag")
	if lm, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		doc.lastModified = lm
	}
	doc.body, doc.pages, err = f.laterPages(ctx, resp.Header, body, maxDocumentBytes)
	return doc, err
}

// page is one request for a page of the document (pageID "" asks for page
// 1), bounded by the poll timeout, with cond. Its body is read through
// limit; a 304 comes back with none. The answer's body is closed; its
// headers stay readable. An answer whose status is an error comes back
// with the error, for the status it records.
func (f *fetcher) page(ctx context.Context, pageID string, cond conditions, limit int) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pageURL(f.apiURL, pageID), nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("X-Environment-Key", string(f.serverKey))
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "flagsmith-edge-proxy/"+version)
	if cond.etag != "" {
		req.Header.Set("If-None-Match", cond.etag)
	}
	if !cond.since.IsZero() {
		req.Header.Set("If-Modified-Since", cond.since.UTC().Format(http.TimeFormat))
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("request: %w", maskURLError(err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified:
		return resp, nil, nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return resp, nil, fmt.Errorf("upstream status %d: %w", resp.StatusCode, errKeyRejected)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return resp, nil, fmt.Errorf("upstream status %d", resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	f.bytesRead += len(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("read body: %w", err)
	}
	if len(raw) > limit {
		return nil, nil, errDocumentSize
	}
	f.pagesRead++
	return resp, raw, nil
}

// laterPages follows the next-page links from page 1 (first, answered
// with header) and returns the whole document, first with the identity
// overrides of every page, and how many pages it was. All pages together
// are read through limit (maxDocumentBytes when polling), so a paginated
// document costs no more than an unpaginated one could. The merged
// document keeps to it too (cache_dir reads it back through it): it is
// smaller than its pages, as each later page adds at most its array's
// elements and a comma, and is itself an object holding that array.
//
// Later pages are fetched without conditions: a 304 on page 1 already
// ended the poll, and a changed page 1 means the rest is read whole.
// Nothing is returned unless every page arrived: a document is published
// whole or not at all.
func (f *fetcher) laterPages(ctx context.Context, header http.Header, first []byte, limit int) ([]byte, int, error) {
	next, ok, err := nextPageID(header)
	if err != nil {
		return nil, 1, fmt.Errorf("page 1: %w", err)
	}
	if !ok {
		return first, 1, nil
	}
	var arrays [][]byte // of the later pages
	remaining := limit - len(first)
	// Page ids are the upstream's to choose, up to a header's size each:
	// their digests bound what a long run of pages keeps.
	seen := map[[sha256.Size]byte]bool{}
	pages := 1
	for ok {
		if pages >= f.maxPages {
			return nil, pages, fmt.Errorf("page %d links to a next page: %w (%d)", pages, errTooManyPages, f.maxPages)
		}
		id := sha256.Sum256([]byte(next))
		if seen[id] {
			return nil, pages, fmt.Errorf("page %d links to page_id %q again: %w", pages, shortPageID(next), errPageLoop)
		}
		seen[id] = true
		pages++
		resp, body, err := f.page(ctx, next, conditions{}, remaining)
		if err != nil {
			if errors.Is(err, errDocumentSize) {
				err = fmt.Errorf("the pages together: %w", err)
			}
			return nil, pages, fmt.Errorf("page %d: %w", pages, err)
		}
		if resp.StatusCode == http.StatusNotModified {
			return nil, pages, fmt.Errorf("page %d: upstream answered 304 Not Modified to a request without conditions", pages)
		}
		remaining -= len(body)
		array, err := pageOverrides(body)
		if err != nil {
			return nil, pages, fmt.Errorf("page %d: %w", pages, err)
		}
		arrays = append(arrays, array)
		if next, ok, err = nextPageID(resp.Header); err != nil {
			return nil, pages, fmt.Errorf("page %d: %w", pages, err)
		}
	}
	merged, err := mergeOverrides(first, arrays)
	if err != nil {
		return nil, pages, fmt.Errorf("page 1: %w", err)
	}
	return merged, pages, nil
}

// pageURL is where a page is fetched: the configured API's
// environment-document endpoint with the page_id, as Flagsmith's Go SDK
// (v5.1, ExtractNextPage) asks for it. Only the page_id of the upstream's
// Link is used, never its scheme, host or path: a page is always fetched
// from api_url's host, so the server key never goes to a host that a Link
// names (Flagsmith's Node SDK resolves the Link against api_url's origin
// instead, which loses a path prefix in front of a self-hosted API).
func pageURL(apiURL, pageID string) string {
	u := apiURL + "/environment-document/"
	if pageID != "" {
		u += "?" + url.Values{"page_id": {pageID}}.Encode()
	}
	return u
}

// nextPageID reads the page_id of the link with rel="next" in the Link
// header fields of an answer; ok is false when there is none (the last
// page). A next link without a page_id is an error: following it would ask
// for page 1 again, and stopping would silently drop the rest.
func nextPageID(h http.Header) (id string, ok bool, err error) {
	for _, field := range h.Values("Link") {
		for _, link := range splitLinks(field) {
			target, params, found := strings.Cut(strings.TrimSpace(link), ">")
			if !found || !strings.HasPrefix(target, "<") || !relNext(params) {
				continue
			}
			target = target[1:]
			u, err := url.Parse(target)
			if err != nil {
				return "", false, fmt.Errorf("next page link %q: %w", shortPageID(target), err)
			}
			query, err := url.ParseQuery(u.RawQuery)
			if err != nil || query.Get("page_id") == "" {
				return "", false, fmt.Errorf("next page link %q has no page_id", shortPageID(target))
			}
			return query.Get("page_id"), true, nil
		}
	}
	return "", false, nil
}

// splitLinks splits a Link field into its links at the commas that are
// neither inside <…> nor inside a quoted parameter.
func splitLinks(field string) []string {
	var links []string
	inTarget, inQuote, from := false, false, 0
	for i := 0; i < len(field); i++ {
		switch c := field[i]; {
		case inQuote && c == '\\':
			i++
		case inQuote:
			inQuote = c != '"'
		case inTarget:
			inTarget = c != '>'
		case c == '<':
			inTarget = true
		case c == '"':
			inQuote = true
		case c == ',':
			links = append(links, field[from:i])
			from = i + 1
		}
	}
	return append(links, field[from:])
}

// relNext reports whether a link's parameters (";rel=next; …") give it the
// relation type next; rel may list several, case-insensitively (RFC 8288).
func relNext(params string) bool {
	for _, p := range strings.Split(params, ";") {
		name, value, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(name), "rel") {
			continue
		}
		for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(value), `"`)) {
			if strings.EqualFold(rel, "next") {
				return true
			}
		}
	}
	return false
}

// shortPageID bounds an upstream-chosen text for an error message.
func shortPageID(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// pageOverrides returns the identity_overrides array of a page, nil when it
// has none. The rest of a later page is ignored: page 1 is authoritative.
func pageOverrides(page []byte) ([]byte, error) {
	var fields struct {
		IdentityOverrides json.RawMessage `json:"identity_overrides"`
	}
	if err := json.Unmarshal(page, &fields); err != nil {
		return nil, fmt.Errorf("parse environment document page: %w", err)
	}
	switch array := bytes.TrimSpace(fields.IdentityOverrides); {
	case len(array) == 0 || string(array) == "null":
		return nil, nil
	case array[0] != '[':
		return nil, errors.New("environment document page: identity_overrides is not an array")
	default:
		return array, nil
	}
}

// mergeOverrides returns page 1 (first) with the elements of the later
// pages' identity_overrides arrays appended to its own, in page order. The
// other members of page 1 keep their bytes, and the result is built in one
// buffer of its final size: a large document is not copied twice.
func mergeOverrides(first []byte, arrays [][]byte) ([]byte, error) {
	if !json.Valid(first) {
		return nil, documentSyntaxError(first)
	}
	start, end, closing, err := topLevelMember(first, "identity_overrides")
	if err != nil {
		return nil, err
	}
	var own []byte
	if start >= 0 {
		switch own = bytes.TrimSpace(first[start:end]); {
		case string(own) == "null":
			own = nil
		case own[0] != '[':
			return nil, errors.New("environment document: identity_overrides is not an array")
		}
		arrays = append([][]byte{own}, arrays...)
	}
	// elements are the arrays' contents without their brackets.
	elements := make([][]byte, 0, len(arrays))
	size := len(first) + len(`,"identity_overrides":[]`)
	for _, a := range arrays {
		if a == nil { // a page without identity_overrides
			continue
		}
		if inner := bytes.TrimSpace(a[1 : len(a)-1]); len(inner) > 0 {
			elements = append(elements, inner)
			size += len(inner) + 1
		}
	}
	out := make([]byte, 0, size)
	if start >= 0 {
		out = append(out, first[:start]...)
	} else {
		// Page 1 has no identity_overrides: the member goes last.
		out = append(out, bytes.TrimRight(first[:closing], " \t\r\n")...)
		if out[len(out)-1] != '{' {
			out = append(out, ',')
		}
		out = append(out, `"identity_overrides":`...)
	}
	out = append(out, '[')
	for i, e := range elements {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, e...)
	}
	out = append(out, ']')
	if start >= 0 {
		return append(out, first[end:]...), nil
	}
	return append(out, first[closing:]...), nil
}

// topLevelMember finds the value of the member name of the JSON object raw:
// its offsets [start, end), or start -1 when it is absent; closing is the
// offset of the object's closing brace. Of a repeated name the last counts,
// as encoding/json reads it. raw must be valid JSON (json.Valid).
func topLevelMember(raw []byte, name string) (start, end, closing int, err error) {
	start, end = -1, -1
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return 0, 0, 0, errors.New("environment document: not a JSON object")
	}
	i = skipSpace(raw, i+1)
	for i < len(raw) && raw[i] != '}' {
		keyEnd := jsonValueEnd(raw, i)
		var key string
		if err := json.Unmarshal(raw[i:keyEnd], &key); err != nil {
			return 0, 0, 0, fmt.Errorf("environment document: %w", err)
		}
		i = skipSpace(raw, keyEnd)
		if i >= len(raw) || raw[i] != ':' {
			return 0, 0, 0, errors.New("environment document: malformed object")
		}
		i = skipSpace(raw, i+1)
		valueEnd := jsonValueEnd(raw, i)
		if key == name {
			start, end = i, valueEnd
		}
		i = skipSpace(raw, valueEnd)
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	if i >= len(raw) {
		return 0, 0, 0, errors.New("environment document: malformed object")
	}
	return start, end, i, nil
}

func skipSpace(raw []byte, i int) int {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r') {
		i++
	}
	return i
}

// jsonValueEnd returns the offset just past the JSON value that starts at
// i: a string, an object or array (nesting counted outside strings), or a
// literal or number.
func jsonValueEnd(raw []byte, i int) int {
	if i >= len(raw) {
		return i
	}
	switch raw[i] {
	case '"':
		for j := i + 1; j < len(raw); j++ {
			switch raw[j] {
			case '\\':
				j++
			case '"':
				return j + 1
			}
		}
		return len(raw)
	case '{', '[':
		depth := 0
		for j := i; j < len(raw); j++ {
			switch raw[j] {
			case '"':
				j = jsonValueEnd(raw, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(raw)
	}
	j := i
	for j < len(raw) && !strings.ContainsRune(",}] \t\r\n", rune(raw[j])) {
		j++
	}
	return j
}
