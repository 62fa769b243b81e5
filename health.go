package main

import (
	"net/http"
	"time"
)

// readiness is the answer of the readiness endpoints.
type readiness struct {
	Status               string  `json:"status"`
	Reason               *string `json:"reason"`
	LastSuccessfulUpdate *string `json:"last_successful_update"`
}

const (
	reasonNotUpdated = "environment document(s) not updated."
	reasonStale      = "environment document(s) stale."
	reasonStopping   = "shutting down."
)

// readiness is ok when every environment has a document and the oldest
// last confirmation is younger than poll_frequency + grace × environments,
// as in Flagsmith's proxy. Each environment polls on its own, so "the last
// round in which all refreshed" ends at the oldest of their last successes.
func (s *server) readiness() (int, readiness) {
	live := s.live.Load() // one configuration throughout, even across a reload
	var oldest int64
	for _, env := range live.envs {
		last := env.lastSuccess.Load()
		if env.snap.Load() == nil || last == 0 {
			oldest = 0
			break
		}
		if env.compiling.Load() {
			// Its previous document is served while a new one compiles.
			last = s.now().UnixNano()
		}
		if oldest == 0 || last < oldest {
			oldest = last
		}
	}
	var when *string
	if oldest != 0 {
		t := time.Unix(0, oldest).UTC().Format(time.RFC3339Nano)
		when = &t
	}
	fail := func(reason string) (int, readiness) {
		return http.StatusServiceUnavailable, readiness{Status: "error", Reason: &reason, LastSuccessfulUpdate: when}
	}
	switch {
	case s.stopping.Load():
		// The documents are still what they were: a draining proxy says
		// when they last refreshed, only that it is leaving.
		return fail(reasonStopping)
	case when == nil:
		return fail(reasonNotUpdated)
	}
	if g := live.cfg.HealthCheck.GracePeriod; g != nil {
		limit := live.cfg.pollFrequency() + seconds(*g*float64(len(live.envs)))
		if s.now().Sub(time.Unix(0, oldest)) > limit {
			return fail(reasonStale)
		}
	}
	return http.StatusOK, readiness{Status: "ok", LastSuccessfulUpdate: when}
}

func (s *server) handleReadiness(w http.ResponseWriter, r *http.Request) {
	code, body := s.readiness()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, code, body)
}

func (s *server) handleSSEHealth(w http.ResponseWriter, r *http.Request) {
	if !s.config().SSE.Enabled || s.hub.closed() {
		writeError(w, http.StatusServiceUnavailable, "error", "the stream hub is not running")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *server) handleLiveness(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
}
