package bridge

// Test harness: every test gets its own queue topology on the real RabbitMQ, an
// httptest.Server as the step function, and a Bridge started on demand.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
)

// testAMQPURL is the broker the tests use: $STEPFLOW_TEST_AMQP_URL, or the local one.
func testAMQPURL() string {
	if u := os.Getenv("STEPFLOW_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

func dialTest(t *testing.T) *amqp.Connection {
	t.Helper()
	conn, err := amqp.DialConfig(testAMQPURL(), amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("RabbitMQ at %s does not answer: %v (these tests need a real broker; start RabbitMQ or set STEPFLOW_TEST_AMQP_URL)", testAMQPURL(), err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// request is what the fake step function received: one job's binary-mode
// CloudEvent (for a batch, as the harness split it, see setup), or with
// setupRaw the HTTP request as it came.
type request struct {
	Header http.Header
	Body   []byte
	At     time.Time
}

type testBundle struct {
	t      *testing.T
	queue  string
	conn   *amqp.Connection
	ch     *amqp.Channel // confirm mode; for the test's own publishes and gets
	srv    *httptest.Server
	reqs   chan request
	calls  atomic.Int64 // requests recorded in reqs
	cfg    Config
	bridge *Bridge

	httpCalls    atomic.Int64 // HTTP requests to the function
	httpInflight atomic.Int64 // HTTP requests being served now
	httpPeak     atomic.Int64 // most HTTP requests served at once

	stopOnce sync.Once
	cancel   context.CancelFunc
	runErr   chan error
}

// setup declares a fresh topology and a function server that records every
// POST and answers with handler. Options adjust the bridge's Config.
//
// handler speaks the one-event form (binary mode, X-Delivery-Attempt). The
// server speaks both forms: it splits a CloudEvents batch into one
// binary-mode request per event (its deliveryattempt extension as
// X-Delivery-Attempt, its traceparent as the header), records each, runs
// handler on them concurrently (in the batch request's context) and
// answers with their replies as batch results. So every test built on setup
// runs in either form; what a result cannot say (Retry-After, a malformed
// one-event reply) is tested in one form only.
func setup(t *testing.T, handler http.HandlerFunc, opts ...func(*Config)) *testBundle {
	t.Helper()
	return newBundle(t, handler, false, opts)
}

// setupRaw is setup with a handler that gets every HTTP request as it came
// (body readable again) and is recorded as such.
func setupRaw(t *testing.T, handler http.HandlerFunc, opts ...func(*Config)) *testBundle {
	t.Helper()
	return newBundle(t, handler, true, opts)
}

func newBundle(t *testing.T, handler http.HandlerFunc, raw bool, opts []func(*Config)) *testBundle {
	t.Helper()
	tb := &testBundle{
		t:     t,
		queue: "test-" + uuid.NewString(),
		reqs:  make(chan request, 1000),
	}
	tb.conn = dialTest(t)
	tb.ch = tb.openConfirmChannel()
	if err := jobqueue.DeclareTopology(tb.ch, tb.queue); err != nil {
		t.Fatalf("declare topology: %v", err)
	}
	// Runs after the bridge stops (cleanups are LIFO).
	t.Cleanup(func() { testenv.DeleteQueues(t, tb.conn, jobqueue.TopologyQueues(tb.queue)...) })

	mux := http.NewServeMux()
	mux.HandleFunc("GET /health/readiness", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		tb.httpCalls.Add(1)
		n := tb.httpInflight.Add(1)
		defer tb.httpInflight.Add(-1)
		for p := tb.httpPeak.Load(); n > p && !tb.httpPeak.CompareAndSwap(p, n); p = tb.httpPeak.Load() {
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if raw || !isBatch(r.Header) {
			tb.calls.Add(1)
			tb.reqs <- request{Header: r.Header.Clone(), Body: body, At: time.Now()}
			handler(w, r)
			return
		}
		tb.serveBatch(w, r, body, handler)
	})
	tb.srv = httptest.NewServer(mux)
	t.Cleanup(tb.srv.Close)

	tb.cfg = Config{
		AMQPURL:        testAMQPURL(),
		Queue:          tb.queue,
		FunctionURL:    tb.srv.URL + "/",
		RequestTimeout: 5 * time.Second,
		MaxAttempts:    5,
		BackoffBase:    10 * time.Millisecond,
		BackoffMax:     40 * time.Millisecond,
		ShutdownGrace:  5 * time.Second,
		Logger:         testLogger(t),
		Registerer:     prometheus.NewRegistry(),
	}
	for _, o := range opts {
		o(&tb.cfg)
	}
	b, err := New(tb.cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tb.bridge = b
	return tb
}

// serveBatch answers a batch as the function would, with handler answering
// each event as a one-event request (see setup).
func (tb *testBundle) serveBatch(w http.ResponseWriter, r *http.Request, body []byte, handler http.HandlerFunc) {
	t := tb.t
	evs := batchEvents(t, r.Header, body)
	results := make([]wire.Result, len(evs))
	var wg sync.WaitGroup
	for i, ev := range evs {
		req := httptest.NewRequestWithContext(r.Context(), http.MethodPost, r.URL.String(), nil)
		if err := cehttp.WriteRequest(r.Context(), binding.ToMessage(&ev), req); err != nil {
			t.Errorf("batch event %d as a binary-mode request: %v", i, err)
			return
		}
		req.Header.Del(cehttp.ContentLength)
		for k, v := range ev.Extensions() {
			switch k {
			case wire.DeliveryAttemptExtension:
				req.Header.Set("X-Delivery-Attempt", fmt.Sprint(v))
			case jobqueue.HeaderTraceparent:
				req.Header.Set(jobqueue.HeaderTraceparent, fmt.Sprint(v))
			}
		}
		tb.calls.Add(1)
		tb.reqs <- request{Header: req.Header.Clone(), Body: ev.Data(), At: time.Now()}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			handler(rec, req)
			results[i] = resultOf(t, rec)
		}()
	}
	wg.Wait()
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.ID()
	}
	writeResults(t, w, ids, results)
}

// resultOf says a one-event reply as a batch result.
func resultOf(t *testing.T, rec *httptest.ResponseRecorder) wire.Result {
	res := wire.Result{Status: rec.Code}
	if rec.Code < 200 || rec.Code > 299 {
		res.Error = strings.TrimSpace(rec.Body.String())
		return res
	}
	msg := cehttp.NewMessage(rec.Header(), io.NopCloser(bytes.NewReader(rec.Body.Bytes())))
	if msg.ReadEncoding() == binding.EncodingUnknown {
		if rec.Body.Len() > 0 {
			t.Errorf("the handler's reply %q cannot be said as a batch result: test it with BatchSize 1", rec.Body.String())
		}
		return res
	}
	ev, err := binding.ToEvent(context.Background(), msg)
	if err != nil || ev.Type() != EventTypeJobs {
		t.Errorf("the handler's reply (%v, %v) cannot be said as a batch result: test it with BatchSize 1", ev, err)
		return res
	}
	var data wire.Reply
	if err := json.Unmarshal(ev.Data(), &data); err != nil {
		t.Errorf("the handler's jobs reply: %v", err)
	}
	res.Jobs = data.Jobs
	return res
}

// isBatch tells a CloudEvents batch request from a one-event one.
func isBatch(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt == wire.BatchContentType
}

// batchEvents reads a batch request with sdk-go.
func batchEvents(t *testing.T, h http.Header, body []byte) []event.Event {
	t.Helper()
	msg := cehttp.NewMessage(h, io.NopCloser(bytes.NewReader(body)))
	evs, err := binding.ToEvents(context.Background(), msg, msg.BodyReader)
	if err != nil {
		t.Errorf("the function got a batch it cannot read: %v\n%s", err, body)
	}
	return evs
}

// resultEvent is the function's answer to the job with id in a batch.
func resultEvent(t *testing.T, id string, res wire.Result) event.Event {
	ev := event.New()
	ev.SetID(id)
	ev.SetType(wire.ResultEventType)
	ev.SetSource(wire.FunctionSource)
	if err := ev.SetData("application/json", res); err != nil {
		t.Error(err)
	}
	return ev
}

// writeResults answers a batch: results[i] for the job with ids[i].
func writeResults(t *testing.T, w http.ResponseWriter, ids []string, results []wire.Result) {
	evs := make([]event.Event, len(ids))
	for i, id := range ids {
		evs[i] = resultEvent(t, id, results[i])
	}
	writeEvents(t, w, evs)
}

// writeEvents answers a batch with evs as they are.
func writeEvents(t *testing.T, w http.ResponseWriter, evs []event.Event) {
	body, err := json.Marshal(evs) // the batch format is a JSON array of structured events
	if err != nil {
		t.Error(err)
		return
	}
	w.Header().Set("Content-Type", wire.BatchContentType)
	_, _ = w.Write(body)
}

// forms runs f in both request forms, as parallel subtests: a CloudEvents
// batch (the default BatchSize) and one binary-mode event per request
// (BatchSize 1). form sets the form in a Config.
func forms(t *testing.T, f func(t *testing.T, form func(*Config))) {
	for _, fm := range []struct {
		name string
		size int
	}{{"batch", DefaultBatchSize}, {"single", 1}} {
		t.Run(fm.name, func(t *testing.T) {
			t.Parallel()
			f(t, func(c *Config) { c.BatchSize = fm.size })
		})
	}
}

// single is the one-event form: BatchSize 1.
func single(c *Config) { c.BatchSize = 1 }

func (tb *testBundle) openConfirmChannel() *amqp.Channel {
	tb.t.Helper()
	ch, err := tb.conn.Channel()
	if err != nil {
		tb.t.Fatalf("open channel: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		tb.t.Fatalf("confirm mode: %v", err)
	}
	return ch
}

// start runs the bridge until the test ends (or stop) and waits until it consumes.
func (tb *testBundle) start() {
	tb.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.cancel = cancel
	tb.runErr = make(chan error, 1)
	go func() { tb.runErr <- tb.bridge.Run(ctx) }()
	tb.t.Cleanup(func() { tb.stop() })
	testenv.Eventually(tb.t, 10*time.Second, "bridge consuming", tb.bridge.Ready)
}

// stop cancels the bridge and returns what Run returned.
func (tb *testBundle) stop() error {
	tb.t.Helper()
	var err error
	tb.stopOnce.Do(func() {
		tb.cancel()
		select {
		case err = <-tb.runErr:
		case <-time.After(20 * time.Second):
			err = errors.New("Run did not return within 20s of cancel")
			tb.t.Error(err)
		}
	})
	return err
}

// publishRaw puts a message on the main queue as a foreign client would.
func (tb *testBundle) publishRaw(msg amqp.Publishing) {
	tb.t.Helper()
	testenv.PublishConfirmed(tb.t, tb.ch, tb.queue, msg)
}

func (tb *testBundle) publishJob(job wire.Job, delay time.Duration) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := jobqueue.Publish(ctx, tb.ch, tb.queue, job, delay); err != nil {
		tb.t.Fatalf("Publish: %v", err)
	}
}

// nextRequest waits for the function's next request.
func (tb *testBundle) nextRequest(timeout time.Duration) request {
	tb.t.Helper()
	select {
	case r := <-tb.reqs:
		return r
	case <-time.After(timeout):
		tb.t.Fatalf("no request to the function within %s", timeout)
		return request{}
	}
}

// get waits for a message on queue q (auto-acked).
func (tb *testBundle) get(q string, timeout time.Duration) amqp.Delivery {
	tb.t.Helper()
	return testenv.TakeMessage(tb.t, tb.ch, q, timeout)
}

// count returns the number of ready messages on q.
func (tb *testBundle) count(q string) int {
	tb.t.Helper()
	return testenv.QueueDepth(tb.t, tb.conn, q)
}

func (tb *testBundle) outcomes(outcome string) int {
	return int(metricValue(tb.t, tb.bridge.metrics.deliveries.WithLabelValues(outcome)))
}

// metricValue reads a counter or gauge (client_golang's testutil would need a
// module this repo does not require).
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	switch {
	case out.Counter != nil:
		return out.Counter.GetValue()
	case out.Gauge != nil:
		return out.Gauge.GetValue()
	}
	t.Fatalf("metric %s is neither a counter nor a gauge", m.Desc())
	return 0
}

// waitOutcome waits until the bridge has counted n deliveries with outcome.
func (tb *testBundle) waitOutcome(outcome string, n int, timeout time.Duration) {
	tb.t.Helper()
	testenv.Eventually(tb.t, timeout, "outcome "+outcome, func() bool { return tb.outcomes(outcome) >= n })
}

// stopAndAssertEmpty stops the bridge (so that anything unacked goes back to
// the queue) and checks that nothing is left on the main queue and the DLQ.
func (tb *testBundle) stopAndAssertEmpty() {
	tb.t.Helper()
	if err := tb.stop(); err != nil {
		tb.t.Fatalf("Run: %v", err)
	}
	if n := tb.count(tb.queue); n != 0 {
		tb.t.Errorf("%d message(s) left on the main queue; want the delivery acked", n)
	}
	if n := tb.count(jobqueue.DeadLetterQueue(tb.queue)); n != 0 {
		tb.t.Errorf("%d message(s) on the DLQ; want none", n)
	}
}

func headerStr(t *testing.T, h amqp.Table, key string) string {
	t.Helper()
	s, ok := jobqueue.HeaderString(h, key)
	if !ok {
		t.Fatalf("header %s missing or not a string: %#v", key, h[key])
	}
	return s
}

// closedPortURL returns an http URL on which nothing listens.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/"
}

// tcpProxy sits between the bridge and RabbitMQ so a test can cut the
// connection (the fault injection the broker itself cannot do for us).
type tcpProxy struct {
	ln       net.Listener
	target   string
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	paused   bool
	accepted atomic.Int64
	// held, while not nil, holds back what the broker sends (confirms,
	// deliveries) until it is closed (setHeld(false)) or the connection
	// is cut; what the bridge sends still flows.
	held chan struct{}
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		paused := p.paused
		p.mu.Unlock()
		if paused {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.accepted.Add(1)
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close(); c.Close() }()
		go func() { p.down(c, up); up.Close(); c.Close() }()
	}
}

// down copies what the broker sends to the bridge, holding it back while
// the proxy is held.
func (p *tcpProxy) down(c, up net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			p.mu.Lock()
			held := p.held
			p.mu.Unlock()
			if held != nil {
				<-held
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// setHeld holds back (or lets through again) what the broker sends.
func (p *tcpProxy) setHeld(held bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case held && p.held == nil:
		p.held = make(chan struct{})
	case !held && p.held != nil:
		close(p.held)
		p.held = nil
	}
}

// cut closes every proxied connection.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// setPaused makes the proxy refuse (accept and close) new connections.
func (p *tcpProxy) setPaused(paused bool) {
	p.mu.Lock()
	p.paused = paused
	p.mu.Unlock()
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newHTTPServer serves h until the test ends and returns its base URL.
func newHTTPServer(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
