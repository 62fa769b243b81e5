package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// This file is what wraps every route (server.handler): metrics, the access
// log and panic recovery (observe), CORS, the header limit, and the JSON
// 404/405 of paths no route takes.

// handleUnrouted answers paths no route takes: 405 with Allow when another
// method would be served, else 404, always as JSON. OPTIONS on a served
// path is answered 204 with Allow (RFC 9110 9.3.7): Allow lists it, so it
// must not be refused; a CORS preflight never gets here (cors answers it).
func (s *server) handleUnrouted(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := s.mux.Handler(probe); pattern != "/" && pattern != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		if contains(allowed, http.MethodGet) {
			allowed = append(allowed, http.MethodHead)
		}
		allowed = append(allowed, http.MethodOptions)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("method %s is not allowed here; use %s", r.Method, strings.Join(allowed, ", ")))
		return
	}
	writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// cors answers preflight requests and marks responses readable by the
// configured origins. An origin that is not allowed gets no CORS headers.
func (s *server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		live := s.live.Load()
		allowed := live.origin == nil || live.origin[origin]
		if allowed {
			if live.origin == nil {
				h.Set("Access-Control-Allow-Origin", "*")
			} else {
				h.Set("Access-Control-Allow-Origin", origin)
				// No endpoint reads cookies or HTTP authentication: a page
				// gets credentials through only when the deployment asks.
				if live.cfg.AllowCredentials {
					h.Set("Access-Control-Allow-Credentials", "true")
				}
			}
			h.Set("Access-Control-Expose-Headers", updatedAtHeader+", ETag")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if allowed {
				h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
				if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
					h.Set("Access-Control-Allow-Headers", req)
				}
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusOK)
				return
			}
			writeError(w, http.StatusBadRequest, "bad_request", "origin not allowed")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitRequest answers headers over server.max_header_bytes with the API's
// JSON 431 (net/http's own limit, hardHeaderBytes, is set above it so that
// these reach us). Bodies are limited where they are read
// (readRequestBody), so that each API answers 413 in its own error shape.
func (s *server) limitRequest(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if limit := s.config().Server.MaxHeaderBytes; headerBytes(r) > limit {
			writeError(w, http.StatusRequestHeaderFieldsTooLarge, "request_header_fields_too_large",
				fmt.Sprintf("the request headers are over %d bytes", limit))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// headerBytes is the size of the request line and header block as sent over
// HTTP/1.1, which is what net/http's MaxHeaderBytes bounds. (HTTP/2 sends
// them compressed; the decoded size is what matters for memory.)
func headerBytes(r *http.Request) int {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2 // request line
	n += len("Host: ") + len(r.Host) + 2                              // net/http moves Host out of Header
	for name, values := range r.Header {
		for _, v := range values {
			n += len(name) + 2 + len(v) + 2
		}
	}
	return n + 2
}

// hardHeaderBytes is net/http's limit on the request line and headers: four
// times the configured limit, so that limitRequest sees and answers (with
// JSON) anything up to there. Beyond it net/http closes the connection with
// a plain-text 431 before any handler runs.
func (c ServerConfig) hardHeaderBytes() int { return 4 * c.MaxHeaderBytes }

// statusRecorder remembers the status a handler wrote, for metrics and the
// access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (sr *statusRecorder) WriteHeader(code int) {
	if sr.status == 0 {
		sr.status = code
	}
	sr.ResponseWriter.WriteHeader(code)
}

func (sr *statusRecorder) Write(b []byte) (int, error) {
	if sr.status == 0 {
		sr.status = http.StatusOK
	}
	n, err := sr.ResponseWriter.Write(b)
	sr.bytes += n
	return n, err
}

// recorders recycles statusRecorders: one per request is the only allocation
// the middleware would otherwise add to the flags path.
var recorders = sync.Pool{New: func() any { return new(statusRecorder) }}

// Unwrap lets http.ResponseController reach the connection (SSE flushes and
// deadlines).
func (sr *statusRecorder) Unwrap() http.ResponseWriter { return sr.ResponseWriter }

// observe records metrics and the access log, and turns a panic into a JSON
// 500 instead of a dropped connection (a panic is a bug, never bad input).
func (s *server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if s.stopping.Load() {
			// Draining: the client reconnects for its next request (to
			// another replica, once the load balancer has caught up) rather
			// than reuse a connection that shutdown is about to close.
			w.Header()["Connection"] = connectionClose
		}
		sr := recorders.Get().(*statusRecorder)
		*sr = statusRecorder{ResponseWriter: w}
		defer recorders.Put(sr)
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("handler panic", "path", s.loggedPath(r.URL.Path), "panic", fmt.Sprint(p))
				if sr.status == 0 {
					writeError(sr, http.StatusInternalServerError, "error", "internal error")
				}
			}
			if sr.status == 0 {
				sr.status = http.StatusOK
			}
			elapsed := time.Since(start)
			// The mux recorded the matched pattern on the request.
			s.stats.observeRequest(routeName(r.Pattern), sr.status, elapsed)
			if s.config().Logging.EnableAccessLog {
				s.log.Info("access",
					"method", r.Method, "path", s.loggedPath(r.URL.Path), "status", sr.status,
					"bytes", sr.bytes, "duration_ms", float64(elapsed.Microseconds())/1000,
					"client", s.clientAddr(r), "scheme", s.scheme(r), "user_agent", r.UserAgent())
			}
		}()
		next.ServeHTTP(sr, r)
	})
}

// streamPathPrefix begins the path of the realtime stream, whose next segment
// is a key.
const streamPathPrefix = "/sse/environments/"

// loggedPath is the request path with keys masked, so that a server key used
// in a stream URL, or pasted into any path, never reaches the log whole. A
// configured client key, which every browser holds, is kept: it names the
// environment.
func (s *server) loggedPath(path string) string {
	if !strings.HasPrefix(path, streamPathPrefix) && !strings.Contains(path, serverKeyPrefix) {
		return path // the common case: no allocation
	}
	segments := strings.Split(path, "/")
	for i, seg := range segments {
		mask := strings.HasPrefix(seg, serverKeyPrefix)
		if i == 3 && strings.HasPrefix(path, streamPathPrefix) { // "", "sse", "environments", key
			ref, known := s.lookup(seg)
			mask = mask || !known || ref.kind != clientKey
		}
		if mask {
			segments[i] = maskedKey(seg)
		}
	}
	return strings.Join(segments, "/")
}

// scheme is how the client reached us, from X-Forwarded-Proto when the
// config trusts proxy headers.
func (s *server) scheme(r *http.Request) string {
	if s.config().Server.ProxyHeaders {
		if proto := r.Header.Get("X-Forwarded-Proto"); proto != "" {
			return proto
		}
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// clientAddr is the client's address, from X-Forwarded-For when the config
// trusts proxy headers.
func (s *server) clientAddr(r *http.Request) string {
	if s.config().Server.ProxyHeaders {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			return strings.TrimSpace(first)
		}
	}
	return r.RemoteAddr
}
