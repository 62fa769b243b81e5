//go:build !linux

package main

import (
	"context"
	"net"
	"net/http"
)

// Corking responses (cork_linux.go) is a Linux socket option; elsewhere
// responses are written as net/http writes them.

func connContext(ctx context.Context, _ net.Conn) context.Context { return ctx }

type socket struct{}

type cork struct{}

func (socket) cork(int) cork             { return cork{} }
func (cork) release(http.ResponseWriter) {}
