package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLargeDocumentKeptGzipped: a document over largeDocumentBytes is held
// only gzipped, and served as received either way: gzipped to clients that
// take it, decompressed with the right length to those that do not.
func TestLargeDocumentKeptGzipped(t *testing.T) {
	s := newTestServer(t, withPairs(demoPair))
	raw := scaleDocument(t, demoDocument(t, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), "hi"), 60, 1000, true)
	if len(raw) <= largeDocumentBytes {
		t.Fatalf("document of %d bytes is not large", len(raw))
	}
	s.publishDoc(t, demoClientKey, raw)
	if snap := s.environments()[0].snap.Load(); snap.document.body != nil {
		t.Error("the large document's plain bytes are kept")
	}
	var etags []string
	for _, gz := range []bool{false, true} {
		headers := withKey(demoServerKey)
		if gz {
			headers["Accept-Encoding"] = "gzip"
		}
		rec := callHandler(t, s.handler(), http.MethodGet, "/api/v1/environment-document/", headers, "")
		got := rec.Body.Bytes()
		if gz {
			zr, err := gzip.NewReader(bytes.NewReader(got))
			if err != nil {
				t.Fatal(err)
			}
			if got, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		} else if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(len(raw)) {
			t.Errorf("Content-Length = %s; want %d", cl, len(raw))
		}
		if rec.Code != http.StatusOK || !bytes.Equal(got, raw) {
			t.Fatalf("gzip %t: %d, %d bytes; want 200 and the %d bytes received", gz, rec.Code, len(got), len(raw))
		}
		etags = append(etags, rec.Header().Get("ETag"))
	}
	if etags[0] == "" || etags[0] != etags[1] {
		t.Errorf("ETags %q; want one, the same for both encodings", etags)
	}
	// Republishing the same bytes is recognised without the plain copy.
	before := s.environments()[0].snap.Load()
	s.publishDoc(t, demoClientKey, raw)
	if s.environments()[0].snap.Load() != before {
		t.Error("the same document was compiled and published again")
	}
}

// viewBody is the environment's flags body as the view serves it.
func viewBody(v *view) []byte {
	if v.flags.body == nil {
		zr, err := gzip.NewReader(bytes.NewReader(v.flags.gzipped))
		if err != nil {
			return nil
		}
		plain, _ := io.ReadAll(zr)
		return plain
	}
	return v.flags.body
}

// TestLargeViewServed: the client keys' flags of a large environment, held
// gzipped only, are served as the same bytes a plain body would be: plain
// with its length, gzipped, 304 on its ETag, and one flag by name; the flags
// it hides are not in them.
func TestLargeViewServed(t *testing.T) {
	s := newTestServer(t, withPairs(demoPair))
	raw := scaleDocument(t, demoDocument(t, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), "hi"), 700, 10, false)
	s.publishDoc(t, demoClientKey, raw)
	snap := s.environments()[0].snap.Load()
	v := &snap.views[clientKey]
	if v.flags.body != nil || v.base != nil {
		t.Fatal("the client view of a large document keeps its plain bytes; make the document larger")
	}
	want := "[" + string(newPlainEvaluator(t, raw).flags(t, nil, clientKey)) + "]"

	rec := callHandler(t, s.handler(), http.MethodGet, "/api/v1/flags/", withKey(demoClientKey), "")
	if rec.Code != http.StatusOK || rec.Body.String() != want {
		t.Fatalf("flags: %d, %d bytes; want the %d bytes of a plain evaluation", rec.Code, rec.Body.Len(), len(want))
	}
	if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(len(want)) {
		t.Errorf("Content-Length = %q; want %d", cl, len(want))
	}
	etag := rec.Header().Get("ETag")

	headers := withKey(demoClientKey)
	headers["Accept-Encoding"] = "gzip"
	rec = callHandler(t, s.handler(), http.MethodGet, "/api/v1/flags/", headers, "")
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(zr); err != nil || string(got) != want {
		t.Fatalf("gzipped flags: %d bytes (%v); want the %d bytes of a plain evaluation", len(got), err, len(want))
	}

	headers = withKey(demoClientKey)
	headers["If-None-Match"] = etag
	if rec = callHandler(t, s.handler(), http.MethodGet, "/api/v1/flags/", headers, ""); rec.Code != http.StatusNotModified {
		t.Errorf("If-None-Match with the ETag: %d; want 304", rec.Code)
	}

	var flags []struct {
		Feature struct {
			ID   json.Number `json:"id"`
			Name string      `json:"name"`
		} `json:"feature"`
	}
	if err := json.Unmarshal([]byte(want), &flags); err != nil || len(flags) == 0 {
		t.Fatalf("plain flags: %v", err)
	}
	hidden := 0
	for _, f := range snap.engine.features {
		if !snap.visible(&f, clientKey) {
			hidden++
			if rec := callHandler(t, s.handler(), http.MethodGet, "/api/v1/flags/?feature="+f.name, withKey(demoClientKey), ""); rec.Code != http.StatusNotFound {
				t.Errorf("?feature=%s, hidden from client keys: %d; want 404", f.name, rec.Code)
			}
		}
	}
	if hidden == 0 {
		t.Fatal("the document hides nothing from client keys")
	}
	last := flags[len(flags)-1].Feature.Name
	rec = callHandler(t, s.handler(), http.MethodGet, "/api/v1/flags/?feature="+last, withKey(demoClientKey), "")
	if got, wantFlag := rec.Body.String(), want[strings.LastIndex(want, `{"feature":{"id":`+flags[len(flags)-1].Feature.ID.String()+`,`):len(want)-1]; rec.Code != http.StatusOK || got != wantFlag {
		t.Errorf("?feature=%s: %d %s; want %s", last, rec.Code, got, wantFlag)
	}
}
