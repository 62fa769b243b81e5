package main

import "testing"

func TestRouteName(t *testing.T) {
	tests := []struct{ pattern, want string }{
		{"GET /api/v1/flags/{$}", "/api/v1/flags"},
		{"GET /api/v1/flags", "/api/v1/flags"},
		{"POST /api/v1/identities/{$}", "/api/v1/identities"},
		{"GET /sse/environments/{client_key}/stream", "/sse/environments/stream"},
		{"GET /sse/environments/{client_key}/stream/{$}", "/sse/environments/stream"},
		{"POST /ofrep/v1/evaluate/flags/{key...}", "/ofrep/v1/evaluate/flags/{key...}"},
		{"POST /ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags"},
		{"GET /metrics", "/metrics"},
		{"/", "unrouted"},
		{"", "unrouted"},
	}
	for _, tc := range tests {
		if got := routeName(tc.pattern); got != tc.want {
			t.Errorf("routeName(%q) = %q; want %q", tc.pattern, got, tc.want)
		}
	}
}
