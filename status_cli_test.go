package main

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestStatusCommand runs `edge-proxy status` against a serving proxy: a
// table of every environment, exit 0 while all are ok, 1 once one is
// stale (naming it and why), 2 when the status cannot be read.
func TestStatusCommand(t *testing.T) {
	s := newTestServer(t, withAdminToken)
	s.publishDoc(t, clientKeyA, testDocument(clientKeyA, "2026-11-20T10:00:00Z", "blue", withName("Alpha")))
	s.publishDoc(t, clientKeyB, testDocument(clientKeyB, "2026-11-20T10:00:00Z", "blue", withName("Beta")))
	srv := httptest.NewServer(s.handler())
	t.Cleanup(srv.Close)

	status := func(env map[string]string, args ...string) (string, error) {
		t.Helper()
		out, _, err := e2eRun(t, t.Context(), env, append([]string{"status"}, args...)...)
		return out, err
	}
	out, err := status(nil, "-url", srv.URL, "-token", statusToken)
	if err != nil {
		t.Fatalf("status with every environment ok = %v; want nil\n%s", err, out)
	}
	for _, want := range []string{"ENVIRONMENT", "Alpha", "Beta", "OK", "configuration generation 1", "not serving HTTPS"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}

	s.env(t, clientKeyB).status.setLastPoll(pollRecord{at: s.now(), httpStatus: 503, err: errBoom})
	// The token from the environment, as inside the proxy's container.
	out, err = status(map[string]string{"ADMIN_TOKEN": statusToken}, "-url", srv.URL)
	if err == nil || exitCode(err) != 1 {
		t.Errorf("status with a stale environment = %v (exit %d); want exit 1", err, exitCode(err))
	}
	if !strings.Contains(out, "STALE") || !strings.Contains(out, "Beta") || !strings.Contains(out, "boom: the upstream is down") {
		t.Errorf("status output with B stale lacks the stale mark or its error:\n%s", out)
	}

	if _, err := status(nil, "-url", srv.URL, "-token", "wrong"); err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "401") {
		t.Errorf("status with a wrong token = %v (exit %d); want exit 2 naming the 401", err, exitCode(err))
	}
}
