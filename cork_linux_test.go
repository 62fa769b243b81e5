package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
)

// corkedState reads r's connection's TCP_CORK (-1: no connection).
func corkedState(r *http.Request) int {
	sock, _ := r.Context().Value(socketKey{}).(socket)
	raw := sock.raw
	state := -1
	if raw != nil {
		_ = raw.Control(func(fd uintptr) {
			state, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK)
		})
	}
	return state
}

// TestCorkedResponses: a body too large for net/http's connection buffer is
// written with the socket corked and leaves it uncorked, whole; a small one
// never corks it.
func TestCorkedResponses(t *testing.T) {
	large := []byte(`"` + strings.Repeat("x", 64<<10) + `"`)
	type states struct{ during, after int }
	seen := make(chan states, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := large
		if r.URL.Path == "/small" {
			body = []byte(`"small"`)
		}
		c := replyTo(nil, r).sock.cork(len(body))
		during := corkedState(r)
		_, _ = w.Write(body)
		c.release(w)
		seen <- states{during, corkedState(r)}
	}))
	srv.Config.ConnContext = connContext
	srv.Start()
	defer srv.Close()
	for _, c := range []struct {
		path         string
		body         []byte
		corkedDuring int
	}{
		{"/large", large, 1},
		{"/small", []byte(`"small"`), 0},
		{"/large", large, 1}, // the same connection, corked again
	} {
		res, err := srv.Client().Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || !bytes.Equal(got, c.body) {
			t.Fatalf("%s: %d bytes, %v; want the %d written", c.path, len(got), err, len(c.body))
		}
		if s := <-seen; s.during != c.corkedDuring || s.after != 0 {
			t.Errorf("%s: TCP_CORK %d while writing, %d after; want %d, 0", c.path, s.during, s.after, c.corkedDuring)
		}
	}
}

// TestHandlersLeaveConnectionsUncorked: whatever an endpoint writes, large
// or small, plain or gzipped, the connection is uncorked once it is done.
func TestHandlersLeaveConnectionsUncorked(t *testing.T) {
	s := benchServer(t, scaleDocument(t, benchDocument(t), 10, 10, false))
	h := s.handler()
	after := make(chan int, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		after <- corkedState(r)
	}))
	srv.Config.ConnContext = connContext
	srv.Start()
	defer srv.Close()
	key := s.environments()[0].pair
	identity := `{"identifier":"u1","traits":[{"trait_key":"plan","trait_value":"premium"}]}`
	for _, c := range []struct{ method, path, key, body string }{
		{"GET", "/api/v1/flags/", key.ClientSideKey, ""},
		{"POST", "/api/v1/identities/", key.ClientSideKey, identity},
		{"GET", "/api/v1/identities/?identifier=u2", key.ClientSideKey, ""},
		{"GET", "/api/v1/environment-document/", string(key.ServerSideKey), ""},
		{"GET", "/api/v1/flags/?feature=nope", key.ClientSideKey, ""},
	} {
		for _, gzip := range []bool{false, true} {
			req, _ := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
			req.Header.Set("X-Environment-Key", c.key)
			req.Header.Set("Content-Type", "application/json")
			if gzip {
				req.Header.Set("Accept-Encoding", "gzip")
			}
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if state := <-after; state != 0 {
				t.Errorf("%s %s (gzip %t): %d, %d bytes; TCP_CORK %d after; want 0", c.method, c.path, gzip, res.StatusCode, n, state)
			}
		}
	}
}
