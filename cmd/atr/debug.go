package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/api/client"
)

// The debug listener (--debug-listen, ATR_DEBUG_LISTEN): Go's runtime
// profiles of a running server over plain http, for performance work
// (docs/performance.md, "Reproduce"). It has no authentication, so it binds
// loopback addresses only (checked again on the bound address) and answers
// only requests whose Host is a loopback name (a web page cannot read it
// through DNS rebinding). It serves the CPU profile, the execution trace,
// the named profiles (heap, allocs, goroutine, threadcreate) and GET symbol
// lookup — not /debug/pprof/cmdline: the process's arguments are not a
// profile — and a profile or trace runs for at most debugMaxSeconds.
//
// Importing net/http/pprof also registers its handlers, cmdline among
// them, on http.DefaultServeMux. No server of ATR's serves that mux: every
// http.Server here has its own Handler (TestServeDebugListen checks the API
// and distribution listeners answer 404 under /debug/pprof/).

// debugReadHeaderTimeout bounds a debug request's header; a profile's body
// is written for as long as its seconds parameter asks (no write timeout).
const debugReadHeaderTimeout = 10 * time.Second

// debugMaxSeconds bounds a CPU profile's or an execution trace's seconds
// parameter.
const debugMaxSeconds = 60

// checkDebugListen accepts host:port whose host is a loopback IP address
// or "localhost".
func checkDebugListen(addr string) error {
	if err := checkListen(addr); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(addr)
	if !client.IsLoopbackHost(host) {
		return errors.New("must be a loopback address (127.0.0.1, ::1 or localhost): the debug listener has no authentication")
	}
	return nil
}

// debugHandler serves net/http/pprof under /debug/pprof/ to requests whose
// Host header is a loopback name; anything else is 404, a foreign Host 403.
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index) // the index and the named profiles
	mux.HandleFunc("GET /debug/pprof/cmdline", http.NotFound)
	mux.HandleFunc("GET /debug/pprof/profile", boundedSeconds(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol) // not POST: a body of addresses read whole
	mux.HandleFunc("GET /debug/pprof/trace", boundedSeconds(pprof.Trace))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if !client.IsLoopbackHost(strings.Trim(host, "[]")) {
			http.Error(w, "the debug listener answers loopback names only", http.StatusForbidden)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		mux.ServeHTTP(w, r)
	})
}

// boundedSeconds refuses a seconds parameter above debugMaxSeconds, or NaN
// (400); pprof reads the parameter itself (and takes its default for one it
// cannot parse).
func boundedSeconds(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if v := r.FormValue("seconds"); v != "" {
			if sec, err := strconv.ParseFloat(v, 64); err == nil && !(sec <= debugMaxSeconds) {
				http.Error(w, fmt.Sprintf("seconds: at most %d", debugMaxSeconds), http.StatusBadRequest)
				return
			}
		}
		h(w, r)
	}
}

// listenDebug listens on addr (checkDebugListen passed) and refuses the
// listener unless it is bound to a loopback address: "localhost" is
// resolved, and a resolver may answer otherwise.
func listenDebug(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if a, ok := ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
		ln.Close()
		return nil, fmt.Errorf("bound to %s, which is not a loopback address", ln.Addr())
	}
	return ln, nil
}

// newDebugServer returns the debug listener's server.
func newDebugServer(log logrus.FieldLogger) *http.Server {
	return &http.Server{
		Handler:           debugHandler(),
		ReadHeaderTimeout: debugReadHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          newStdLogger(log.WithField("component", "debug")),
	}
}
