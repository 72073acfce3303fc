package api

import (
	"crypto/tls"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// One write an answer.
//
// net/http writes an HTTP/1.1 response through a 4 KiB buffer of the
// connection, a size it does not let a server change (golang/go#13870). An
// answer whose header and body pass 4,096 bytes — a registration's or a
// rotation's (~8 KiB), a verify with its receipt (~4.4 KiB) — leaves as two
// TLS records in two system calls, and the client wakes for each. Both are
// written within microseconds, while the handler returns.
//
// CoalescingListener's connections sit below TLS (or serve plain HTTP
// behind a TLS-terminating proxy: `atr serve --insecure-http`) and hold
// what is written until net/http is done with the answer, then send it in
// one system call.
// net/http shows when it is done: after every HTTP/1.1 response it ends the
// read it ran beside the handler (a read deadline in the past), clears the
// write deadline, and then reads the next request or closes the connection.
// A connection sends what it holds whenever a write deadline is set (after
// the send under way, if one is), and whenever a read deadline is set,
// before every read and before it closes unless another goroutine is
// sending; a timer sends it coalesceDelay after the first byte held when
// nothing else did (an event stream between two events), and a write that
// brings it to coalesceMax bytes sends at once. The background read may
// also start, and send, while the handler writes: that answer then takes
// two writes, as before.
//
// HTTP/2 connections hold nothing: that server writes frames while another
// goroutine waits in Read, and sets no deadline after each. TLSConfig's
// GetConfigForClient marks a connection whose client offers "h2" — which
// the server then picks, its first choice — before the handshake writes,
// and its writes go straight through. docs/performance.md ("One write an
// answer") has the figures.

// coalesceDelay bounds how long a held byte waits when nothing sends it.
const coalesceDelay = time.Millisecond

// coalesceMax is the most a connection holds: the write that reaches it
// sends what is held, itself included, in one system call.
const coalesceMax = 32 << 10

// CoalescingListener returns ln, whose connections hold the bytes (the TLS
// records, or plain HTTP) of an HTTP/1.1 answer and send them together.
// Serve TLS over it with TLSConfig's configuration (which marks HTTP/2
// connections), or plain HTTP/1.1.
func CoalescingListener(ln net.Listener) net.Listener {
	return coalescingListener{Listener: ln, delay: coalesceDelay}
}

type coalescingListener struct {
	net.Listener
	delay time.Duration // the timer's; coalesceDelay but in tests
}

func (l coalescingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &coalescingConn{Conn: c, delay: l.delay}, nil
}

// coalescingConn is a connection below TLS, or under plain HTTP, that
// holds writes.
//
// TLS writes to it one record at a time, net/http's buffered writer (plain
// HTTP) a buffer or a large piece at a time, never two at once (tls.Conn
// and net/http serialize their writes); the timer and the deadline setters
// send from other goroutines. A piece of coalesceMax bytes or more (plain
// HTTP: a body net/http writes past its buffer in one piece) is not held:
// what is held goes first, then the piece as it is. sendMu orders the
// sends: each takes what is held under mu and writes it while holding
// sendMu, so bytes leave in the order they were written whichever
// goroutine sends them. The buffer is a scratch buffer (convert.go) and
// goes back after each send: an idle connection (a server may keep
// thousands) holds none.
type coalescingConn struct {
	net.Conn
	delay time.Duration

	through atomic.Bool // HTTP/2: writes are not held
	holding atomic.Bool // held is not empty

	sendMu       sync.Mutex   // held while a send writes to Conn
	sendingSince atomic.Int64 // when the write to Conn under way began (UnixNano); 0: none

	mu       sync.Mutex
	held     *scratch
	timer    *time.Timer
	err      error     // the first failed send; every later write returns it
	deadline time.Time // the write deadline set last
}

// passThrough stops holding writes (an HTTP/2 connection). TLSConfig calls
// it before the handshake's first write.
func (c *coalescingConn) passThrough() {
	c.send()
	c.through.Store(true)
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	if c.through.Load() {
		return c.Conn.Write(p)
	}
	if len(p) >= coalesceMax {
		return c.writeAfterHeld(p)
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if c.held == nil {
		c.held = scratchBuffer()
	}
	if len(c.held.b) == 0 {
		c.holding.Store(true)
		if c.timer == nil {
			c.timer = time.AfterFunc(c.delay, c.send)
		} else {
			c.timer.Reset(c.delay)
		}
	}
	c.held.b = append(c.held.b, p...)
	full := len(c.held.b) >= coalesceMax
	c.mu.Unlock()
	if !full {
		return len(p), nil
	}
	c.send()
	if err := c.failure(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// failure is the first failed send's error (nil: none).
func (c *coalescingConn) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// writeAfterHeld sends what is held, then p without holding it.
func (c *coalescingConn) writeAfterHeld(p []byte) (int, error) {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.sendLocked()
	if err := c.failure(); err != nil {
		return 0, err
	}
	return c.writeConn(p)
}

// writeConn writes p to Conn, with sendMu held, marking the send under way
// (SetWriteDeadline) and keeping its failure for every later write.
func (c *coalescingConn) writeConn(p []byte) (int, error) {
	c.sendingSince.Store(time.Now().UnixNano())
	n, err := c.Conn.Write(p)
	c.sendingSince.Store(0)
	if err != nil {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	return n, err
}

// send sends what is held; a failure is kept for the next write.
func (c *coalescingConn) send() {
	if !c.holding.Load() {
		return
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.sendLocked()
}

// sendLocked is send with sendMu held.
func (c *coalescingConn) sendLocked() {
	c.mu.Lock()
	buf, err := c.held, c.err
	c.held = nil
	c.holding.Store(false)
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	if buf == nil {
		return
	}
	if err == nil && len(buf.b) > 0 {
		c.writeConn(buf.b)
	}
	buf.release()
}

// sendIfFree sends what is held unless another goroutine is sending: a
// send that blocks on a peer that reads nothing must not keep a reader from
// reading or a closer from closing. What that send did not take waits for
// the timer at most.
func (c *coalescingConn) sendIfFree() {
	if c.holding.Load() && c.sendMu.TryLock() {
		c.sendLocked()
		c.sendMu.Unlock()
	}
}

func (c *coalescingConn) Read(p []byte) (int, error) {
	c.sendIfFree()
	return c.Conn.Read(p)
}

func (c *coalescingConn) SetReadDeadline(t time.Time) error {
	c.sendIfFree()
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline sends what is held under the deadline in force when it
// was written, then sets t. A send under way keeps its deadline: a later
// one, or none (net/http clears it after every answer), waits for the send
// to end. An earlier one (tls.Conn.Close gives its close_notify 5 s, then
// none) waits for a send that is quick, and applies at once to one stuck
// for more than sendStuck on a peer that reads nothing.
func (c *coalescingConn) SetWriteDeadline(t time.Time) error {
	if !c.sendMu.TryLock() {
		c.mu.Lock()
		earlier := !t.IsZero() && (c.deadline.IsZero() || t.Before(c.deadline))
		c.mu.Unlock()
		if !earlier {
			c.sendMu.Lock()
		}
		for earlier && !c.sendMu.TryLock() {
			if since := c.sendingSince.Load(); since != 0 && time.Since(time.Unix(0, since)) > sendStuck {
				if err := c.setDeadline(t); err != nil {
					return err
				}
				c.sendMu.Lock()
				break
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	defer c.sendMu.Unlock()
	c.sendLocked()
	return c.setDeadline(t)
}

// SetDeadline sets the read deadline at once and the write deadline as
// SetWriteDeadline does.
func (c *coalescingConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// sendStuck is how long a send must have been under way before an earlier
// write deadline ends it: a send to a peer that reads takes microseconds.
const sendStuck = time.Millisecond

// setDeadline sets the write deadline t and records it.
func (c *coalescingConn) setDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.Conn.SetWriteDeadline(t)
	if err == nil {
		c.deadline = t
	}
	return err
}

// Close sends what is held and closes. When another goroutine is sending
// (perhaps blocked on a peer that reads nothing) Close closes at once,
// which ends that send.
func (c *coalescingConn) Close() error {
	c.sendIfFree()
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite sends what is held, then shuts down the writing side of the
// connection when it can (a TCP connection). net/http half-closes a plain
// HTTP connection this way before it closes it after an error answer, so
// that the kernel does not reset the connection under the answer. (Over
// TLS net/http calls tls.Conn's CloseWrite instead, whose close_notify
// comes through Write.)
func (c *coalescingConn) CloseWrite() error {
	// Not send: it returns at once when nothing is held, and a send under
	// way (the timer's) holds nothing any more while it writes; this
	// waits for it.
	c.sendMu.Lock()
	c.sendLocked()
	c.sendMu.Unlock()
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// markHTTP2 is TLSConfig's GetConfigForClient: a connection from
// CoalescingListener whose client offers "h2" stops holding writes.
func markHTTP2(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if c, ok := hello.Conn.(*coalescingConn); ok && slices.Contains(hello.SupportedProtos, "h2") {
		c.passThrough()
	}
	return nil, nil
}
