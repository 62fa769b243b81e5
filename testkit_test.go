package main

// The test kit: what more than one test file needs to set up a proxy and
// the world around it. A fake Flagsmith API (fakeUpstream), environment
// documents (buildDocument), a log that tests can read (logBuffer), a
// server under test (newTestServer), and the built binary with the
// helpers that talk to it over the network. Test files hold tests, and the
// few helpers only they use.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testWait bounds every wait for something the code under test does on its
// own (an event, a poll, a disconnect noticed). It is generous so that a
// loaded -race run does not flake; working code answers in milliseconds,
// so only broken code ever reaches it.
const testWait = 10 * time.Second

// The two environments a test server serves unless a test says otherwise.
// The server keys are secrets: no log may hold them in clear.
const (
	clientKeyA = "TestEnvAlphaClientKey"
	serverKeyA = "ser.TestEnvAlphaServerSecret"
	clientKeyB = "TestEnvBetaClientKey"
	serverKeyB = "ser.TestEnvBetaServerSecret"
)

var (
	pairA = KeyPair{ClientSideKey: clientKeyA, ServerSideKey: serverKeyA}
	pairB = KeyPair{ClientSideKey: clientKeyB, ServerSideKey: serverKeyB}
)

// The demo environment of examples/: its document's api_key is the client
// key. The e2e and ship tests serve it.
const (
	demoClientKey    = "DemoEnvClientKey000001"
	demoServerKey    = "ser.demo-server-key-000001"
	demoDocumentPath = "examples/environment-document.json"
)

var demoPair = KeyPair{ClientSideKey: demoClientKey, ServerSideKey: demoServerKey}

// ---- Environment documents

// docEdit changes a decoded environment document. Numbers are json.Number,
// so an edit leaves every literal it does not touch as it was (10.0 stays
// 10.0).
type docEdit func(doc map[string]any)

// smallDocument is the base of testDocument: one flag, "banner", shaped as
// Flagsmith sends it.
const smallDocument = `{"api_key": "", "name": "Test", "updated_at": "",
 "project": {"name": "Test", "hide_disabled_flags": false, "segments": [], "server_key_only_feature_ids": []},
 "feature_states": [{"feature": {"id": 1, "name": "banner", "type": "STANDARD"}, "enabled": true,
   "django_id": 11, "featurestate_uuid": "5b1a3c1e-0000-4000-8000-000000000001",
   "feature_state_value": "", "multivariate_feature_state_values": []}],
 "identity_overrides": []}`

// testDocument is a small document for the environment whose client key is
// apiKey: updated_at exactly as given (any form, even one that does not
// parse; testTime writes Flagsmith's) and one flag, "banner", whose value
// tells versions apart.
func testDocument(apiKey, updatedAt, banner string, edits ...docEdit) []byte {
	return buildDocument([]byte(smallDocument), append([]docEdit{
		func(doc map[string]any) { doc["api_key"] = apiKey },
		withUpdatedAt(updatedAt),
		withValue("banner", banner),
	}, edits...)...)
}

// demoDocument is the example document at another version: its updated_at
// and the value of welcome_message replaced.
func demoDocument(t testing.TB, updatedAt time.Time, welcome string) []byte {
	t.Helper()
	raw, err := os.ReadFile(demoDocumentPath)
	if err != nil {
		t.Fatal(err)
	}
	return buildDocument(raw, withUpdatedAt(testTime(updatedAt)), withValue("welcome_message", welcome))
}

// buildDocument decodes base, applies edits in order and encodes the
// result. Bases are fixtures, so a broken one panics.
func buildDocument(base []byte, edits ...docEdit) []byte {
	dec := json.NewDecoder(bytes.NewReader(base))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		panic(fmt.Sprintf("document fixture: %v", err))
	}
	for _, edit := range edits {
		edit(doc)
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		panic(fmt.Sprintf("document fixture: %v", err))
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n"))
}

func withUpdatedAt(s string) docEdit {
	return func(doc map[string]any) { doc["updated_at"] = s }
}

// withValue sets the environment default value of the feature named name.
func withValue(name string, value any) docEdit {
	return func(doc map[string]any) {
		for _, fs := range doc["feature_states"].([]any) {
			fs := fs.(map[string]any)
			if fs["feature"].(map[string]any)["name"] == name {
				fs["feature_state_value"] = value
				return
			}
		}
		panic(fmt.Sprintf("document fixture has no feature %q", name))
	}
}

// testTime is t as Flagsmith writes updated_at: Python's isoformat, with
// microseconds and an offset.
func testTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000-07:00")
}

// ---- The fake Flagsmith API

// documentPath is the upstream's environment-document endpoint.
const documentPath = "/api/v1/environment-document/"

// fakeUpstream plays the Flagsmith API: the environment document of each
// server key, with the conditional answers Flagsmith gives (304 when the
// document is not newer than If-Modified-Since, at one-second resolution,
// or when If-None-Match names its ETag), in pages linked as Flagsmith's
// Edge API links them when a test sets pages (setPages), and, once
// answerIdentities is called, the identities endpoint. Every request is
// recorded with its body. A test can hold requests until it releases them,
// and set a fault that answers in place of the documents.
type fakeUpstream struct {
	// apiURL is the api_url to configure ("" for an in-memory upstream,
	// which any URL reaches through the upstream as RoundTripper).
	apiURL string
	srv    *httptest.Server
	stop   chan struct{} // closed at cleanup: releases held and hanging requests

	// While holding, each request announces its server key on arrived and
	// then waits for a value on release.
	arrived chan string
	release chan struct{}

	mu       sync.Mutex
	docs     map[string]upstreamDocument // by server key
	fault    fault
	holding  bool
	requests []upstreamRequest
	notMod   int // 304s answered for documents
	// validators is what a document is sent with (upstreamETag unless a
	// test says otherwise).
	validators upstreamValidators
	// linkBase prefixes the path in the Link to a next page: "" gives the
	// path alone, as Flagsmith's Edge API sends it.
	linkBase string
	// identities answers POST /api/v1/identities/ (nil: 404), from a
	// reference proxy per server key (refs).
	identities *identityReference
	refs       map[string]referenceServer
}

// upstreamValidators is what the fake sends with a document for later
// conditional requests.
type upstreamValidators int

const (
	upstreamETag         upstreamValidators = iota // an ETag of the body
	upstreamLastModified                           // Last-Modified from updated_at, as Flagsmith's API sends
	upstreamNoValidators                           // neither
)

// sendValidators makes later documents go with v.
func (u *fakeUpstream) sendValidators(v upstreamValidators) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.validators = v
}

type upstreamDocument struct {
	raw      []byte // page 1 when the document is paginated
	etag     string
	modified time.Time // zero when updated_at does not parse: never 304
	// A paginated document (setPages): the page_id page 1 links to, and
	// the later pages by page_id.
	next  string
	pages map[string]upstreamPage
}

// upstreamPage is a page after the first of a paginated document, as
// Flagsmith's Edge API splits a large one.
type upstreamPage struct {
	id   string // the page_id that asks for it
	body []byte
	next string // the page_id its Link names; "" for the last page
}

// upstreamRequest is what the fake saw of one request.
type upstreamRequest struct {
	key          string // X-Environment-Key
	page         string // the page_id asked for, decoded; "" for page 1
	header       http.Header
	at           time.Time
	method, path string
	body         []byte
}

// A fault answers a request in place of the documents; n counts the
// requests of the same server key before this one. Returning false lets
// the documents answer after all (a fault that only delays).
type fault func(w http.ResponseWriter, r *http.Request, n int) (answered bool)

// newUpstream starts a fake upstream on a loopback port until the test
// ends.
func newUpstream(t testing.TB) *fakeUpstream {
	t.Helper()
	u := newUpstreamInMemory(t)
	u.srv = httptest.NewServer(u)
	u.apiURL = u.srv.URL + "/api/v1"
	// Close waits for handlers, and held or hanging ones return only once
	// stop is closed: cleanups run last first, so stop is closed before.
	t.Cleanup(u.srv.Close)
	t.Cleanup(func() { u.closeStop() })
	return u
}

// newUpstreamInMemory is a fake upstream with no listener, for synctest
// bubbles where real network I/O has no place: clients reach it with the
// upstream as their Transport.
func newUpstreamInMemory(t testing.TB) *fakeUpstream {
	u := &fakeUpstream{
		stop:    make(chan struct{}),
		arrived: make(chan string),
		release: make(chan struct{}),
		docs:    map[string]upstreamDocument{},
	}
	t.Cleanup(func() { u.closeStop() })
	return u
}

func (u *fakeUpstream) closeStop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	select {
	case <-u.stop:
	default:
		close(u.stop)
	}
}

// set makes doc the document of serverKey; a key with none is answered 401.
func (u *fakeUpstream) set(serverKey string, doc []byte) {
	d := upstreamDocument{raw: doc}
	sum := sha256.Sum256(doc)
	d.etag = `"` + hex.EncodeToString(sum[:8]) + `"`
	var fields struct {
		UpdatedAt string `json:"updated_at"`
	}
	if json.Unmarshal(doc, &fields) == nil {
		d.modified, _ = time.Parse(time.RFC3339Nano, fields.UpdatedAt)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.docs[serverKey] = d
}

// setPages makes serverKey's document paginated: page 1 is first, then
// the later pages in order, each linked from the one before it; the last
// links to its own next (normally none). Validators are page 1's.
func (u *fakeUpstream) setPages(serverKey string, first []byte, later ...upstreamPage) {
	u.set(serverKey, first)
	u.mu.Lock()
	defer u.mu.Unlock()
	d := u.docs[serverKey]
	d.pages = map[string]upstreamPage{}
	for i, p := range later {
		if i == 0 {
			d.next = p.id
		}
		if i+1 < len(later) {
			p.next = later[i+1].id
		}
		d.pages[p.id] = p
	}
	u.docs[serverKey] = d
}

// setLinkBase makes the Links to next pages absolute, under base.
func (u *fakeUpstream) setLinkBase(base string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.linkBase = base
}

// remove forgets serverKey's document: the key is answered 401 from now on
// (a revoked key).
func (u *fakeUpstream) remove(serverKey string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.docs, serverKey)
}

// setFault makes f answer every later request; nil restores the documents.
func (u *fakeUpstream) setFault(f fault) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.fault = f
}

// hold makes every later request wait: it sends its server key on
// u.arrived, then waits for the test to send on u.release.
func (u *fakeUpstream) hold() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.holding = true
}

// close takes the upstream down: connections are refused from now on.
func (u *fakeUpstream) close() { u.srv.Close() }

func (u *fakeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The request also ends with the test, so that a held or hanging
	// request never keeps the server's Close waiting.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-u.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	r = r.WithContext(ctx)

	key := r.Header.Get("X-Environment-Key")
	var body []byte
	if r.Body != nil { // nil in a client's request that RoundTrip serves
		body, _ = io.ReadAll(io.LimitReader(r.Body, 4<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	u.mu.Lock()
	n := 0
	for _, req := range u.requests {
		if req.key == key {
			n++
		}
	}
	u.requests = append(u.requests, upstreamRequest{key: key, page: r.URL.Query().Get("page_id"), header: r.Header.Clone(),
		at: time.Now(), method: r.Method, path: r.URL.Path, body: body})
	f, holding := u.fault, u.holding
	u.mu.Unlock()

	if holding {
		select {
		case u.arrived <- key:
		case <-ctx.Done():
			return
		}
		select {
		case <-u.release:
		case <-ctx.Done():
			return
		}
	}
	if f != nil && f(w, r, n) {
		return
	}
	if r.URL.Path == identitiesPath {
		u.serveIdentities(w, r, key, body)
		return
	}
	u.serveDocument(w, r, key)
}

func (u *fakeUpstream) serveDocument(w http.ResponseWriter, r *http.Request, key string) {
	if r.URL.Path != documentPath || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	u.mu.Lock()
	doc, ok := u.docs[key]
	validators, linkBase := u.validators, u.linkBase
	u.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	linkTo := func(next string) {
		if next != "" {
			w.Header().Set("Link", "<"+linkBase+documentPath+"?page_id="+url.QueryEscape(next)+`>; rel="next"`)
		}
	}
	if query := r.URL.Query(); query.Has("page_id") {
		page, ok := doc.pages[query.Get("page_id")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		linkTo(page.next)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(page.body)
		return
	}
	ims, imsErr := http.ParseTime(r.Header.Get("If-Modified-Since"))
	if r.Header.Get("If-None-Match") == doc.etag ||
		(imsErr == nil && !doc.modified.IsZero() && !doc.modified.Truncate(time.Second).After(ims)) {
		u.mu.Lock()
		u.notMod++
		u.mu.Unlock()
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch validators {
	case upstreamETag:
		w.Header().Set("ETag", doc.etag)
	case upstreamLastModified:
		if !doc.modified.IsZero() {
			w.Header().Set("Last-Modified", doc.modified.UTC().Format(http.TimeFormat))
		}
	}
	linkTo(doc.next)
	_, _ = w.Write(doc.raw)
}

// RoundTrip serves req in memory, for an upstream without a listener.
func (u *fakeUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	u.ServeHTTP(rec, req)
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// recorded is every request received so far.
func (u *fakeUpstream) recorded() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.requests)
}

// last is the headers of the latest request.
func (u *fakeUpstream) last(t testing.TB) http.Header {
	t.Helper()
	reqs := u.recorded()
	if len(reqs) == 0 {
		t.Fatal("the upstream received no request")
	}
	return reqs[len(reqs)-1].header
}

// count is how many requests serverKey made.
func (u *fakeUpstream) count(serverKey string) int {
	n := 0
	for _, req := range u.recorded() {
		if req.key == serverKey {
			n++
		}
	}
	return n
}

// offsets is when serverKey's requests arrived, relative to start.
func (u *fakeUpstream) offsets(serverKey string, start time.Time) []time.Duration {
	var out []time.Duration
	for _, req := range u.recorded() {
		if req.key == serverKey {
			out = append(out, req.at.Sub(start))
		}
	}
	return out
}

// notModified is how many 304s the documents answered.
func (u *fakeUpstream) notModified() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.notMod
}

// failWith answers with the status code and no body.
func failWith(code int) fault {
	return func(w http.ResponseWriter, r *http.Request, n int) bool {
		w.WriteHeader(code)
		return true
	}
}

// answerWith answers 200 with body, whatever the request.
func answerWith(body []byte) fault {
	return func(w http.ResponseWriter, r *http.Request, n int) bool {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
		return true
	}
}

// hang never answers: it returns when the client gives up or the test ends.
func hang(w http.ResponseWriter, r *http.Request, n int) bool {
	<-r.Context().Done()
	return true
}

// ---- The fake upstream's identities endpoint

// identitiesPath is the upstream's identities endpoint.
const identitiesPath = "/api/v1/identities/"

// identityReference makes the fake answer POST /api/v1/identities/ as
// Flagsmith would, for the document it holds for the request's key: the
// proxy's own engine on that document, in process (a server of its own,
// reached through its handler). Answers can be made wrong on purpose.
type identityReference struct {
	// wrong names, per identifier, a feature whose enabled the answer
	// turns over.
	wrong map[string]string
	// wrongVariant names, per identifier, a feature whose variant the
	// answer gives as another option's.
	wrongVariant map[string]string
	// stored lists identifiers Flagsmith holds traits for: their answers
	// list a trait the request did not send.
	stored map[string]bool
	// version, when set, is the X-Flagsmith-Document-Updated-At sent in
	// place of the document's; "-" sends none.
	version string
}

// answerIdentities makes the fake answer identities requests with ref; nil
// answers them 404, as before.
func (u *fakeUpstream) answerIdentities(ref *identityReference) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.identities = ref
}

// identityRequests is every identities request received so far.
func (u *fakeUpstream) identityRequests() []upstreamRequest {
	var out []upstreamRequest
	for _, req := range u.recorded() {
		if req.path == identitiesPath {
			out = append(out, req)
		}
	}
	return out
}

func (u *fakeUpstream) serveIdentities(w http.ResponseWriter, r *http.Request, key string, body []byte) {
	u.mu.Lock()
	doc, ok := u.docs[key]
	ref := u.identities
	u.mu.Unlock()
	switch {
	case r.Method != http.MethodPost || ref == nil:
		http.NotFound(w, r)
		return
	case !ok:
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	rs, err := u.referenceServer(key, doc.raw)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req := httptest.NewRequest(http.MethodPost, identitiesPath, bytes.NewReader(body))
	req.Header.Set("X-Environment-Key", key)
	rec := httptest.NewRecorder()
	rs.handler().ServeHTTP(rec, req)
	answer := rec.Body.Bytes()
	if rec.Code == http.StatusOK {
		answer = ref.alter(answer)
	}
	version := rec.Header().Get(updatedAtHeader)
	if ref.version != "" {
		version = ref.version
	}
	if version != "-" && version != "" {
		w.Header().Set(updatedAtHeader, version)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rec.Code)
	_, _ = w.Write(answer)
}

// alter makes an answer wrong as ref says for its identifier.
func (ref *identityReference) alter(answer []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(answer))
	dec.UseNumber()
	var doc map[string]any
	if dec.Decode(&doc) != nil {
		return answer
	}
	id, _ := doc["identifier"].(string)
	feature, wrong := ref.wrong[id]
	variantOf, wrongVariant := ref.wrongVariant[id]
	if !wrong && !wrongVariant && !ref.stored[id] {
		return answer
	}
	for _, f := range doc["flags"].([]any) {
		f := f.(map[string]any)
		switch name := f["feature"].(map[string]any)["name"]; {
		case wrong && name == feature:
			f["enabled"] = !f["enabled"].(bool)
		case wrongVariant && name == variantOf:
			f["variant"] = "not-the-option-chosen"
		}
	}
	if ref.stored[id] {
		traits, _ := doc["traits"].([]any)
		doc["traits"] = append(traits, map[string]any{"trait_key": "stored_by_flagsmith", "trait_value": "kept"})
	}
	out, _ := json.Marshal(doc)
	return out
}

// referenceServer is a proxy serving doc for key, built once per document.
func (u *fakeUpstream) referenceServer(key string, doc []byte) (*server, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	sum := sha256.Sum256(doc)
	if ref, ok := u.refs[key]; ok && ref.digest == sum {
		return ref.srv, nil
	}
	var fields struct {
		APIKey string `json:"api_key"`
	}
	if err := json.Unmarshal(doc, &fields); err != nil {
		return nil, err
	}
	cfg := defaultConfig()
	cfg.EnvironmentKeyPairs = []KeyPair{{ClientSideKey: fields.APIKey, ServerSideKey: secret(key)}}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	srv := newServer(cfg, slog.New(slog.DiscardHandler))
	if _, err := srv.publish(srv.environments()[0], doc, "reference"); err != nil {
		return nil, err
	}
	if u.refs == nil {
		u.refs = map[string]referenceServer{}
	}
	u.refs[key] = referenceServer{sum, srv}
	return srv, nil
}

type referenceServer struct {
	digest [sha256.Size]byte
	srv    *server
}

// ---- Logs

// logBuffer collects log output, safe for concurrent use, and wakes
// waiters on every write.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	n, err := l.buf.Write(p)
	changed := l.wake()
	l.mu.Unlock()
	select {
	case changed <- struct{}{}:
	default:
	}
	return n, err
}

// wake is the channel that signals a write; l.mu must be held.
func (l *logBuffer) wake() chan struct{} {
	if l.changed == nil {
		l.changed = make(chan struct{}, 1)
	}
	return l.changed
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// records decodes every JSON line logged so far.
func (l *logBuffer) records(t testing.TB) []map[string]any {
	t.Helper()
	return logRecords(t, l.String())
}

// logRecords decodes JSON log output, one record a line.
func logRecords(t testing.TB, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for line := range strings.Lines(out) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		recs = append(recs, rec)
	}
	return recs
}

// logRecord is a record a test expects: its level, a part of its message,
// its env attribute, and a part of its error attribute (when set).
type logRecord struct {
	level, msg, env, err string
}

func (w logRecord) matches(rec map[string]any) bool {
	s := func(k string) string { v, _ := rec[k].(string); return v }
	return s("level") == w.level && strings.Contains(s("msg"), w.msg) && s("env") == w.env &&
		(w.err == "" || strings.Contains(s("error"), w.err))
}

func (l *logBuffer) has(t testing.TB, want logRecord) bool {
	t.Helper()
	return slices.ContainsFunc(l.records(t), want.matches)
}

// mustHave fails unless a record matching want was logged.
func (l *logBuffer) mustHave(t testing.TB, want logRecord) {
	t.Helper()
	if !l.has(t, want) {
		t.Errorf("no log record %+v; log:\n%s", want, l)
	}
}

// waitFor waits until a record matching want is logged. The bound only
// guards against a poll that hangs.
func (l *logBuffer) waitFor(t testing.TB, want logRecord) {
	t.Helper()
	const bound = 60 * time.Second
	timeout := time.NewTimer(bound)
	defer timeout.Stop()
	l.mu.Lock()
	changed := l.wake()
	l.mu.Unlock()
	for !l.has(t, want) {
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("no log record %+v after %v; log:\n%s", want, bound, l)
		}
	}
}

// noServerKeys fails when a test server key appears in the log in clear.
func (l *logBuffer) noServerKeys(t testing.TB) {
	t.Helper()
	out := l.String()
	for _, k := range []string{serverKeyA, serverKeyB} {
		if strings.Contains(out, k) {
			t.Errorf("log holds the server key %q in clear:\n%s", k, out)
		}
	}
}

// ---- The server under test

// testServer is a server under test with its log. After listen it also
// has a URL and a client of its own.
type testServer struct {
	*server
	logs   *logBuffer
	url    string
	client *http.Client

	pollStates map[*environment]*pollState // of pollNow, as a poll loop keeps them
}

// pollNow polls env once and records it, remembering the upstream's
// validators from one call to the next as the environment's poll loop does.
func (s *testServer) pollNow(ctx context.Context, env *environment, client *http.Client) error {
	if s.pollStates == nil {
		s.pollStates = map[*environment]*pollState{}
	}
	st := s.pollStates[env]
	if st == nil {
		fresh := s.newPollState(env)
		st = &fresh
		s.pollStates[env] = st
	}
	res := s.pollOnce(ctx, env, client, st)
	s.recordPoll(env, res)
	return res.err
}

// testConfig is a valid configuration serving environments A and B, with
// edits (nil ones skipped) applied in order before validation. Its api_url is never reached
// unless a test runs the pollers and points it at an upstream.
func testConfig(t testing.TB, edits ...func(*Config)) Config {
	t.Helper()
	cfg := defaultConfig()
	cfg.EnvironmentKeyPairs = []KeyPair{pairA, pairB}
	cfg.APIURL = "http://127.0.0.1:9/api/v1"
	cfg.PollTimeout = 30 // a bound only; tests of timeouts set their own
	for _, edit := range edits {
		if edit != nil {
			edit(&cfg)
		}
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("test configuration invalid: %v", err)
	}
	return cfg
}

// newTestServer builds a server for testConfig(edits…), logging JSON at
// DEBUG into s.logs. No document is held and nothing runs until the test
// says so.
func newTestServer(t testing.TB, edits ...func(*Config)) *testServer {
	t.Helper()
	logs := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return &testServer{server: newServer(testConfig(t, edits...), log), logs: logs}
}

// withPairs serves exactly these environments.
func withPairs(pairs ...KeyPair) func(*Config) {
	return func(c *Config) { c.EnvironmentKeyPairs = pairs }
}

// withUpstream polls u.
func withUpstream(u *fakeUpstream) func(*Config) {
	return func(c *Config) { c.APIURL = u.apiURL }
}

// env is the environment of a client or server key.
func (s *testServer) env(t testing.TB, key string) *environment {
	t.Helper()
	ref, ok := s.lookup(key)
	if !ok {
		t.Fatalf("no environment with key %q", key)
	}
	return ref.env
}

// publishDoc publishes raw as the document of the environment of key.
func (s *testServer) publishDoc(t testing.TB, key string, raw []byte) {
	t.Helper()
	if _, err := s.publish(s.env(t, key), raw, "test"); err != nil {
		t.Fatalf("publish(%s) = %v; want nil", key, err)
	}
}

// listen serves s on a loopback port until the test ends, calling onConn
// (when not nil) with each connection as it is accepted. It returns s.
func (s *testServer) listen(t testing.TB, onConn func(net.Conn)) *testServer {
	t.Helper()
	ts := httptest.NewUnstartedServer(s.handler())
	if onConn != nil {
		ts.Config.ConnState = func(c net.Conn, state http.ConnState) {
			if state == http.StateNew {
				onConn(c)
			}
		}
	}
	ts.Start()
	tr := &http.Transport{}
	t.Cleanup(func() {
		// A stream left open would keep ts.Close waiting for its handler.
		s.hub.close()
		tr.CloseIdleConnections()
		ts.Close()
	})
	s.url, s.client = ts.URL, &http.Client{Transport: tr}
	return s
}

// do sends a request to a listening s and returns the status, headers and
// whole body. It is for answers that are not streams.
func (s *testServer) do(t testing.TB, method, path string, header http.Header) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, body := roundTrip(t, s.client, req)
	return resp.StatusCode, resp.Header, body
}

// poll runs the pollers through client until the returned stop, or the
// test's end, has cancelled them and they have returned.
func (s *testServer) poll(t testing.TB, client *http.Client) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.runLoops(ctx, client) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("runLoops = %v; want nil", err)
				}
			case <-time.After(testWait):
				t.Errorf("pollers still running %v after their context ended", testWait)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// pollClient is the proxy's poll client with a transport of its own, whose
// idle connections close when the test ends.
func pollClient(t testing.TB) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := newPollClient()
	client.Transport = tr
	return client
}

// callHandler sends one request through h in process. Headers with an
// empty value are not sent.
func callHandler(t testing.TB, h http.Handler, method, path string, headers map[string]string, body string) *httptest.ResponseRecorder {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	for k, v := range headers {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func withKey(key string) map[string]string { return map[string]string{"X-Environment-Key": key} }

// eventually polls cond until it holds, failing after testWait.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v", what, testWait)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ---- Realtime streams

// sseFloat is updated_at as Unix seconds, the float the SDKs compare:
// microseconds, as Flagsmith's documents carry them.
func sseFloat(t time.Time) float64 { return float64(t.UnixMicro()) / 1e6 }

func sseStreamPath(key string) string { return "/sse/environments/" + key + "/stream" }

// sseItem is one thing read from a stream, in stream order: a comment, a
// retry field, or a dispatched event.
type sseItem struct {
	comment, retry string
	isComment      bool
	isEvent        bool
	event, data    string
	id             string // the event's id field, if it had one
}

// sseStream is an open stream read by a parser that follows the WHATWG
// Server-Sent Events rules: "field: value" lines (one optional space after
// the colon), ":" comments, events dispatched at a blank line.
type sseStream struct {
	resp   *http.Response
	items  chan sseItem
	done   chan struct{} // closed when the stream ends; err says why
	err    error
	cancel context.CancelFunc
}

// sseOpenStream starts a stream and fails the test unless it is a 200 event
// stream. The stream is closed at the end of the test.
func sseOpenStream(t testing.TB, client *http.Client, url string, header http.Header) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	// Headers must come quickly; the body is a stream and has no deadline.
	timer := time.AfterFunc(testWait, cancel)
	resp, err := client.Do(req)
	timer.Stop()
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s = %d %s; want 200 event stream", url, resp.StatusCode, body)
	}
	st := &sseStream{resp: resp, items: make(chan sseItem, 64), done: make(chan struct{}), cancel: cancel}
	go st.read(ctx, resp.Body)
	t.Cleanup(func() { st.close(t) })
	return st
}

func (st *sseStream) read(ctx context.Context, body io.Reader) {
	defer close(st.done)
	br := bufio.NewReader(body)
	eventType, data, id, hasData := "", "", "", false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			st.err = err
			return
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		var it sseItem
		switch field, value, _ := strings.Cut(line, ":"); {
		case line == "":
			if !hasData {
				eventType = ""
				continue
			}
			if eventType == "" {
				eventType = "message"
			}
			it = sseItem{isEvent: true, event: eventType, data: data, id: id}
			eventType, data, id, hasData = "", "", "", false
		case field == "":
			it = sseItem{isComment: true, comment: value}
		default:
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				eventType = value
			case "id":
				id = value
			case "data":
				if hasData {
					data += "\n"
				}
				data, hasData = data+value, true
			case "retry":
				it = sseItem{retry: value}
			}
			if it.retry == "" {
				continue
			}
		}
		select {
		case st.items <- it:
		case <-ctx.Done():
			st.err = ctx.Err()
			return
		}
	}
}

// close disconnects the client and waits for its reader.
func (st *sseStream) close(t testing.TB) {
	st.cancel()
	select {
	case <-st.done:
	case <-time.After(testWait):
		t.Errorf("stream reader still running %v after disconnect", testWait)
	}
	st.resp.Body.Close()
}

// next returns the next item, failing when the stream ends or stays silent.
func (st *sseStream) next(t testing.TB, waitingFor string) sseItem {
	t.Helper()
	timer := time.NewTimer(testWait)
	defer timer.Stop()
	select {
	case it := <-st.items:
		return it
	case <-st.done:
		select {
		case it := <-st.items:
			return it
		default:
		}
		t.Fatalf("stream ended (%v) while waiting for %s", st.err, waitingFor)
	case <-timer.C:
		t.Fatalf("nothing on the stream for %v while waiting for %s", testWait, waitingFor)
	}
	return sseItem{}
}

// nextEvent skips comments and retry fields.
func (st *sseStream) nextEvent(t testing.TB, waitingFor string) sseItem {
	t.Helper()
	for {
		if it := st.next(t, waitingFor); it.isEvent {
			return it
		}
	}
}

// wantUpdated reads the next event and checks that it announces updatedAt.
func (st *sseStream) wantUpdated(t testing.TB, updatedAt time.Time) {
	t.Helper()
	want := sseFloat(updatedAt)
	it := st.nextEvent(t, fmt.Sprintf("the event for updated_at %v", want))
	if it.event != "environment_updated" {
		t.Fatalf("event type = %q; want environment_updated (data %q)", it.event, it.data)
	}
	if got := sseDecodeUpdatedAt(t, it.data); got != want {
		t.Fatalf("event updated_at = %v; want %v (data %q)", got, want, it.data)
	}
}

// waitEnd waits for the server to end the stream and returns the read error
// that ended it: io.EOF for a clean end of a chunked body.
func (st *sseStream) waitEnd(t testing.TB) error {
	t.Helper()
	timer := time.NewTimer(testWait)
	defer timer.Stop()
	for {
		select {
		case it := <-st.items:
			if it.isEvent {
				t.Errorf("unexpected event %q %q while waiting for the stream to end", it.event, it.data)
			}
		case <-st.done:
			return st.err
		case <-timer.C:
			t.Fatalf("stream still open %v after it should have ended", testWait)
		}
	}
}

// sseDecodeUpdatedAt reads an event's data strictly: one field, updated_at, a
// JSON number.
func sseDecodeUpdatedAt(t testing.TB, data string) float64 {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(data))
	dec.DisallowUnknownFields()
	var v struct {
		UpdatedAt *float64 `json:"updated_at"`
	}
	if err := dec.Decode(&v); err != nil || v.UpdatedAt == nil {
		t.Fatalf("event data %q: want {\"updated_at\": <float>} (decode error %v)", data, err)
	}
	return *v.UpdatedAt
}

// ---- The built binary and clients over the network

// stampedVersion is stamped into the test binary as the Dockerfile stamps
// its VERSION build argument.
const stampedVersion = "v0.0.0-shiptest"

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// TestMain removes the binary built by buildEdgeProxy once every test has run.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// dockerBuildFlags are the go build flags of the Dockerfile's build step
// (TestShipDockerfileBuild checks that the Dockerfile still says so).
func dockerBuildFlags(version string) []string {
	return []string{"-trimpath", "-ldflags", "-s -w -X main.version=" + version}
}

// buildEdgeProxy builds the command once per test run, as the Dockerfile
// does (CGO_ENABLED=0, static, trimmed, stamped with stampedVersion), and
// returns the binary's path. Tests share the binary and must not modify it.
func buildEdgeProxy(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "edge-proxy-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "edge-proxy")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		args := append([]string{"build"}, dockerBuildFlags(stampedVersion)...)
		cmd := exec.CommandContext(ctx, "go", append(args, "-o", binPath, ".")...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// proxyProcess is a running edge-proxy binary whose stderr is collected
// line by line. It is safe for concurrent use.
type proxyProcess struct {
	cmd    *exec.Cmd
	notify chan struct{} // receives (without blocking) after each new line
	done   chan struct{} // closed once the process has exited and err is set

	mu    sync.Mutex
	lines []string
	err   error // the result of Wait
}

// startProcess starts bin with args and exactly the environment env (the
// host's environment could configure the proxy). It is killed at cleanup
// if it is still running.
func startProcess(t testing.TB, bin string, args, env []string, configure func(*exec.Cmd)) *proxyProcess {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	if configure != nil {
		configure(cmd)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proxyProcess{cmd: cmd, notify: make(chan struct{}, 1), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.notify <- struct{}{}:
			default:
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		err := cmd.Wait() // only after every read, as StderrPipe requires
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("edge-proxy stderr:\n%s", strings.Join(p.stderr(), "\n"))
		}
	})
	return p
}

func (p *proxyProcess) stderr() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lines)
}

// waitLog waits for a JSON log record whose message field is msg and returns
// it; it fails when the process exits first or after timeout.
func (p *proxyProcess) waitLog(t testing.TB, msg string, timeout time.Duration) map[string]any {
	t.Helper()
	find := func() map[string]any {
		for _, line := range p.stderr() {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["message"] == msg {
				return rec
			}
		}
		return nil
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if rec := find(); rec != nil {
			return rec
		}
		select {
		case <-p.notify:
		case <-p.done:
			// The last lines may have arrived together with the exit.
			if rec := find(); rec != nil {
				return rec
			}
			t.Fatalf("edge-proxy exited (%v) before logging %q", p.exitErr(), msg)
		case <-deadline.C:
			t.Fatalf("edge-proxy logged no %q within %v", msg, timeout)
		}
	}
}

func (p *proxyProcess) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// wait waits for the process to exit and returns Wait's result.
func (p *proxyProcess) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.exitErr()
	case <-time.After(timeout):
		t.Fatalf("edge-proxy still running %v after it was told to stop", timeout)
		return nil
	}
}

// apiFlag is one flag object of the SDK API.
type apiFlag struct {
	Feature struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
		Type string `json:"type"`
	} `json:"feature"`
	Enabled bool            `json:"enabled"`
	Value   json.RawMessage `json:"feature_state_value"`
}

func flagsByName(flags []apiFlag) map[string]apiFlag {
	m := make(map[string]apiFlag, len(flags))
	for _, f := range flags {
		m[f.Feature.Name] = f
	}
	return m
}

// httpDo sends one request with the environment key key (when not "") and
// returns the response with its whole body.
func httpDo(t testing.TB, client *http.Client, method, url, key, body string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-Environment-Key", key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return roundTrip(t, client, req)
}

// roundTrip sends req and returns the response with its whole body.
func roundTrip(t testing.TB, client *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

// waitStatus polls url until it answers want, for at most timeout: the
// bounded wait for a process that becomes ready on its own.
func waitStatus(t testing.TB, client *http.Client, url string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for {
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %s after %v; want %d", url, last, timeout, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustUnmarshal(t testing.TB, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("json.Unmarshal(%.200s): %v", data, err)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// serveConfig runs the real server (serve) with cfg on a loopback port until
// the test ends; it returns the address, the server's log, and stop, which
// shuts it down and returns serve's result.
func serveConfig(t testing.TB, cfg Config) (addr string, logs *logBuffer, stop func() error) {
	t.Helper()
	cfg.Server.Host, cfg.Server.Port = "127.0.0.1", 0
	logs = &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, nil, slog.New(slog.NewJSONHandler(logs, nil))) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(seconds(cfg.Server.ShutdownTimeout) + testWait):
				err = errors.New("serve did not return after shutdown")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	eventually(t, "serve logs its listening address", func() bool {
		for _, rec := range logs.records(t) {
			if a, _ := rec["addr"].(string); rec["msg"] == "listening" {
				addr = a
				return true
			}
		}
		select {
		case err := <-done:
			t.Fatalf("serve returned %v before listening", err)
		default:
		}
		return false
	})
	return addr, logs, stop
}

// The API tests' documents and helpers (flags_test.go, identities_test.go,
// request_test.go, …).

// Keys of the environments the handler tests serve. Each document's api_key
// is its environment's client key.
const (
	apiClientKey     = "EnvAclientKey000001"
	apiServerKey     = "ser.EnvAserverKey000001"
	hiddenClientKey  = "EnvBhiddenKey000002"
	hiddenServerKey  = "ser.EnvBserverKey000002"
	bigClientKey     = "EnvCbigKey000003"
	bigServerKey     = "ser.EnvCserverKey000003"
	pendingClientKey = "EnvDpendingKey000004"
	pendingServerKey = "ser.EnvDserverKey000004"
)

// apiDocument is an ordinary environment: every JSON value type, one
// server-only feature (103), a disabled flag the project does not hide, a
// segment override for plan=premium, a multivariate feature whose only
// variant takes 100%, and an identity override for "vip". Its feature states
// are not in name order, and it is indented so that "as received" is
// distinguishable from re-encoded.
const apiDocument = `{
  "id": 1,
  "api_key": "EnvAclientKey000001",
  "name": "Handlers A",
  "updated_at": "2026-11-01T12:00:00.250000Z",
  "project": {
    "id": 1,
    "name": "handlers",
    "hide_disabled_flags": false,
    "server_key_only_feature_ids": [103],
    "segments": [
      {
        "id": 501,
        "name": "premium_users",
        "rules": [
          {"type": "ALL", "rules": [], "conditions": [
            {"operator": "EQUAL", "property_": "plan", "value": "premium"}
          ]}
        ],
        "feature_states": [
          {"feature": {"id": 101, "name": "banner", "type": "STANDARD"}, "enabled": true,
           "django_id": 9501, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000501",
           "feature_segment": {"priority": 0},
           "feature_state_value": "gold", "multivariate_feature_state_values": []}
        ]
      }
    ]
  },
  "feature_states": [
    {"feature": {"id": 101, "name": "banner", "type": "STANDARD"}, "enabled": true,
     "django_id": 9101, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000101",
     "feature_state_value": "blue", "multivariate_feature_state_values": []},
    {"feature": {"id": 102, "name": "max_items", "type": "STANDARD"}, "enabled": true,
     "django_id": 9102, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000102",
     "feature_state_value": 42, "multivariate_feature_state_values": []},
    {"feature": {"id": 103, "name": "secret_algo", "type": "STANDARD"}, "enabled": true,
     "django_id": 9103, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000103",
     "feature_state_value": "v2", "multivariate_feature_state_values": []},
    {"feature": {"id": 104, "name": "ratio", "type": "STANDARD"}, "enabled": true,
     "django_id": 9104, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000104",
     "feature_state_value": 1.5, "multivariate_feature_state_values": []},
    {"feature": {"id": 105, "name": "dark_mode", "type": "STANDARD"}, "enabled": false,
     "django_id": 9105, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000105",
     "feature_state_value": true, "multivariate_feature_state_values": []},
    {"feature": {"id": 106, "name": "empty_value"}, "enabled": true,
     "django_id": 9106, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000106",
     "feature_state_value": null, "multivariate_feature_state_values": []},
    {"feature": {"id": 107, "name": "checkout", "type": "MULTIVARIATE"}, "enabled": true,
     "django_id": 9107, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000107",
     "feature_state_value": "control", "multivariate_feature_state_values": [
       {"id": 7001, "mv_fs_value_uuid": "5b1f1b7e-0001-4000-8000-000000007001",
        "percentage_allocation": 100,
        "multivariate_feature_option": {"id": 71, "value": "variant_a"}}
     ]},
    {"feature": {"id": 108, "name": "price", "type": "STANDARD"}, "enabled": true,
     "django_id": 9108, "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000000108",
     "feature_state_value": 10.0, "multivariate_feature_state_values": []}
  ],
  "identity_overrides": [
    {"identifier": "vip", "identity_features": [
      {"feature": {"id": 101, "name": "banner", "type": "STANDARD"}, "enabled": false,
       "featurestate_uuid": "5b1f1b7e-0001-4000-8000-000000009999",
       "feature_state_value": "platinum", "multivariate_feature_state_values": []}
    ]}
  ]
}
`

// apiDocumentUpdatedAt is apiDocument's updated_at as Unix seconds.
const apiDocumentUpdatedAt = "1793534400.25"

// hiddenDocument hides disabled flags from client keys. Segment "beta"
// enables "off" for beta=true and segment "kill" disables "on" for kill=true,
// so visibility must follow the evaluated flag, not the default.
const hiddenDocument = `{
  "api_key": "EnvBhiddenKey000002",
  "name": "Handlers B",
  "updated_at": "2026-10-15T08:30:00Z",
  "project": {
    "hide_disabled_flags": true,
    "server_key_only_feature_ids": [203],
    "segments": [
      {"id": 601, "name": "beta", "rules": [{"type": "ALL", "rules": [], "conditions": [
         {"operator": "EQUAL", "property_": "beta", "value": "true"}]}],
       "feature_states": [
         {"feature": {"id": 202, "name": "off"}, "enabled": true, "django_id": 9602,
          "feature_segment": {"priority": 1}, "feature_state_value": "beta-on"}]},
      {"id": 602, "name": "kill", "rules": [{"type": "ALL", "rules": [], "conditions": [
         {"operator": "EQUAL", "property_": "kill", "value": "true"}]}],
       "feature_states": [
         {"feature": {"id": 201, "name": "on"}, "enabled": false, "django_id": 9601,
          "feature_segment": {"priority": 2}, "feature_state_value": "killed"}]}
    ]
  },
  "feature_states": [
    {"feature": {"id": 201, "name": "on"}, "enabled": true, "django_id": 9201, "feature_state_value": "yes"},
    {"feature": {"id": 202, "name": "off"}, "enabled": false, "django_id": 9202, "feature_state_value": "no"},
    {"feature": {"id": 203, "name": "server_only"}, "enabled": true, "django_id": 9203, "feature_state_value": 3}
  ]
}`

// hiddenDocumentUpdatedAt is hiddenDocument's updated_at as Unix seconds.
const hiddenDocumentUpdatedAt = "1792053000.0"

// bigDocument has a value long enough that every flags and identities
// response is over the gzip threshold.
var bigDocument = strings.Replace(`{
  "api_key": "EnvCbigKey000003",
  "name": "Handlers C",
  "updated_at": "2026-11-01T12:00:00Z",
  "project": {"segments": []},
  "feature_states": [
    {"feature": {"id": 301, "name": "long_text"}, "enabled": true, "django_id": 9301, "feature_state_value": "LONG"},
    {"feature": {"id": 302, "name": "short"}, "enabled": true, "django_id": 9302, "feature_state_value": 1}
  ]
}`, "LONG", strings.Repeat("lorem ipsum ", 150), 1)

func apiKeyPairs() []KeyPair {
	return []KeyPair{
		{ServerSideKey: apiServerKey, ClientSideKey: apiClientKey},
		{ServerSideKey: hiddenServerKey, ClientSideKey: hiddenClientKey},
		{ServerSideKey: bigServerKey, ClientSideKey: bigClientKey},
		{ServerSideKey: pendingServerKey, ClientSideKey: pendingClientKey},
	}
}

// newAPITestServer serves the four test environments, the default
// configuration changed by edits, with every document published but the
// pending environment's.
func newAPITestServer(t testing.TB, edits ...func(*Config)) *testServer {
	t.Helper()
	s := newTestServer(t, append([]func(*Config){withPairs(apiKeyPairs()...)}, edits...)...)
	s.publishDoc(t, apiClientKey, []byte(apiDocument))
	s.publishDoc(t, hiddenClientKey, []byte(hiddenDocument))
	s.publishDoc(t, bigClientKey, []byte(bigDocument))
	return s
}

// apiJSON decodes a JSON body keeping number literals, so 10.0 and 10 stay
// distinct as they are for Python.
func apiJSON(t testing.TB, body []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %.300q: %v", body, err)
	}
	if dec.More() {
		t.Fatalf("decode %.300q: data after the JSON value", body)
	}
	return v
}

// apiError checks that a response is a JSON error with the status and
// returns its message.
func apiError(t testing.TB, rec *httptest.ResponseRecorder, wantCode int, wantStatus string) string {
	t.Helper()
	if rec.Code != wantCode {
		t.Errorf("status = %d; want %d (body %.300q)", rec.Code, wantCode, rec.Body.Bytes())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q; want application/json", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %.300q is not a JSON object: %v", rec.Body.Bytes(), err)
	}
	status, _ := body["status"].(string)
	message, ok := body["message"].(string)
	if !ok || status == "" {
		t.Errorf("error body %.300q: want string \"status\" and \"message\"", rec.Body.Bytes())
	}
	if wantStatus != "" && status != wantStatus {
		t.Errorf("error status = %q; want %q", status, wantStatus)
	}
	return message
}

// flagNames lists the feature names of a flags array, in order.
func flagNames(t testing.TB, flags any) []string {
	t.Helper()
	list, ok := flags.([]any)
	if !ok {
		t.Fatalf("flags = %T; want a JSON array", flags)
	}
	var names []string
	for _, f := range list {
		feature := f.(map[string]any)["feature"].(map[string]any)
		names = append(names, feature["name"].(string))
	}
	return names
}

// apiFlagsClientA is GET /api/v1/flags/ for apiDocument and a client key:
// document order, secret_algo left out, the disabled flag kept, every value
// with its JSON type (10.0 stays a float literal).
const apiFlagsClientA = `[
 {"feature":{"id":101,"name":"banner","type":"STANDARD"},"enabled":true,"feature_state_value":"blue"},
 {"feature":{"id":102,"name":"max_items","type":"STANDARD"},"enabled":true,"feature_state_value":42},
 {"feature":{"id":104,"name":"ratio","type":"STANDARD"},"enabled":true,"feature_state_value":1.5},
 {"feature":{"id":105,"name":"dark_mode","type":"STANDARD"},"enabled":false,"feature_state_value":true},
 {"feature":{"id":106,"name":"empty_value","type":"STANDARD"},"enabled":true,"feature_state_value":null},
 {"feature":{"id":107,"name":"checkout","type":"MULTIVARIATE"},"enabled":true,"feature_state_value":"control"},
 {"feature":{"id":108,"name":"price","type":"STANDARD"},"enabled":true,"feature_state_value":10.0}
]`

const apiFlagsServerA = `[
 {"feature":{"id":101,"name":"banner","type":"STANDARD"},"enabled":true,"feature_state_value":"blue"},
 {"feature":{"id":102,"name":"max_items","type":"STANDARD"},"enabled":true,"feature_state_value":42},
 {"feature":{"id":103,"name":"secret_algo","type":"STANDARD"},"enabled":true,"feature_state_value":"v2"},
 {"feature":{"id":104,"name":"ratio","type":"STANDARD"},"enabled":true,"feature_state_value":1.5},
 {"feature":{"id":105,"name":"dark_mode","type":"STANDARD"},"enabled":false,"feature_state_value":true},
 {"feature":{"id":106,"name":"empty_value","type":"STANDARD"},"enabled":true,"feature_state_value":null},
 {"feature":{"id":107,"name":"checkout","type":"MULTIVARIATE"},"enabled":true,"feature_state_value":"control"},
 {"feature":{"id":108,"name":"price","type":"STANDARD"},"enabled":true,"feature_state_value":10.0}
]`

const apiFlagsClientB = `[
 {"feature":{"id":201,"name":"on","type":"STANDARD"},"enabled":true,"feature_state_value":"yes"}
]`

const apiFlagsServerB = `[
 {"feature":{"id":201,"name":"on","type":"STANDARD"},"enabled":true,"feature_state_value":"yes"},
 {"feature":{"id":202,"name":"off","type":"STANDARD"},"enabled":false,"feature_state_value":"no"},
 {"feature":{"id":203,"name":"server_only","type":"STANDARD"},"enabled":true,"feature_state_value":3}
]`

func urlQueryEscape(s string) string {
	return strings.NewReplacer("%", "%25", "&", "%26", "+", "%2B", " ", "%20", "#", "%23").Replace(s)
}

// skipIfShort skips a heavy scenario test under -short (the quick loop while
// editing); CI runs the full suite.
func skipIfShort(t *testing.T, why string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: " + why)
	}
}
