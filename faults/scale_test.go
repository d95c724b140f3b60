package faults

// Scale-out cases: several bridges, each in front of its own function, on
// one queue, and several reconcilers. addPair and addReconciler start the
// processes beyond the bundle's first three; verify stops and reads them
// all.

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/testenv"
)

// pauseLogLine is what a bridge logs when it judges its function down.
const pauseLogLine = "bridge the step function does not answer: not consuming until its readiness does, handing back the deliveries held"

// stopOrder is every process of the case in the order verify stops them:
// the bridges (so nothing is consumed any more), the reconcilers, the
// functions.
func (b *bundle) stopOrder() []*proc {
	out := append([]*proc{b.br}, b.moreBridges...)
	out = append(append(out, b.rec), b.moreReconcilers...)
	return append(append(out, b.fn), b.moreFunctions...)
}

// moreDir is the log folder of the n-th set of extra processes: their
// names stay "function", "bridge" and "reconciler", which the log checks
// read, and their files apart from the first set's.
func (b *bundle) moreDir(n int) string {
	dir := filepath.Join(b.dir, "set-"+strconv.Itoa(n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	return dir
}

// addPair starts the n-th function and a bridge in front of it only, with
// the case's settings, and returns them and the bridge's HTTP address.
func (b *bundle) addPair(n int) (fn, br *proc, brAddr string) {
	t := b.t
	t.Helper()
	dir := b.moreDir(n)
	fnAddr, brAddr := freeAddr(t), freeAddr(t)
	fn = newProc(t, "function", dir, "http://"+fnAddr+"/health/readiness", b.env, "function", "--listen-address", fnAddr)
	br = newProc(t, "bridge", dir, "http://"+brAddr+"/health/readiness", b.env,
		append([]string{"bridge", "--function-url", "http://" + fnAddr + "/", "--http-address", brAddr}, bridgeArgs...)...)
	t.Cleanup(func() {
		br.signal(9, 10*time.Second)
		fn.signal(9, 10*time.Second)
	})
	fn.Start()
	br.Start()
	b.moreFunctions = append(b.moreFunctions, fn)
	b.moreBridges = append(b.moreBridges, br)
	b.moreBridgeAddrs = append(b.moreBridgeAddrs, brAddr)
	return fn, br, brAddr
}

// addReconciler starts the n-th reconciler.
func (b *bundle) addReconciler(n int) *proc {
	t := b.t
	t.Helper()
	addr := freeAddr(t)
	rec := newProc(t, "reconciler", b.moreDir(n), "http://"+addr+"/health/readiness", b.env,
		append([]string{"reconciler", "--http-address", addr}, reconcilerArgs...)...)
	t.Cleanup(func() { rec.signal(9, 10*time.Second) })
	rec.Start()
	b.moreReconcilers = append(b.moreReconcilers, rec)
	return rec
}

// scrape reads one metric without labels from the /metrics of the process
// serving it at addr.
func scrape(addr, metric string) (float64, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), metric+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in the /metrics of %s", metric, addr)
}

// readiness is the HTTP status of the readiness endpoint at addr.
func readiness(addr string) (int, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get("http://" + addr + "/health/readiness")
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// allFinal waits until every run of l has a final status, and returns how
// long that took from since.
func (b *bundle) allFinal(l *load, within time.Duration, since time.Time) time.Duration {
	t := b.t
	t.Helper()
	ids := l.ids()
	var final int
	err := testenv.Poll(b.ctx, within, 50*time.Millisecond, func() (bool, error) {
		err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM `+b.tables.Quoted().Statuses+` WHERE run_id = ANY($1) AND status <> 'running'`, ids).Scan(&final)
		return err == nil && final == len(ids), err
	})
	if err != nil {
		b.reportStuck(b.ctx, ids)
		t.Fatalf("%d of %d runs final: %v", final, len(ids), err)
	}
	return time.Since(since)
}

// Two bridges on one queue, each in front of its own function; the second
// function is killed mid-run and stays dead. Its bridge pauses (not
// ready, consumer cancelled, what it held handed back), so every run
// completes through the first pair, well within a minute, and no job is
// dead-lettered. Then the function comes back and its bridge consumes
// again.
func TestKill9OneOfTwoFunctions(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{})
	fn2, _, br2Addr := b.addPair(2)
	l := b.newLoad(runsPerCase)
	l.start()
	l.waitStarted(faultAfter)
	l.midRun("kill -9 the second function, for good")
	killed := time.Now()
	fn2.Kill9()

	if err := testenv.Poll(b.ctx, 30*time.Second, 20*time.Millisecond, func() (bool, error) {
		v, err := scrape(br2Addr, "stepflow_bridge_paused")
		return v == 1, err
	}); err != nil {
		t.Fatalf("the second bridge did not pause: %v", err)
	}
	t.Logf("the second bridge paused %s after its function was killed", time.Since(killed).Round(time.Millisecond))
	if code, err := readiness(br2Addr); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("the paused bridge's readiness: %d, %v; want 503", code, err)
	}

	l.waitAllStarted()
	took := b.allFinal(l, 90*time.Second, killed)
	t.Logf("every run final %s after the kill, through the first pair", took.Round(time.Millisecond))
	if took > 45*time.Second {
		t.Errorf("runs took %s after the kill to finish; want well within a minute", took.Round(time.Millisecond))
	}
	if code, err := readiness(br2Addr); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("the bridge in front of the dead function, after every run: readiness %d, %v; want still 503", code, err)
	}

	// The function comes back: its bridge resumes.
	fn2.Restart()
	if err := testenv.Poll(b.ctx, 30*time.Second, 20*time.Millisecond, func() (bool, error) {
		code, err := readiness(br2Addr)
		return code == http.StatusOK, err
	}); err != nil {
		t.Fatalf("the second bridge did not resume once its function answered: %v", err)
	}
	pauses, err := scrape(br2Addr, "stepflow_bridge_pauses_total")
	if err != nil || pauses < 1 {
		t.Errorf("stepflow_bridge_pauses_total of the second bridge = %g, %v; want at least 1", pauses, err)
	}
	if v, err := scrape(br2Addr, "stepflow_bridge_paused"); err != nil || v != 0 {
		t.Errorf("stepflow_bridge_paused after the function came back = %g, %v; want 0", v, err)
	}

	lg := b.verify(l, verifyOptions{}) // no dead letter at all
	if lg.count[pauseLogLine] == 0 {
		t.Errorf("no bridge logged its pause")
	}
	t.Logf("transport retries before the pause: %d connection, %d timeout; handed back or requeued: %d",
		lg.count["bridge settled retried code=connection"], lg.count["bridge settled retried code=timeout"], lg.count["bridge settled requeued"])
}

// The scale case's load: five times the others', started five times as
// fast, so that hundreds of runs are in flight when the faults come.
const (
	scaleRuns       = 1000
	scaleStartEvery = startEvery / 5
)

// Three bridges, three functions, two reconcilers, 1,000 runs; mid-way one
// bridge and one other pair's function are killed with SIGKILL and
// restarted a second later. Nothing is lost or done twice (verify), and
// the whole case stays under two minutes.
func TestScaleOut(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	b := setup(t, caseOptions{})
	_, br2, _ := b.addPair(2)
	fn3, _, _ := b.addPair(3)
	b.addReconciler(2)
	l := b.newLoad(scaleRuns)
	l.every = scaleStartEvery
	started := time.Now()
	l.start()
	l.waitStarted(scaleRuns / 2)
	l.midRun("kill -9 the second bridge and the third function")
	br2.Kill9()
	fn3.Kill9()
	hold(time.Second)
	fn3.Restart()
	br2.Restart()
	l.waitAllStarted()
	took := b.allFinal(l, 2*time.Minute, started)
	lg := b.verify(l, verifyOptions{})
	steps := lg.count["function node attempt succeeded"]
	t.Logf("%d runs final %s after the first start (%.0f runs/s, about %.0f node attempts/s); the case took %s",
		scaleRuns, took.Round(time.Millisecond), float64(scaleRuns)/took.Seconds(), float64(steps)/took.Seconds(), time.Since(begin).Round(time.Second))
	if d := time.Since(begin); d > 2*time.Minute {
		t.Errorf("the scale case took %s; keep it under two minutes", d.Round(time.Second))
	}
}
