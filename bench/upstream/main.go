// Command upstream is a fake Flagsmith API for the benchmark: it serves an
// environment document at GET /api/v1/environment-document/.
//
// With -copies 0 (the default) the document in -document is served as is for
// any X-Environment-Key. With -copies N it serves N distinct environments: a
// server-side key ending in "-<i>" (1 <= i <= N, e.g. "ser.bench-server-key-3")
// gets copy i of the document, in which every occurrence of the document's
// api_key is replaced by "<api_key>-<i>", its id becomes id*1000+i and its
// name gets " <i>" appended; any other key gets 401, as Flagsmith answers.
//
// If-Modified-Since at or after the document's updated_at gets 304. The
// address actually bound is printed as "listening on HOST:PORT" on stdout, so
// -addr 127.0.0.1:0 picks a free port.
//
// POST /api/v1/analytics/flags/ and /api/v2/analytics/flags/ are accepted
// and counted (GET /analytics-posts).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

type document struct {
	body    []byte
	updated time.Time // zero when the document has no parsable updated_at
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	docPath := flag.String("document", "", "environment document (JSON file)")
	copies := flag.Int("copies", 0, "serve N distinct copies keyed by the server key's \"-<i>\" suffix (0: the document for any key)")
	flag.Parse()
	if *docPath == "" {
		log.Fatal("upstream: -document is required")
	}
	raw, err := os.ReadFile(*docPath)
	if err != nil {
		log.Fatalf("upstream: %v", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		log.Fatalf("upstream: %s: %v", *docPath, err)
	}
	var apiKey string
	if err := json.Unmarshal(top["api_key"], &apiKey); err != nil || apiKey == "" {
		log.Fatalf("upstream: %s: no api_key string", *docPath)
	}

	docs := map[int]document{}
	if *copies <= 0 {
		docs[0] = newDocument(raw)
	} else {
		for i := 1; i <= *copies; i++ {
			b, err := makeCopy(top, apiKey, i)
			if err != nil {
				log.Fatalf("upstream: copy %d: %v", i, err)
			}
			docs[i] = newDocument(b)
		}
	}

	var requests atomic.Int64
	mux := http.NewServeMux()
	serve := func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, `{"detail":"method not allowed"}`, http.StatusMethodNotAllowed)
			return
		}
		key := r.Header.Get("X-Environment-Key")
		idx := 0
		if *copies > 0 {
			idx = -1
			if j := strings.LastIndexByte(key, '-'); j >= 0 {
				if n, err := strconv.Atoi(key[j+1:]); err == nil {
					idx = n
				}
			}
		}
		doc, ok := docs[idx]
		if key == "" || !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"detail":"Invalid or missing X-Environment-Key"}`))
			return
		}
		if !doc.updated.IsZero() {
			w.Header().Set("Last-Modified", doc.updated.UTC().Format(http.TimeFormat))
			if ims, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil &&
				!doc.updated.Truncate(time.Second).After(ims) {
				w.WriteHeader(http.StatusNotModified)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(doc.body)))
		_, _ = w.Write(doc.body)
	}
	mux.HandleFunc("/api/v1/environment-document/", serve)
	mux.HandleFunc("/api/v1/environment-document", serve)
	// Flag analytics forwarded by the proxy are taken as Flagsmith takes them
	// (v1 200, v2 204) and counted, so an analytics benchmark measures the
	// proxy, not its retries.
	var analyticsPosts atomic.Int64
	mux.HandleFunc("POST /api/v1/analytics/flags/", func(w http.ResponseWriter, r *http.Request) {
		analyticsPosts.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
	})
	mux.HandleFunc("POST /api/v2/analytics/flags/", func(w http.ResponseWriter, r *http.Request) {
		analyticsPosts.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/analytics-posts", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, analyticsPosts.Load())
	})
	mux.HandleFunc("/requests", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, requests.Load())
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("upstream: %v", err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(ln))
}

func newDocument(b []byte) document {
	d := document{body: b}
	var meta struct {
		UpdatedAt string `json:"updated_at"`
	}
	if json.Unmarshal(b, &meta) == nil && meta.UpdatedAt != "" {
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999", "2006-01-02 15:04:05.999999-07:00"} {
			if t, err := time.Parse(layout, meta.UpdatedAt); err == nil {
				d.updated = t
				break
			}
		}
	}
	return d
}

// makeCopy returns copy i of the document: api_key suffixed everywhere it
// occurs (identity overrides carry it too), a distinct id and name.
func makeCopy(top map[string]json.RawMessage, apiKey string, i int) ([]byte, error) {
	c := make(map[string]json.RawMessage, len(top))
	for k, v := range top {
		c[k] = v
	}
	var id int64
	if err := json.Unmarshal(top["id"], &id); err == nil {
		c["id"] = json.RawMessage(strconv.FormatInt(id*1000+int64(i), 10))
	}
	var name string
	if err := json.Unmarshal(top["name"], &name); err == nil {
		b, _ := json.Marshal(fmt.Sprintf("%s %d", name, i))
		c["name"] = b
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return bytes.ReplaceAll(b, []byte(apiKey), []byte(fmt.Sprintf("%s-%d", apiKey, i))), nil
}
