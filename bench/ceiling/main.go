// Command ceiling is the benchmark's reference: a bare net/http server that
// answers every request with the bytes of -body and Content-Type
// application/json. The address actually bound is printed as
// "listening on HOST:PORT" on stdout, so -addr 127.0.0.1:0 picks a free port.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	bodyPath := flag.String("body", "", "file whose bytes every response carries")
	flag.Parse()
	if *bodyPath == "" {
		log.Fatal("ceiling: -body is required")
	}
	body, err := os.ReadFile(*bodyPath)
	if err != nil {
		log.Fatalf("ceiling: %v", err)
	}
	length := strconv.Itoa(len(body))
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", length)
		_, _ = w.Write(body)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("ceiling: %v", err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(ln))
}
