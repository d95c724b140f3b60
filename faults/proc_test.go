package faults

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/testenv"
)

// proc is one stepflow process under test (function, bridge or
// reconciler). Each incarnation's stdout and stderr go to their own files
// in the test's log folder, so the logs of a killed process survive it.
type proc struct {
	t        *testing.T
	name     string
	args     []string
	env      []string
	dir      string // working and log folder
	readyURL string

	mu          sync.Mutex
	cmd         *exec.Cmd
	exited      chan struct{}
	exitErr     error
	incarnation int
	logs        []string // stderr files, one per incarnation
}

func newProc(t *testing.T, name, dir, readyURL string, env []string, args ...string) *proc {
	return &proc{t: t, name: name, args: args, env: env, dir: dir, readyURL: readyURL}
}

// Start starts a new incarnation and waits until it reports ready.
func (p *proc) Start() {
	p.t.Helper()
	p.mu.Lock()
	if p.cmd != nil && !p.hasExited() {
		p.mu.Unlock()
		p.t.Fatalf("%s: already running", p.name)
	}
	p.incarnation++
	n := p.incarnation
	base := filepath.Join(p.dir, fmt.Sprintf("%s-%d", p.name, n))
	stdout, err := os.Create(base + ".stdout")
	if err != nil {
		p.mu.Unlock()
		p.t.Fatal(err)
	}
	stderr, err := os.Create(base + ".stderr")
	if err != nil {
		p.mu.Unlock()
		p.t.Fatal(err)
	}
	cmd := exec.Command(stepflowBin, p.args...)
	cmd.Dir = p.dir // no stray func-go "cfg" file is read from elsewhere
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	p.logs = append(p.logs, base+".stderr")
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		stdout.Close()
		stderr.Close()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	p.waitReady(30 * time.Second)
}

func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// waitReady polls the process's readiness endpoint until it answers 200.
func (p *proc) waitReady(within time.Duration) {
	p.t.Helper()
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	hc := &http.Client{Timeout: time.Second}
	err := testenv.Poll(p.t.Context(), within, 20*time.Millisecond, func() (bool, error) {
		select {
		case <-exited:
			p.t.Fatalf("%s exited before it was ready (%v); log tail:\n%s", p.name, p.exitErr, p.tail(40))
		default:
		}
		resp, err := hc.Get(p.readyURL)
		if err != nil {
			return false, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("readiness %s", resp.Status)
		}
		return true, nil
	})
	if err != nil {
		p.t.Fatalf("%s not ready: %v; log tail:\n%s", p.name, err, p.tail(40))
	}
}

// Kill9 sends SIGKILL and waits for the process to be gone.
func (p *proc) Kill9() {
	p.t.Helper()
	p.signal(syscall.SIGKILL, 10*time.Second)
}

// Stop sends SIGTERM and waits for a graceful exit (SIGKILL after 60 s, a
// test failure).
func (p *proc) Stop() {
	p.t.Helper()
	if !p.signal(syscall.SIGTERM, 60*time.Second) {
		p.t.Errorf("%s did not exit within 60s of SIGTERM; killed", p.name)
		p.signal(syscall.SIGKILL, 10*time.Second)
	}
	p.mu.Lock()
	err := p.exitErr
	p.mu.Unlock()
	if err != nil {
		p.t.Errorf("%s exited with %v after SIGTERM; log tail:\n%s", p.name, err, p.tail(20))
	}
}

// Restart starts the next incarnation (after Kill9 or Stop).
func (p *proc) Restart() { p.t.Helper(); p.Start() }

// signal sends sig and waits up to within for the exit; false on timeout.
func (p *proc) signal(sig syscall.Signal, within time.Duration) bool {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-exited:
		return true
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
		return true
	case <-time.After(within):
		return false
	}
}

// Pid is the current incarnation's process id (0 before the first start).
func (p *proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Logs lists the stderr files of every incarnation so far.
func (p *proc) Logs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.logs...)
}

// tail returns the last n lines of the current incarnation's stderr.
func (p *proc) tail(n int) string {
	logs := p.Logs()
	if len(logs) == 0 {
		return ""
	}
	b, _ := os.ReadFile(logs[len(logs)-1])
	lines := splitLines(string(b))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := ""
	for _, l := range lines {
		out += "  " + l + "\n"
	}
	return out
}

// freeAddr returns 127.0.0.1:<a port free right now> for a process to
// listen on. The port is below the kernel's ephemeral range (32768–60999
// here), so that no outgoing connection of the many the suite makes can
// take it between this check and the process's listen; only another
// freeAddr could, and it draws at random.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // in use
		}
		ln.Close()
		return addr
	}
	t.Fatal("no free port among 100 drawn in 20000–31999")
	return ""
}
