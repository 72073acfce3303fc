package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// cmdLag relays TCP connections from -listen to -to and holds every chunk
// it reads for -delay before writing it on, in both directions: a database
// reached across a network instead of on loopback (the round trip grows by
// about twice the delay; Go's timers on a busy 2-core VM round a sleep up to
// about a millisecond, so measure the round trip it gives — psql's \timing
// of SELECT 1 through it — and report that, not the flag).
//
//	peerbench lag -listen 127.0.0.1:5433 -to 127.0.0.1:5432 -delay 100us
func cmdLag(args []string) error {
	fs := flag.NewFlagSet("lag", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:5433", "address to accept connections on")
	to := fs.String("to", "127.0.0.1:5432", "address to relay them to")
	delay := fs.Duration("delay", 100*time.Microsecond, "how long each chunk is held, each way")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *delay < 0 {
		return fmt.Errorf("lag: want -listen, -to and a -delay of at least 0; got %q", fs.Args())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	log.Printf("lag: %s → %s, each chunk held %v each way", *listen, *to, *delay)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Go(func() { relayLagged(ctx, c, *to, *delay) })
	}
}

// relayLagged relays c to a new connection to addr until either side
// closes or ctx ends, each chunk held for delay.
func relayLagged(ctx context.Context, c net.Conn, addr string, delay time.Duration) {
	defer c.Close()
	u, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		log.Printf("lag: %v", err)
		return
	}
	defer u.Close()
	// On SIGINT or SIGTERM every relay ends, so cmdLag's wait returns.
	stop := context.AfterFunc(ctx, func() {
		c.Close()
		u.Close()
	})
	defer stop()
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				time.Sleep(delay)
				if _, err := dst.Write(buf[:n]); err != nil {
					break
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					log.Printf("lag: %v", err)
				}
				break
			}
		}
		// Wake the other direction: the relay ends when either side does.
		dst.Close()
		src.Close()
	}
	wg.Go(func() { pipe(u, c) })
	pipe(c, u)
	wg.Wait()
}
