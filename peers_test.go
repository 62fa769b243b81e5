package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Tests of peer relays in process: signatures, the peer-refresh handler,
// what each push queues for the peers, and the relay's sending. The three
// binaries in a network namespace are in fleet_test.go.

const testPeerSecret = "peer-secret-0123456789abcdef"

func TestPeerSignature(t *testing.T) {
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	body := []byte(`{"all":true}`)
	tests := []struct {
		reason    string
		body      []byte
		signature string
		ok        bool
	}{
		{"signed now", body, signPeerRefresh(body, testPeerSecret, now), true},
		{"signed 59 s ago: within the minute", body, signPeerRefresh(body, testPeerSecret, now.Add(-59*time.Second)), true},
		{"signed 59 s ahead: clocks differ both ways", body, signPeerRefresh(body, testPeerSecret, now.Add(59*time.Second)), true},
		{"signed 61 s ago: a replay", body, signPeerRefresh(body, testPeerSecret, now.Add(-61*time.Second)), false},
		{"signed 61 s ahead", body, signPeerRefresh(body, testPeerSecret, now.Add(61*time.Second)), false},
		{"no signature", body, "", false},
		{"another secret", body, signPeerRefresh(body, "another-secret-0123456789", now), false},
		{"another body", []byte(`{"all":false}`), signPeerRefresh(body, testPeerSecret, now), false},
		{"time changed after signing", body, strings.Replace(signPeerRefresh(body, testPeerSecret, now), "t="+strconv.FormatInt(now.Unix(), 10), "t="+strconv.FormatInt(now.Unix()+1, 10), 1), false},
		{"no time", body, "v1=" + strings.SplitN(signPeerRefresh(body, testPeerSecret, now), "v1=", 2)[1], false},
		{"MAC not hex", body, "t=" + strconv.FormatInt(now.Unix(), 10) + ",v1=zz", false},
		{"MAC cut short", body, signPeerRefresh(body, testPeerSecret, now)[:40], false},
	}
	for _, tt := range tests {
		err := verifyPeerRefresh(tt.body, tt.signature, testPeerSecret, now)
		if (err == nil) != tt.ok {
			t.Errorf("%s: verifyPeerRefresh(%q) = %v; want ok %v", tt.reason, tt.signature, err, tt.ok)
		}
	}
}

// withPeers makes the server a member of a fleet of peers.
func withPeers(peers ...string) func(*Config) {
	return func(c *Config) {
		c.Peers = peers
		c.PeerSecret = testPeerSecret
	}
}

// TestPeerRefresh: a signed relay polls the environments it names, as a
// push would, and is never relayed again; anything else polls nothing.
func TestPeerRefresh(t *testing.T) {
	withID := func(id string) docEdit { return func(doc map[string]any) { doc["id"] = json.Number(id) } }
	signed := func(body string) map[string]string {
		return map[string]string{peerSignatureHeader: signPeerRefresh([]byte(body), testPeerSecret, time.Now())}
	}
	tests := []struct {
		name        string
		disabled    bool
		body        string
		headers     map[string]string
		wantCode    int
		wantSignals []string
	}{
		{name: "every environment", body: `{"all": true}`, headers: signed(`{"all": true}`),
			wantCode: 200, wantSignals: []string{clientKeyA, clientKeyB}},
		{name: "by client key", body: `{"environments": ["` + clientKeyB + `"]}`, headers: signed(`{"environments": ["` + clientKeyB + `"]}`),
			wantCode: 200, wantSignals: []string{clientKeyB}},
		{name: "by document id", body: `{"document_ids": ["12"]}`, headers: signed(`{"document_ids": ["12"]}`),
			wantCode: 200, wantSignals: []string{clientKeyA}},
		{name: "an environment not served here", body: `{"environments": ["other"], "document_ids": ["99"]}`,
			headers: signed(`{"environments": ["other"], "document_ids": ["99"]}`), wantCode: 200},
		{name: "unsigned", body: `{"all": true}`, wantCode: 401},
		{name: "signed with another secret", body: `{"all": true}`,
			headers:  map[string]string{peerSignatureHeader: signPeerRefresh([]byte(`{"all": true}`), "another-secret-0123456789", time.Now())},
			wantCode: 401},
		{name: "replayed", body: `{"all": true}`,
			headers:  map[string]string{peerSignatureHeader: signPeerRefresh([]byte(`{"all": true}`), testPeerSecret, time.Now().Add(-2*time.Minute))},
			wantCode: 401},
		{name: "signed, not JSON", body: `all`, headers: signed(`all`), wantCode: 400},
		{name: "disabled", disabled: true, body: `{"all": true}`, headers: signed(`{"all": true}`), wantCode: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			edit := withPeers("http://127.0.0.1:1")
			if tt.disabled {
				edit = func(*Config) {}
			}
			s := newTestServer(t, edit)
			s.publishDoc(t, clientKeyA, testDocument(clientKeyA, pollerUpdatedAt, "a", withID("12")))
			s.publishDoc(t, clientKeyB, testDocument(clientKeyB, pollerUpdatedAt, "b", withID("23")))
			rec := callHandler(t, s.handler(), "POST", peerRefreshPath, tt.headers, tt.body)
			if rec.Code != tt.wantCode || !json.Valid(rec.Body.Bytes()) {
				t.Errorf("POST %s = %d %s; want %d with a JSON body", peerRefreshPath, rec.Code, rec.Body, tt.wantCode)
			}
			var got []string
			for _, key := range []string{clientKeyA, clientKeyB} {
				if len(s.env(t, key).refresh) > 0 {
					got = append(got, key)
				}
			}
			if diff := cmp.Diff(tt.wantSignals, got); diff != "" {
				t.Errorf("environments with a refresh pending (-want +got):\n%s", diff)
			}
			if p := s.fleet.take(); p != nil {
				t.Errorf("a relay received was queued to be relayed again: %+v", *p)
			}
		})
	}
}

// TestPeerRelayQueued: every kind of push queues one relay naming what the
// push named, and pushes waiting together merge into one relay.
func TestPeerRelayQueued(t *testing.T) {
	const token, secret = "queue-change-token-0123456789", "webhook-secret-0123456789"
	enabled := func(c *Config) {
		c.AdminToken = sseToken
		c.SSE.AuthenticationToken = token
		c.WebhookSecret = secret
	}
	queue := "/sse/environments/" + clientKeyA + "/queue-change"
	changeBody := `{"updated_at": "2026-11-20T10:00:00.123456+00:00"}`
	type push struct {
		path    string
		headers map[string]string
		body    string
	}
	webhook := func(env string) push {
		body := syncWebhookBody(env)
		return push{"/proxy/webhook", map[string]string{"X-Flagsmith-Signature": syncSign(secret, body)}, body}
	}
	refresh := func(query string) push {
		return push{"/proxy/refresh" + query, map[string]string{"Authorization": "Bearer " + sseToken}, ""}
	}
	queueChange := push{queue, map[string]string{"Authorization": "Token " + token}, changeBody}
	tests := []struct {
		name   string
		peers  bool
		pushes []push
		want   *peerRefresh
	}{
		{"webhook naming a document", true, []push{webhook("23")}, &peerRefresh{DocumentIDs: []string{"23"}}},
		{"webhook naming none", true, []push{webhook("null")}, &peerRefresh{All: true}},
		{"refresh of one environment", true, []push{refresh("?environment=" + clientKeyB)}, &peerRefresh{Environments: []string{clientKeyB}}},
		{"refresh of every environment", true, []push{refresh("")}, &peerRefresh{All: true}},
		{"queue-change", true, []push{queueChange}, &peerRefresh{Environments: []string{clientKeyA}}},
		{"pushes merged", true, []push{queueChange, refresh("?environment=" + clientKeyB), queueChange, webhook("23")},
			&peerRefresh{Environments: []string{clientKeyA, clientKeyB}, DocumentIDs: []string{"23"}}},
		{"refused push", true, []push{{queue, nil, changeBody}}, nil},
		{"no peers", false, []push{webhook("23"), refresh(""), queueChange}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			edits := []func(*Config){enabled}
			if tt.peers {
				edits = append(edits, withPeers("http://127.0.0.1:1"))
			}
			s := newTestServer(t, edits...)
			for _, p := range tt.pushes {
				if rec := callHandler(t, s.handler(), "POST", p.path, p.headers, p.body); rec.Code >= 500 {
					t.Fatalf("POST %s = %d", p.path, rec.Code)
				}
			}
			if diff := cmp.Diff(tt.want, s.fleet.take()); diff != "" {
				t.Errorf("relay queued (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPeerRefreshMergeBounded(t *testing.T) {
	var p peerRefresh
	for i := range maxRelayDocumentIDs {
		p.merge(peerRefresh{DocumentIDs: []string{strconv.Itoa(i)}})
	}
	if p.All || len(p.DocumentIDs) != maxRelayDocumentIDs {
		t.Fatalf("after %d ids: all %v, %d ids; want every id kept", maxRelayDocumentIDs, p.All, len(p.DocumentIDs))
	}
	p.merge(peerRefresh{DocumentIDs: []string{"one more"}})
	if !p.All || p.DocumentIDs != nil {
		t.Errorf("past %d ids: %+v; want every environment named instead", maxRelayDocumentIDs, p)
	}
}

// TestPeerTargets: a peer URL means every address of its host, once; this
// replica's own address (its listen address, or with 0.0.0.0 any address
// of its interfaces) is left out, on its own port only.
func TestPeerTargets(t *testing.T) {
	tests := []struct {
		name       string
		listen     string
		peers      []string
		want       []string
		unresolved []string
	}{
		{"own address left out", "127.0.0.2:8000",
			[]string{"http://127.0.0.2:8000", "http://127.0.0.3:8000", "http://127.0.0.2:8001"},
			[]string{"127.0.0.3:8000", "127.0.0.2:8001"}, nil},
		{"unspecified listen address: the interfaces'", "0.0.0.0:8000",
			[]string{"http://127.0.0.1:8000", "http://127.0.0.1:8001"},
			[]string{"127.0.0.1:8001"}, nil},
		{"scheme's port; an address named twice", "127.0.0.2:8000",
			[]string{"https://127.0.0.5", "http://127.0.0.5:443/", "http://[::1]"},
			[]string{"127.0.0.5:443", "[::1]:80"}, nil},
		{"a name that does not resolve", "127.0.0.2:8000",
			[]string{"http://peer.invalid:8000", "http://127.0.0.3:8000"},
			[]string{"127.0.0.3:8000"}, []string{"http://peer.invalid:8000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t)
			s.fleet.listen = netip.MustParseAddrPort(tt.listen)
			targets, unresolved := s.peerTargets(context.Background(), tt.peers)
			var got []string
			for _, target := range targets {
				got = append(got, target.addr.String())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("targets (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.unresolved, unresolved); diff != "" {
				t.Errorf("unresolved (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRelaySends: one relay round posts the signed body once to each peer
// and counts each outcome; a peer that never answers costs the round a
// second, no more.
func TestRelaySends(t *testing.T) {
	var mu sync.Mutex
	var got []string
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			err = verifyPeerRefresh(body, r.Header.Get(peerSignatureHeader), testPeerSecret, time.Now())
		}
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+" "+string(body))
		mu.Unlock()
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer ok.Close()
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer refusing.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close() // accepted by the kernel, never answered
	dead := freePort(t)

	s := newTestServer(t, withPeers(ok.URL, refusing.URL, "http://"+silent.Addr().String(),
		"http://127.0.0.1:"+strconv.Itoa(dead)))
	start := time.Now()
	s.relay(context.Background(), newPeerClient(), peerRefresh{Environments: []string{clientKeyA}})
	took := time.Since(start)
	if took < peerTimeout || took > peerTimeout+500*time.Millisecond {
		t.Errorf("the relay round took %v; want the silent peer's %v and little more", took, peerTimeout)
	}
	want := []string{"POST /proxy/peer-refresh " + `{"environments":["` + clientKeyA + `"]}`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("relays received (-want +got):\n%s", diff)
	}
	counts := map[string]uint64{}
	for i, r := range relayResults {
		counts[r] = s.fleet.relays[i].Load()
	}
	if diff := cmp.Diff(map[string]uint64{"ok": 1, "refused": 1, "timeout": 1, "unreachable": 1}, counts); diff != "" {
		t.Errorf("relay results (-want +got):\n%s", diff)
	}
}
