package faults

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// proxy is a TCP proxy in front of a real service, the NATS-server way of
// injecting network faults: the processes under test connect to it, and
// Cut drops every connection and refuses new ones for a while.
type proxy struct {
	name   string
	target string
	ln     net.Listener

	mu       sync.Mutex
	conns    map[net.Conn]struct{} // both sides of every proxied connection
	cutUntil time.Time
	closed   bool
	cuts     int
	refused  int
	wg       sync.WaitGroup
}

// newProxy listens on 127.0.0.1:0 and forwards to target; it is closed
// when the test ends.
func newProxy(t *testing.T, name, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy %s: %v", name, err)
	}
	p := &proxy{name: name, target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the address clients connect to, host:port.
func (p *proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every open connection and, for d, accepts new ones only to
// close them at once; then it restores service. It returns when d is over.
// It is safe for concurrent use.
func (p *proxy) Cut(d time.Duration) {
	p.mu.Lock()
	p.cutUntil = time.Now().Add(d)
	p.cuts++
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	hold(d)
}

// Stats reports how many cuts there were and how many connections were
// refused during them.
func (p *proxy) Stats() (cuts, refused int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cuts, p.refused
}

// Close stops accepting and closes every connection.
func (p *proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	_ = p.ln.Close()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) cutNow() bool { return time.Now().Before(p.cutUntil) }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		if p.closed || p.cutNow() {
			p.refused++
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c)
	}
}

// track registers both sides of a connection unless the proxy was cut or
// closed meanwhile (the dial happens outside the lock).
func (p *proxy) track(down, up net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.cutNow() {
		p.refused++
		return false
	}
	p.conns[down] = struct{}{}
	p.conns[up] = struct{}{}
	return true
}

func (p *proxy) untrack(down, up net.Conn) {
	p.mu.Lock()
	delete(p.conns, down)
	delete(p.conns, up)
	p.mu.Unlock()
}

func (p *proxy) serve(down net.Conn) {
	defer p.wg.Done()
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = down.Close()
		return
	}
	if !p.track(down, up) {
		_ = down.Close()
		_ = up.Close()
		return
	}
	defer p.untrack(down, up)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Either side ending ends both: none of the proxied protocols
		// half-closes.
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go pipe(up, down)
	go pipe(down, up)
	<-done
	<-done
}
