//go:build linux

package main

import (
	"context"
	"net"
	"net/http"
	"syscall"
)

// A response larger than net/http's 4 KiB connection buffer leaves in two
// writes at least: the buffer (headers and the start of the body), then the
// rest. Each write is a transmission, and over loopback (a proxy beside its
// application) one that wakes the reader for a part of the response. Corking
// the socket (TCP_CORK) while the response is written sends it as one, and
// the reader is woken once: 13-19% more requests/s on the benchmark
// document's flags and identities (bench/RESULTS.md, 2026-12-07, five rounds).

// connContext keeps a plain TCP connection's descriptor in the context of
// its requests (http.Server.ConnContext); TLS connections get none.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			return context.WithValue(ctx, socketKey{}, socket{raw})
		}
	}
	return ctx
}

// minCorkedBytes is the body size from which headers and body may not fit
// in net/http's connection buffer together.
const minCorkedBytes = 3 << 10

// socket is the plain TCP connection a request came on; zero for TLS.
type socket struct{ raw syscall.RawConn }

// cork is a corked connection to uncork once the response is written.
type cork struct{ raw syscall.RawConn }

// cork corks the connection when a body of size bytes is to follow. Use it
// as `defer sock.cork(n).release(w)`.
func (s socket) cork(size int) cork {
	if size < minCorkedBytes || s.raw == nil || s.raw.Control(corkOn) != nil {
		return cork{}
	}
	return cork(s)
}

// release pushes what the response wrote into the socket and uncorks it,
// which sends it.
func (c cork) release(w http.ResponseWriter) {
	if c.raw == nil {
		return
	}
	_ = http.NewResponseController(w).Flush()
	_ = c.raw.Control(corkOff)
}

// Errors are ignored: a socket that cannot be corked sends as before, and
// the kernel sends corked data after 200 ms whatever happens.
func corkOn(fd uintptr)  { setCork(fd, 1) }
func corkOff(fd uintptr) { setCork(fd, 0) }

func setCork(fd uintptr, on int) {
	_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, on)
}
