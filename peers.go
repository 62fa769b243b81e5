package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// This file keeps a fleet in step. A load balancer hands a push (a webhook,
// a queue-change, POST /proxy/refresh) to one replica; that replica relays
// it once to every other replica that peers resolves to (POST
// /proxy/peer-refresh, signed with peer_secret), and each of them polls as
// if pushed and relays nothing. Pushes are hints: every replica still polls
// on its own, so a lost relay costs speed, never correctness.

// Peer relay limits.
const (
	// peerTimeout is how long a peer has to answer a relay, and a peer
	// URL's host to resolve; one that does not is skipped and counted.
	peerTimeout = time.Second
	// peerMaxAge is how far a relay's signed time may be from the
	// receiver's clock, either way. An older relay is refused as a replay;
	// a replay within it can only ask for a poll, which coalesces with the
	// others (one per environment per second).
	peerMaxAge = time.Minute
	// maxPeerTargets bounds the addresses one relay goes to.
	maxPeerTargets = 256
	// maxRelayDocumentIDs bounds the document ids a waiting relay names;
	// past it the relay names every environment.
	maxRelayDocumentIDs = 64
	// maxPeerRefreshBytes bounds a relay's body: a list of client keys.
	maxPeerRefreshBytes = 64 << 10

	peerRefreshPath     = "/proxy/peer-refresh"
	peerSignatureHeader = "X-Edge-Proxy-Signature"
)

// relayResults are the outcomes of one relay to one peer address, as
// /metrics counts them.
var relayResults = [...]string{"ok", "refused", "timeout", "unreachable"}

// peerRefresh is the body of a relay: the environments a push named, as
// every environment, by client key, or by the document id a webhook named
// (a peer may serve an environment this replica does not, during a
// rollout of a new configuration).
type peerRefresh struct {
	All          bool     `json:"all,omitempty"`
	Environments []string `json:"environments,omitempty"`
	DocumentIDs  []string `json:"document_ids,omitempty"`
}

// names reports whether the relay asks env to poll.
func (p *peerRefresh) names(env *environment) bool {
	if p.All || slices.Contains(p.Environments, env.pair.ClientSideKey) {
		return true
	}
	return slices.ContainsFunc(p.DocumentIDs, env.mayHoldDocument)
}

// merge adds q's environments to p's.
func (p *peerRefresh) merge(q peerRefresh) {
	p.All = p.All || q.All || len(p.DocumentIDs)+len(q.DocumentIDs) > maxRelayDocumentIDs
	if p.All {
		p.Environments, p.DocumentIDs = nil, nil
		return
	}
	for _, k := range q.Environments {
		if !slices.Contains(p.Environments, k) {
			p.Environments = append(p.Environments, k)
		}
	}
	for _, id := range q.DocumentIDs {
		if !slices.Contains(p.DocumentIDs, id) {
			p.DocumentIDs = append(p.DocumentIDs, id)
		}
	}
}

// fleet is this replica's part in keeping the fleet in step: the pushes
// waiting to be relayed and the relays' counters. Pushes that arrive while
// a relay is on its way merge into the next one, so a burst of pushes
// costs each peer a relay or two, not one per push. Safe for concurrent
// use; create it with newFleet.
type fleet struct {
	wake chan struct{} // buffered 1: a relay is waiting

	mu      sync.Mutex
	pending *peerRefresh // nil when nothing waits

	// listen is the address this replica serves on, set by serve before
	// any relay runs: a peer address equal to it is this replica.
	listen netip.AddrPort

	relays   [len(relayResults)]atomic.Uint64
	accepted atomic.Uint64 // relays received and acted on
	refused  atomic.Uint64 // relays received with a bad or old signature
}

func newFleet() *fleet { return &fleet{wake: make(chan struct{}, 1)} }

// relayPush queues p for the peers, if there are any. It never blocks:
// the push's handler answers at once, and the relay goes out from
// runRelays.
func (s *server) relayPush(p peerRefresh) {
	if len(s.config().Peers) == 0 {
		return
	}
	f := s.fleet
	f.mu.Lock()
	if f.pending == nil {
		f.pending = &peerRefresh{}
	}
	f.pending.merge(p)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// take returns the waiting relay, nil if none.
func (f *fleet) take() *peerRefresh {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pending
	f.pending = nil
	return p
}

// runRelays sends queued relays, one round at a time, until ctx ends.
func (s *server) runRelays(ctx context.Context, client *http.Client) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.fleet.wake:
		}
		if p := s.fleet.take(); p != nil {
			s.relay(ctx, client, *p)
		}
	}
}

// newPeerClient is the client relays are sent with. It does not verify the
// peer's certificate: a relay is authenticated by its signature, carries
// only client keys (public) and document ids, and certificates inside a
// cluster rarely name the peers' host or chain to a public root. It never
// goes through HTTP(S)_PROXY (peers are local), never follows a redirect,
// and opens a connection per relay, since the addresses behind a peer's
// name change as replicas come and go.
func newPeerClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// relay sends p to every peer address but this replica's, all at once, and
// returns when each has answered or had its second.
func (s *server) relay(ctx context.Context, client *http.Client, p peerRefresh) {
	cfg := s.config()
	if len(cfg.Peers) == 0 || cfg.PeerSecret == "" {
		return
	}
	body, err := json.Marshal(p)
	if err != nil {
		return
	}
	signature := signPeerRefresh(body, cfg.PeerSecret, s.now())
	targets, unresolved := s.peerTargets(ctx, cfg.Peers)
	for range unresolved {
		s.fleet.observeRelay("unreachable")
	}
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Go(func() { s.fleet.observeRelay(s.sendRelay(ctx, client, t, body, signature)) })
	}
	wg.Wait()
	s.log.Debug("push relayed", "peers", len(targets), "unresolved", unresolved)
}

// peerTarget is one address to relay to, and the peer URL it came from.
type peerTarget struct {
	peer *url.URL
	addr netip.AddrPort
}

// peerTargets resolves every peer URL now (replicas come and go) into the
// addresses to relay to, this replica's own left out, and names the peers
// whose host did not resolve within peerTimeout.
func (s *server) peerTargets(ctx context.Context, peers []string) (targets []peerTarget, unresolved []string) {
	own := s.fleet.ownAddresses()
	resolved := make([][]netip.Addr, len(peers))
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, raw := range peers {
		wg.Go(func() { resolved[i], errs[i] = resolvePeer(ctx, raw) })
	}
	wg.Wait()
	seen := map[netip.AddrPort]bool{}
	for i, raw := range peers {
		if errs[i] != nil {
			s.log.Warn("peer not resolved; skipped", "peer", maskURL(raw), "error", errs[i].Error())
			unresolved = append(unresolved, raw)
			continue
		}
		u, _ := url.Parse(raw) // validated
		port := peerPort(u)
		for _, ip := range resolved[i] {
			ap := netip.AddrPortFrom(ip.Unmap(), port)
			if seen[ap] || (ap.Port() == own.port && slices.Contains(own.addrs, ap.Addr())) {
				continue
			}
			seen[ap] = true
			if len(targets) < maxPeerTargets {
				targets = append(targets, peerTarget{peer: u, addr: ap})
			}
		}
	}
	return targets, unresolved
}

// resolvePeer is the addresses of a peer URL's host: the host itself when
// it is an address, else every address its name resolves to now.
func resolvePeer(ctx context.Context, raw string) ([]netip.Addr, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil {
		return []netip.Addr{ip}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	return net.DefaultResolver.LookupNetIP(ctx, "ip", u.Hostname())
}

// peerPort is the port a peer URL names, or its scheme's.
func peerPort(u *url.URL) uint16 {
	if p, err := strconv.ParseUint(u.Port(), 10, 16); err == nil {
		return uint16(p)
	}
	if u.Scheme == "https" {
		return 443
	}
	return 80
}

// ownAddresses are the addresses this replica is reached at: its listen
// address, or for an unspecified one (0.0.0.0, ::) every address of its
// interfaces, such as a pod's IP.
type ownAddresses struct {
	addrs []netip.Addr
	port  uint16
}

func (f *fleet) ownAddresses() ownAddresses {
	own := ownAddresses{port: f.listen.Port()}
	if ip := f.listen.Addr().Unmap(); ip.IsValid() && !ip.IsUnspecified() {
		own.addrs = []netip.Addr{ip}
		return own
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return own
	}
	for _, a := range ifaddrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				own.addrs = append(own.addrs, ip.Unmap())
			}
		}
	}
	return own
}

// sendRelay posts one relay to one address and says how it went.
func (s *server) sendRelay(ctx context.Context, client *http.Client, t peerTarget, body []byte, signature string) string {
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	u := *t.peer
	u.Host = t.addr.String()
	u.Path = strings.TrimRight(u.Path, "/") + peerRefreshPath
	u.RawPath = ""
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return "unreachable"
	}
	// The peer's name, as a load balancer in front of it would expect.
	req.Host = t.peer.Host
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(peerSignatureHeader, signature)
	req.Header.Set("User-Agent", "flagsmith-edge-proxy/"+version)
	resp, err := client.Do(req)
	if err != nil {
		result := "unreachable"
		if errors.Is(err, context.DeadlineExceeded) {
			result = "timeout"
		}
		s.log.Warn("peer relay failed; skipped", "peer", t.addr.String(), "result", result, "error", err.Error())
		return result
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		s.log.Warn("peer refused relay", "peer", t.addr.String(), "status", resp.StatusCode)
		return "refused"
	}
	return "ok"
}

func (f *fleet) observeRelay(result string) {
	if i := slices.Index(relayResults[:], result); i >= 0 {
		f.relays[i].Add(1)
	}
}

// handlePeerRefresh takes a relay from a peer: signed with peer_secret,
// recent, naming environments. Each one it names polls as if pushed
// (coalescing with every other push). It is never relayed again: the
// sender has reached every peer itself, and relaying on would loop.
func (s *server) handlePeerRefresh(w http.ResponseWriter, r *http.Request) {
	cfg := s.config()
	if cfg.PeerSecret == "" {
		writeError(w, http.StatusNotFound, "not_found", "peer refreshes are disabled: set peer_secret to enable them")
		return
	}
	body, err := readRequestBody(w, r, maxPeerRefreshBytes, nil)
	if err != nil {
		writeRequestError(w, err)
		return
	}
	if err := verifyPeerRefresh(body, r.Header.Get(peerSignatureHeader), cfg.PeerSecret, s.now()); err != nil {
		s.fleet.refused.Add(1)
		s.log.Debug("peer refresh refused", "remote", r.RemoteAddr, "reason", err.Error())
		writeError(w, http.StatusUnauthorized, "unauthorized", peerSignatureHeader+": "+err.Error())
		return
	}
	var p peerRefresh
	if err := json.Unmarshal(body, &p); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", `the body must be {"all": true} or {"environments": ["<client key>", …]} or {"document_ids": ["<id>", …]}`)
		return
	}
	triggered := []string{}
	for _, env := range s.environments() {
		if p.names(env) {
			env.triggerRefresh()
			triggered = append(triggered, env.pair.ClientSideKey)
		}
	}
	s.fleet.accepted.Add(1)
	writeJSON(w, http.StatusOK, map[string]any{"status": "accepted", "environments": triggered})
}

// signPeerRefresh is a relay's signature header: the time it was signed
// and the hex HMAC-SHA256 under the peer secret of "<time>.<body>", so
// that neither can be changed and a relay cannot be replayed later.
func signPeerRefresh(body []byte, key secret, at time.Time) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(peerMAC(key, ts, body))
}

func peerMAC(key secret, ts string, body []byte) []byte {
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}

// verifyPeerRefresh checks a relay's signature header against its body,
// in constant time, and its age against now.
func verifyPeerRefresh(body []byte, header string, key secret, now time.Time) error {
	if header == "" {
		return errors.New("missing; relays are signed with peer_secret")
	}
	var ts, sig string
	for field := range strings.SplitSeq(header, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(field), "=")
		switch name {
		case "t":
			ts = value
		case "v1":
			sig = value
		}
	}
	at, err := strconv.ParseInt(ts, 10, 64)
	got, hexErr := hex.DecodeString(sig)
	if err != nil || hexErr != nil || len(got) != sha256.Size {
		return errors.New("malformed; want t=<unix seconds>,v1=<hex HMAC-SHA256>")
	}
	if !hmac.Equal(got, peerMAC(key, ts, body)) {
		return errors.New("does not match the body under peer_secret")
	}
	if age := now.Sub(time.Unix(at, 0)); age > peerMaxAge || age < -peerMaxAge {
		return fmt.Errorf("signed %s from now, outside the %s a relay is accepted for", age.Round(time.Second), peerMaxAge)
	}
	return nil
}

// writePeerMetrics appends the relay counters to /metrics.
func (s *server) writePeerMetrics(b *bytes.Buffer) {
	f := s.fleet
	fmt.Fprintf(b, "# HELP edge_proxy_peer_relays_total Pushes relayed to peer addresses by result: ok, refused (the peer answered non-2xx), timeout (no answer within a second), unreachable (refused connection or unresolved name).\n# TYPE edge_proxy_peer_relays_total counter\n")
	for i, result := range relayResults {
		fmt.Fprintf(b, "edge_proxy_peer_relays_total{result=%s} %d\n", label(result), f.relays[i].Load())
	}
	fmt.Fprintf(b, "# HELP edge_proxy_peer_refreshes_total Relays received from peers by result: accepted, or refused for a bad or old signature.\n# TYPE edge_proxy_peer_refreshes_total counter\n")
	fmt.Fprintf(b, "edge_proxy_peer_refreshes_total{result=\"accepted\"} %d\n", f.accepted.Load())
	fmt.Fprintf(b, "edge_proxy_peer_refreshes_total{result=\"refused\"} %d\n", f.refused.Load())
}
