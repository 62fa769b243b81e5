// Command targets writes vegeta JSON targets (one per line, for
// `vegeta attack -format=json`) for the identities endpoints, each with a
// distinct identifier, so a constant-rate run varies the identity per request
// as the wrk scripts do.
//
//	targets -mode post -url http://127.0.0.1:8000/api/v1/identities/ -key KEY -body identity-body.json -n 10000
//	targets -mode get  -url http://127.0.0.1:8000/api/v1/identities/ -key KEY -n 10000
//
// In post mode every target carries the -body document with its identifier
// replaced (traits kept as they are); in get mode the identifier goes in the
// query string. -header "Name: value" (repeatable) adds a header to every
// target.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"strings"
)

type headerFlags []string

func (h *headerFlags) String() string { return strings.Join(*h, ", ") }

func (h *headerFlags) Set(v string) error {
	if !strings.Contains(v, ":") {
		return fmt.Errorf("want \"Name: value\", got %q", v)
	}
	*h = append(*h, v)
	return nil
}

type target struct {
	Method string              `json:"method"`
	URL    string              `json:"url"`
	Body   []byte              `json:"body,omitempty"` // base64, as vegeta expects
	Header map[string][]string `json:"header"`
}

func main() {
	mode := flag.String("mode", "post", "post (JSON body) or get (?identifier=)")
	rawURL := flag.String("url", "", "endpoint URL")
	key := flag.String("key", "", "X-Environment-Key")
	bodyPath := flag.String("body", "", "identity body template (post mode)")
	n := flag.Int("n", 10000, "number of distinct identifiers")
	prefix := flag.String("prefix", "vegeta_user_", "identifier prefix")
	var headers headerFlags
	flag.Var(&headers, "header", "extra header \"Name: value\" (repeatable)")
	flag.Parse()
	if *rawURL == "" || *key == "" || *n < 1 {
		log.Fatal("targets: -url, -key and -n >= 1 are required")
	}

	var body map[string]json.RawMessage
	if *mode == "post" {
		raw, err := os.ReadFile(*bodyPath)
		if err != nil {
			log.Fatalf("targets: %v", err)
		}
		if err := json.Unmarshal(raw, &body); err != nil {
			log.Fatalf("targets: %s: %v", *bodyPath, err)
		}
	} else if *mode != "get" {
		log.Fatalf("targets: unknown -mode %q", *mode)
	}

	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for i := 0; i < *n; i++ {
		id := fmt.Sprintf("%s%d", *prefix, i)
		t := target{URL: *rawURL, Header: map[string][]string{"X-Environment-Key": {*key}}}
		for _, h := range headers {
			name, value, _ := strings.Cut(h, ":")
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			t.Header[name] = append(t.Header[name], strings.TrimSpace(value))
		}
		if *mode == "post" {
			idJSON, _ := json.Marshal(id)
			body["identifier"] = idJSON
			b, err := json.Marshal(body)
			if err != nil {
				log.Fatalf("targets: %v", err)
			}
			t.Method = http.MethodPost
			t.Body = b
			t.Header["Content-Type"] = []string{"application/json"}
		} else {
			u, err := url.Parse(*rawURL)
			if err != nil {
				log.Fatalf("targets: %v", err)
			}
			q := u.Query()
			q.Set("identifier", id)
			u.RawQuery = q.Encode()
			t.Method = http.MethodGet
			t.URL = u.String()
		}
		if err := enc.Encode(t); err != nil {
			log.Fatalf("targets: %v", err)
		}
	}
	if err := out.Flush(); err != nil {
		log.Fatalf("targets: %v", err)
	}
}
