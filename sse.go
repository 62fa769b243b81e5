package main

import (
	"net/http"
	"sync"
	"time"
)

// hub fans realtime events out to stream subscribers, per environment. It
// runs no goroutine of its own: publishing is a non-blocking send to each
// subscriber, and a subscriber whose buffer is full is dropped rather than
// slowing the others. It is safe for concurrent use.
type hub struct {
	mu     sync.Mutex
	subs   map[string]map[*subscriber]struct{} // by client key
	count  int
	max    int
	isDown bool
	// refused counts the streams turned away because the hub was full.
	refused int
}

// subscriber is one open stream. events carries updated_at values; it is
// closed when the hub drops the subscriber or shuts down.
type subscriber struct {
	events chan string
}

// subscriberBuffer is how many events may wait for a slow reader before it
// is dropped: a reader that far behind is better served by reconnecting.
const subscriberBuffer = 8

func newHub(max int) *hub {
	return &hub{subs: map[string]map[*subscriber]struct{}{}, max: max}
}

// subscribe registers a stream; ok is false when the hub is full or down.
func (h *hub) subscribe(key string) (*subscriber, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.isDown || h.count >= h.max {
		if !h.isDown {
			h.refused++
		}
		return nil, false
	}
	sub := &subscriber{events: make(chan string, subscriberBuffer)}
	if h.subs[key] == nil {
		h.subs[key] = map[*subscriber]struct{}{}
	}
	h.subs[key][sub] = struct{}{}
	h.count++
	return sub, true
}

// unsubscribe removes a stream; it is a no-op when the hub already dropped it.
func (h *hub) unsubscribe(key string, sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[key][sub]; ok {
		delete(h.subs[key], sub)
		h.count--
		close(sub.events)
	}
}

// publish sends an environment's new updated_at to its subscribers.
func (h *hub) publish(key, updatedAt string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs[key] {
		select {
		case sub.events <- updatedAt:
		default:
			delete(h.subs[key], sub)
			h.count--
			close(sub.events)
		}
	}
}

// end closes the streams of one environment: a reload removed it.
func (h *hub) end(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs[key] {
		close(sub.events)
		h.count--
	}
	delete(h.subs, key)
}

// subscribers is the number of open streams.
func (h *hub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count
}

// refusedTotal is the number of streams refused because the hub was full.
func (h *hub) refusedTotal() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refused
}

// subscribersOf is the number of open streams of one environment.
func (h *hub) subscribersOf(key string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs[key])
}

// close ends every stream; used on shutdown.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.isDown = true
	for key, subs := range h.subs {
		for sub := range subs {
			close(sub.events)
		}
		delete(h.subs, key)
	}
	h.count = 0
}

func (h *hub) closed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.isDown
}

// streamWriteTimeout bounds one write to a stream, so a client that stopped
// reading cannot hold its goroutine forever.
const streamWriteTimeout = 10 * time.Second

// handleStream serves Server-Sent Events in the format Flagsmith's realtime
// SDK clients read: the current updated_at on connect, then one
// environment_updated event per new document, with comment heartbeats.
func (s *server) handleStream(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("client_key")
	ref, ok := s.lookup(key)
	if !ok || ref.kind != clientKey {
		writeError(w, http.StatusNotFound, "not_found", "no environment with client key "+maskedKey(key))
		return
	}
	if !s.config().SSE.Enabled {
		writeError(w, http.StatusNotFound, "not_found", "realtime streams are disabled")
		return
	}
	if r.Method == http.MethodHead {
		// A HEAD has no body to stream; answering it as a stream would hold
		// the connection forever.
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		return
	}
	sub, ok := s.hub.subscribe(key)
	if !ok {
		msg := "too many stream subscribers"
		if s.hub.closed() {
			msg = "the server is shutting down"
		}
		// A refused client reconnects later on a new connection: keeping
		// this one open would cost as much as a stream, uncapped. (Over
		// HTTP/2 the connection carries the client's other requests, and
		// "close" would make Go's server end it.)
		if r.ProtoMajor < 2 {
			w.Header().Set("Connection", "close")
		}
		writeError(w, http.StatusServiceUnavailable, "unavailable", msg)
		return
	}
	defer s.hub.unsubscribe(key, sub)
	if now, ok := s.lookup(key); !ok || now.kind != clientKey {
		// A reload removed the environment meanwhile, after ending its
		// streams (applyConfig); a stream must not outlive it.
		return
	}

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx would otherwise buffer the stream
	w.WriteHeader(http.StatusOK)

	write := func(chunk string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write([]byte(chunk)); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	event := func(updatedAt string) string {
		return "event: environment_updated\ndata: {\"updated_at\": " + updatedAt + "}\n\n"
	}
	// ?format=ofrep is the same stream in OFREP's event format (ofrep.go),
	// where a connect needs no event when the client is already current.
	ofrep := r.URL.Query().Get("format") == "ofrep"
	if ofrep {
		event = ofrepEvent
	}
	first := "retry: 3000\n\n"
	if snap := ref.env.snap.Load(); snap != nil && snap.updatedAtUnix != "" && !(ofrep && ofrepClientVersion(r) == snap.updatedAtUnix) {
		first += event(snap.updatedAtUnix)
	}
	if !write(first) {
		return
	}
	heartbeat := time.NewTicker(seconds(s.config().SSE.HeartbeatSeconds))
	defer heartbeat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case updatedAt, open := <-sub.events:
			if !open || !write(event(updatedAt)) {
				return
			}
		case <-heartbeat.C:
			if !write(": heartbeat\n\n") {
				return
			}
		}
	}
}
