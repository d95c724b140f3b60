package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/stepflow/stepflow/internal/telemetry"
	"github.com/stepflow/stepflow/internal/wire"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Config defaults.
const (
	DefaultQueue = "flowcraft-jobs" // the Flowcraft adapter's queue
	// DefaultPrefetch, DefaultConcurrency and DefaultBatchSize go together: a
	// delivery is sent as soon as one of the Concurrency request slots is free,
	// alone if nothing else is waiting (no timer waits for a batch to fill),
	// so a lone job is as quick as ever. Under load the slots are busy and
	// deliveries wait in the prefetch; a slot that frees takes up to
	// BatchSize of them at once, so batches grow to about
	// Prefetch/Concurrency = 64 jobs, and up to Prefetch jobs run at once.
	DefaultPrefetch       = 512
	DefaultConcurrency    = 8
	DefaultBatchSize      = 64
	DefaultRequestTimeout = 25 * time.Second
	DefaultMaxAttempts    = 10
	DefaultBackoffBase    = time.Second
	DefaultBackoffMax     = 5 * time.Minute
	DefaultShutdownGrace  = 30 * time.Second
	// ReadinessPath replaces FunctionURL's path when ReadinessURL is not set
	// (the Knative func-go readiness endpoint).
	ReadinessPath = "/health/readiness"
)

const (
	reconnectBackoffBase = 200 * time.Millisecond
	reconnectBackoffMax  = 30 * time.Second
	readinessPollMax     = 5 * time.Second
	dialTimeout          = 10 * time.Second
	heartbeat            = 10 * time.Second
	// publishTimeout bounds publishing a decision (replies, retries, dead letters)
	// and waiting for its confirms; past it the delivery is requeued.
	publishTimeout = 30 * time.Second
	// maxErrorBodyBytes: how much of a non-2xx reply body is read (the reason
	// keeps MaxReasonBytes of it).
	maxErrorBodyBytes = 64 << 10
	// maxQueueNameLen leaves room for the ".delay.<ms>" suffix within AMQP's 255.
	maxQueueNameLen = 255 - len(".delay.83886080")
	// maxBatchBytes bounds a batch request's body (as eventBytes counts it),
	// half of what the function reads of one (8 MiB): a request it refuses
	// as too large (413) costs a second round, every job of the batch sent
	// again alone. A single delivery still goes alone, whatever its size.
	maxBatchBytes = 4 << 20
)

// Config configures a Bridge. Zero values take the defaults above.
type Config struct {
	AMQPURL        string        // required
	Queue          string        // default DefaultQueue
	FunctionURL    string        // required, e.g. http://127.0.0.1:8080/
	ReadinessURL   string        // default: FunctionURL with path ReadinessPath
	Prefetch       int           // AMQP prefetch (unacked deliveries held), default 256
	Concurrency    int           // requests (batches) to the function in flight at once, default 8
	RequestTimeout time.Duration // time limit of one request (one job, or a whole batch), default 25s
	MaxAttempts    int           // transport-level attempts before dead-lettering, default 10
	BackoffBase    time.Duration // transport retry backoff base, default 1s
	BackoffMax     time.Duration // transport retry backoff cap, default 5m
	ShutdownGrace  time.Duration // how long in-flight deliveries may finish on shutdown, default 30s
	Logger         *slog.Logger  // default slog.Default()
	// BatchSize bounds the deliveries sent in one request, default
	// DefaultBatchSize, at most wire.MaxBatch. Above 1 several deliveries
	// waiting together go as one CloudEvents batch
	// (application/cloudevents-batch+json), a lone one alone as a
	// binary-mode CloudEvent; 1 sends every job alone, for functions that
	// take one event per request (func-go's CloudEvents handler). A batch is
	// never waited for: it holds what has already arrived when a request
	// slot frees. Should the function refuse a batch as a whole (400, 415),
	// the bridge sends its jobs again one by one and sends no more batches
	// (it warns once); setting 1 spares that first refused request.
	BatchSize int
	// Registerer receives the bridge's metrics; nil uses a private registry.
	Registerer prometheus.Registerer
	// HTTPClient calls the function; nil builds one that follows no redirects
	// (a 3xx is the function's answer, and it is dead-lettered).
	HTTPClient *http.Client
	// PublishCopies publishes every reply job this many times (default 1).
	// Only for fault-injection tests: stepflow must absorb duplicates.
	PublishCopies int
}

// Validate fills in defaults and reports every bad field by name.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("bridge config: %s: %s", field, fmt.Sprintf(format, args...)))
	}

	if c.AMQPURL == "" {
		bad("AMQPURL", "required")
	} else if _, err := amqp.ParseURI(c.AMQPURL); err != nil {
		bad("AMQPURL", "%v", err)
	}

	if c.Queue == "" {
		c.Queue = DefaultQueue
	}
	if len(c.Queue) > maxQueueNameLen {
		bad("Queue", "longer than %d bytes", maxQueueNameLen)
	} else if _, err := url.Parse(c.Queue); err != nil { // it is the CloudEvent source
		bad("Queue", "not usable as a CloudEvent source (URI reference): %v", err)
	}

	var fn *url.URL
	if c.FunctionURL == "" {
		bad("FunctionURL", "required")
	} else if u, err := parseHTTPURL(c.FunctionURL); err != nil {
		bad("FunctionURL", "%v", err)
	} else {
		fn = u
	}
	if c.ReadinessURL == "" && fn != nil {
		r := *fn
		r.Path, r.RawPath, r.RawQuery, r.Fragment = ReadinessPath, "", "", ""
		c.ReadinessURL = r.String()
	} else if c.ReadinessURL != "" {
		if _, err := parseHTTPURL(c.ReadinessURL); err != nil {
			bad("ReadinessURL", "%v", err)
		}
	}

	positiveInt := func(field string, v *int, def, limit int) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			bad(field, "must be positive, got %d", *v)
		case *v > limit:
			bad(field, "must be at most %d, got %d", limit, *v)
		}
	}
	positiveInt("Prefetch", &c.Prefetch, DefaultPrefetch, 65535) // AMQP prefetch-count is 16 bits
	positiveInt("Concurrency", &c.Concurrency, DefaultConcurrency, 1<<20)
	positiveInt("BatchSize", &c.BatchSize, DefaultBatchSize, wire.MaxBatch)
	positiveInt("MaxAttempts", &c.MaxAttempts, DefaultMaxAttempts, 1<<20)
	positiveInt("PublishCopies", &c.PublishCopies, 1, 10)

	positiveDur := func(field string, v *time.Duration, def time.Duration) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			bad(field, "must be positive, got %s", *v)
		}
	}
	positiveDur("RequestTimeout", &c.RequestTimeout, DefaultRequestTimeout)
	positiveDur("BackoffBase", &c.BackoffBase, DefaultBackoffBase)
	positiveDur("BackoffMax", &c.BackoffMax, DefaultBackoffMax)
	positiveDur("ShutdownGrace", &c.ShutdownGrace, DefaultShutdownGrace)
	if c.BackoffBase > 0 && c.BackoffMax > 0 && c.BackoffBase > c.BackoffMax {
		bad("BackoffBase", "%s is larger than BackoffMax %s", c.BackoffBase, c.BackoffMax)
	}

	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	if c.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = max(c.Concurrency, 2)
		c.HTTPClient = &http.Client{
			Transport: t,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	return errors.Join(errs...)
}

func parseHTTPURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q: no host", s)
	}
	return u, nil
}

// Bridge consumes the job queue and calls the step function. Create it with New
// and start it with Run.
type Bridge struct {
	cfg     Config
	policy  Policy
	log     *slog.Logger
	metrics *metrics

	ready   atomic.Bool
	started atomic.Bool
	sem     chan struct{}  // one slot per request (batch) in flight, shared across reconnects
	wg      sync.WaitGroup // requests and redelays being handled
	// noBatches is set once the function has refused a batch as a batch
	// (400, 415: it takes one event per request); from then on every
	// request holds one delivery, as with BatchSize 1.
	noBatches atomic.Bool
}

// New validates cfg and returns a Bridge. It does not connect; Run does.
func New(cfg Config) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("bridge metrics: %w", err)
	}
	return &Bridge{
		cfg: cfg,
		policy: Policy{
			MaxAttempts: cfg.MaxAttempts,
			BackoffBase: cfg.BackoffBase,
			BackoffMax:  cfg.BackoffMax,
		},
		log:     cfg.Logger.With("queue", cfg.Queue),
		metrics: m,
		sem:     make(chan struct{}, cfg.Concurrency),
	}, nil
}

// Ready reports whether the bridge is connected to RabbitMQ and consuming.
func (b *Bridge) Ready() bool { return b.ready.Load() }

// Run waits for the function to be ready, then consumes until ctx is cancelled,
// reconnecting whenever the connection or a channel closes. On cancellation it
// stops consuming, lets in-flight deliveries finish within ShutdownGrace,
// requeues the rest, and returns nil. It returns an error only for a problem
// that retrying cannot fix (say, the queue exists with other arguments).
// Run may be called once.
func (b *Bridge) Run(ctx context.Context) error {
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("bridge: Run called twice")
	}
	// In-flight deliveries run on workCtx: it outlives ctx by up to ShutdownGrace
	// so that a shutdown lets them finish, and is cancelled when the grace is over.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	defer b.drain(stopWork) // deliveries left from a lost connection

	if err := b.waitFunctionReady(ctx); err != nil {
		return nil // ctx cancelled while waiting: nothing consumed, nothing to drain
	}

	backoff := reconnectBackoffBase
	for {
		started := time.Now()
		consumed, err := b.session(ctx, workCtx, stopWork)
		if ctx.Err() != nil {
			return nil
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			b.log.Error("bridge stopped", "err", err)
			return err
		}
		if consumed && time.Since(started) > reconnectBackoffMax {
			backoff = reconnectBackoffBase // it was up for a while: reconnect promptly
		}
		wait := rand.N(backoff) + backoff/2
		b.log.Warn("rabbitmq connection lost; reconnecting", "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, reconnectBackoffMax)
	}
}

// fatalError marks a setup failure that reconnecting will not fix.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// classifySetup makes err fatal when the broker refused the setup on purpose
// (access refused, precondition failed, not allowed, …) rather than the
// connection failing.
func classifySetup(err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.AccessRefused, amqp.PreconditionFailed, amqp.NotAllowed, amqp.NotImplemented:
			return &fatalError{err}
		}
	}
	return err
}

// session is one connection's life: connect, declare, consume until ctx is
// cancelled (then drain) or the connection breaks. consumed reports that the
// session got as far as consuming.
func (b *Bridge) session(ctx, workCtx context.Context, stopWork func()) (consumed bool, err error) {
	conn, err := amqp.DialConfig(b.cfg.AMQPURL, amqp.Config{
		Heartbeat:  heartbeat,
		Properties: amqp.Table{"connection_name": "stepflow-bridge " + b.cfg.Queue},
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bounds the AMQP handshake; amqp091 clears it once the connection is open.
			if err := c.SetDeadline(time.Now().Add(dialTimeout)); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
	})
	if err != nil {
		return false, fmt.Errorf("dial rabbitmq: %w", err)
	}
	defer conn.Close()

	setup, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open channel: %w", err)
	}
	if err := DeclareTopology(setup, b.cfg.Queue); err != nil {
		return false, classifySetup(err)
	}
	_ = setup.Close()

	pub, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open publish channel: %w", err)
	}
	if err := pub.Confirm(false); err != nil {
		return false, classifySetup(fmt.Errorf("confirm mode: %w", err))
	}
	cons, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open consume channel: %w", err)
	}
	if err := cons.Qos(b.cfg.Prefetch, 0, false); err != nil {
		return false, classifySetup(fmt.Errorf("qos: %w", err))
	}

	// Watch the connection and both channels; any of them closing ends the session.
	lost := make(chan struct{})
	var lostErr error
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	pubClosed := pub.NotifyClose(make(chan *amqp.Error, 1))
	consClosed := cons.NotifyClose(make(chan *amqp.Error, 1))
	consCancelled := cons.NotifyCancel(make(chan string, 1))
	go func() {
		defer close(lost)
		select {
		case e := <-connClosed:
			lostErr = fmt.Errorf("connection closed: %w", amqpErr(e))
		case e := <-pubClosed:
			lostErr = fmt.Errorf("publish channel closed: %w", amqpErr(e))
		case e := <-consClosed:
			lostErr = fmt.Errorf("consume channel closed: %w", amqpErr(e))
		case tag := <-consCancelled:
			lostErr = fmt.Errorf("broker cancelled consumer %s (queue deleted?)", tag)
		}
	}()

	tag := "stepflow-bridge-" + uuid.NewString()
	deliveries, err := cons.Consume(b.cfg.Queue, tag, false, false, false, false, nil)
	if err != nil {
		return false, classifySetup(fmt.Errorf("consume %s: %w", b.cfg.Queue, err))
	}
	b.ready.Store(true)
	defer b.ready.Store(false)
	b.log.Info("consuming", "prefetch", b.cfg.Prefetch, "concurrency", b.cfg.Concurrency, "batch_size", b.cfg.BatchSize)

	in := b.forward(deliveries)
	defer in.close()
	s := &channels{pub: pub, lost: lost}
	for {
		if batch := b.collect(ctx, workCtx, s, in); batch != nil {
			b.wg.Add(1)
			go b.handle(workCtx, s, batch)
			continue
		}
		if ctx.Err() != nil {
			b.ready.Store(false)
			b.log.Info("shutting down: consumer cancelled, draining in-flight deliveries", "grace", b.cfg.ShutdownGrace)
			b.stopConsuming(cons, tag, in)
			b.drain(stopWork)
			return true, nil
		}
		<-lost // the channel or connection closed; the watcher says why
		return true, lostErr
	}
}

func amqpErr(e *amqp.Error) error {
	if e == nil {
		return errors.New("closed")
	}
	return e
}

// channels is what a delivery handler needs from its session.
type channels struct {
	pub  *amqp.Channel
	lost <-chan struct{} // closed when the session's connection or a channel closes
}

// inbox holds the deliveries that have arrived and wait for a request slot.
// amqp091's deliveries channel is unbuffered (its queue lives in a goroutine
// of its own), so a receive that must not block sees at most the one
// delivery offered at that instant; the inbox is buffered for the whole
// prefetch, so that a slot that frees sees every delivery already there and
// takes them in one batch.
type inbox struct {
	c       chan amqp.Delivery // closed once the consumer's channel is
	stop    chan struct{}
	stopped chan struct{}
	waiting prometheus.Gauge
	// held is a delivery taken out of c that did not fit in the last batch
	// (maxBatchBytes): the next batch starts with it. Only the session's
	// goroutine uses it.
	held *amqp.Delivery
}

// forward moves deliveries into a new inbox until they end or the inbox is
// closed.
func (b *Bridge) forward(deliveries <-chan amqp.Delivery) *inbox {
	in := &inbox{
		// At most Prefetch deliveries are unacked, so the forwarder never
		// waits for room.
		c:       make(chan amqp.Delivery, b.cfg.Prefetch),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		waiting: b.metrics.waiting,
	}
	go func() {
		defer close(in.stopped)
		defer close(in.c)
		for {
			select {
			case d, ok := <-deliveries:
				if !ok {
					return
				}
				in.waiting.Inc()
				select {
				case in.c <- d:
				case <-in.stop:
					in.waiting.Dec()
					return
				}
			case <-in.stop:
				return
			}
		}
	}()
	return in
}

// received counts a delivery taken out of the inbox.
func (in *inbox) received() { in.waiting.Dec() }

// close stops the forwarder and drops what is left: deliveries of a session
// that is over die with its channel, and the broker redelivers them.
func (in *inbox) close() {
	close(in.stop)
	<-in.stopped
	if in.held != nil {
		in.held = nil
		in.received()
	}
	for range in.c {
		in.received()
	}
}

// eventBytes is about what a delivery adds to a batch request: its body
// (as base64 at worst) and the event's attributes.
func eventBytes(d amqp.Delivery) int { return len(d.Body)*4/3 + 1024 }

// collect makes the next batch: it takes a request slot first, then waits
// for the first delivery, then adds, without waiting, whatever else has
// already arrived, up to BatchSize deliveries (1 once the function has
// refused a batch) and maxBatchBytes. A delivery
// that came back before it is due goes down the delay ladder instead (no
// slot: it only republishes). It returns nil, holding no slot, once ctx is
// cancelled or the session is lost.
func (b *Bridge) collect(ctx, workCtx context.Context, s *channels, in *inbox) []amqp.Delivery {
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return nil
	case <-s.lost:
		return nil
	}
	var batch []amqp.Delivery
	if in.held != nil {
		d := *in.held
		in.held = nil
		batch = b.take(ctx, workCtx, s, in, batch, d)
	}
	for len(batch) == 0 {
		select {
		case d, ok := <-in.c:
			if !ok {
				<-b.sem
				return nil
			}
			batch = b.take(ctx, workCtx, s, in, batch, d)
		case <-ctx.Done():
			<-b.sem
			return nil
		case <-s.lost:
			<-b.sem
			return nil
		}
	}
	size := 0
	for _, d := range batch {
		size += eventBytes(d)
	}
	limit := b.cfg.BatchSize
	if b.noBatches.Load() {
		limit = 1
	}
more:
	for len(batch) < limit {
		select {
		case d, ok := <-in.c:
			if !ok {
				break more // the next collect sees the end
			}
			if size+eventBytes(d) > maxBatchBytes {
				in.held = &d // first in line for the next request
				break more
			}
			n := len(batch)
			if batch = b.take(ctx, workCtx, s, in, batch, d); len(batch) > n {
				size += eventBytes(d)
			}
		default:
			break more
		}
	}
	if ctx.Err() != nil { // shutting down: start nothing new
		for _, d := range batch {
			b.settle(d, nil, Decision{Kind: KindRequeue})
		}
		<-b.sem
		return nil
	}
	return batch
}

// take adds d, just out of the inbox, to batch, or hands it to a redelay
// when it came back before it is due.
func (b *Bridge) take(ctx, workCtx context.Context, s *channels, in *inbox, batch []amqp.Delivery, d amqp.Delivery) []amqp.Delivery {
	in.received()
	if ctx.Err() != nil { // shutting down: start nothing new
		b.settle(d, nil, Decision{Kind: KindRequeue})
		return batch
	}
	if due, ok := dueIn(d.Headers, time.Now()); ok && due > earlyTolerance {
		b.wg.Add(1)
		go b.redelay(workCtx, s, d, due)
		return batch
	}
	return append(batch, d)
}

// stopConsuming cancels the consumer and requeues deliveries that were
// prefetched but never sent.
func (b *Bridge) stopConsuming(cons *amqp.Channel, tag string, in *inbox) {
	if err := cons.Cancel(tag, false); err != nil {
		b.log.Warn("cancel consumer", "err", err)
	}
	if in.held != nil {
		d := *in.held
		in.held = nil
		in.received()
		b.settle(d, nil, Decision{Kind: KindRequeue})
	}
	for d := range in.c { // closed once the cancel is done (or the channel closes)
		in.received()
		b.settle(d, nil, Decision{Kind: KindRequeue})
	}
}

// drain waits for in-flight deliveries for ShutdownGrace, then cancels them
// (their HTTP calls end, and they are requeued) and waits for them to settle.
func (b *Bridge) drain(stopWork func()) {
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(b.cfg.ShutdownGrace)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	b.log.Warn("shutdown grace over; cancelling in-flight deliveries, they will be requeued")
	stopWork()
	<-done
}

// delivery is one delivery of a batch being handled.
type delivery struct {
	d       amqp.Delivery
	job     Job // as far as the body parses
	jobID   string
	attempt int // this transport attempt, 1-based
	log     *slog.Logger
	ctx     context.Context // carries the delivery's span
	span    trace.Span

	dec    Decision
	status int                          // the status the job was answered with, 0 for none
	dcs    []*amqp.DeferredConfirmation // what carrying dec out published
	pubErr error                        // carrying dec out failed: requeue instead
}

// handle runs one request slot's batch: POST it (a lone delivery alone in
// binary mode, else as a CloudEvents batch), decide for each delivery,
// carry the decisions out. The one-event form costs less to encode and
// decode on both sides, which shows on a lone job's latency. A batch the
// function refuses as a batch (batchRefusal) is not decided on: its
// deliveries go again one by one (resend).
func (b *Bridge) handle(ctx context.Context, s *channels, batch []amqp.Delivery) {
	defer b.wg.Done()
	defer func() { <-b.sem }()
	n := float64(len(batch))
	b.metrics.inflight.Add(n)
	defer b.metrics.inflight.Sub(n)
	b.metrics.batchSize.Observe(n)

	ds := make([]*delivery, len(batch))
	for i, d := range batch {
		ds[i] = b.begin(ctx, d, len(batch))
	}
	defer func() {
		for _, d := range ds {
			d.span.End()
		}
	}()

	if len(ds) == 1 {
		d := ds[0]
		reply := b.call(d.ctx, d.d, d.jobID, d.job, d.attempt)
		d.dec, d.status = b.policy.Decide(reply), reply.Status
	} else {
		reply := b.callBatch(ctx, ds)
		if resend, stop := batchRefusal(reply); resend {
			b.refused(reply, len(ds), stop)
			b.resend(ctx, s, ds)
			return
		}
		jobs := make([]BatchJob, len(ds))
		for i, d := range ds {
			jobs[i] = BatchJob{ID: d.jobID, Attempt: d.attempt}
		}
		for i, bd := range b.policy.DecideBatch(reply, jobs) {
			ds[i].dec, ds[i].status = bd.Decision, bd.Status
		}
	}
	b.carryOut(ctx, s, ds)
}

// refused notes that the function answered a batch of n deliveries with
// reply as a whole, refusing it as a batch; with stop, it sends no more
// batches, which it says once, at warn level, with the fix.
func (b *Bridge) refused(reply Reply, n int, stop bool) {
	reason := statusReason(reply)
	if !stop {
		b.log.Warn(fmt.Sprintf("the step function refused a CloudEvents batch of %d jobs as too large (HTTP %d: %s); sending its jobs one per request", n, reply.Status, reason),
			"status", reply.Status, "batch_size", n)
		return
	}
	if b.noBatches.CompareAndSwap(false, true) {
		b.metrics.batchesRefused.Set(1)
		b.log.Warn(fmt.Sprintf("the step function refused a CloudEvents batch (HTTP %d: %s); sending one job per request from now on — set BRIDGE_BATCH_SIZE=1 for a function that takes no batches", reply.Status, reason),
			"status", reply.Status, "batch_size", n)
	}
}

// resend sends each delivery of a refused batch again, at once, in the
// one-event form, as a lone delivery goes (with its own delivery attempt:
// the refused request was no attempt at the job), decides on its own reply
// and carries that out before sending the next. One by one, in the request
// slot the batch held, so that no more than Concurrency requests are ever
// in flight: a function that takes no batches is typically one built with
// func build, which serves one request per instance, and a burst of
// BatchSize requests per slot would only be queued there, time out and be
// retried. Carrying each decision out at once lets a job's successors go
// without waiting for the rest of the batch. A shutdown past the grace
// cancels ctx: the call fails and the delivery is requeued. Once the
// session is lost the deliveries left cannot be settled (the broker
// redelivers them), so they are not sent.
func (b *Bridge) resend(ctx context.Context, s *channels, ds []*delivery) {
	for _, d := range ds {
		select {
		case <-s.lost:
			d.dec, d.status = Decision{Kind: KindRequeue, Reason: "rabbitmq connection lost"}, 0
			b.carryOut(ctx, s, []*delivery{d})
			continue
		default:
		}
		b.metrics.batchSize.Observe(1)
		reply := b.call(d.ctx, d.d, d.jobID, d.job, d.attempt)
		d.dec, d.status = b.policy.Decide(reply), reply.Status
		b.carryOut(ctx, s, []*delivery{d})
	}
}

// begin names a delivery for logs and starts its span.
func (b *Bridge) begin(ctx context.Context, d amqp.Delivery, batchSize int) *delivery {
	job := peekJob(d.Body)
	jobID := deliveryJobID(d.MessageId, d.Body)
	made, _ := headerInt(d.Headers, HeaderAttempts)
	attempt := int(max(made, 0)) + 1
	log := b.log.With("job_id", jobID, "run_id", job.RunID, "node_id", job.NodeID,
		"attempt", max(job.Attempt, 1), "delivery_attempt", attempt)
	if b.cfg.BatchSize > 1 {
		log = log.With("batch_size", batchSize)
	}

	// Continue the run's trace: the delivery's traceparent is the parent,
	// and the function call and the next jobs carry this span's context.
	// A span per delivery, also in a batch, keeps every run's trace whole.
	ctx = telemetry.Extract(ctx, telemetry.AMQPCarrier(d.Headers))
	ctx, span := telemetry.Tracer().Start(ctx, "stepflow.bridge.deliver", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("stepflow.run_id", job.RunID), attribute.String("stepflow.node_id", job.NodeID),
			attribute.Int("stepflow.attempt", max(job.Attempt, 1)), attribute.Int("stepflow.delivery_attempt", attempt),
			attribute.Int("stepflow.batch_size", batchSize),
			attribute.String("messaging.destination.name", b.cfg.Queue)))
	return &delivery{d: d, job: job, jobID: jobID, attempt: attempt, log: log, ctx: ctx, span: span}
}

// jobEvent is the CloudEvent of one delivery, and the traceparent it carries
// ("" when none is known).
func (b *Bridge) jobEvent(ctx context.Context, d amqp.Delivery, jobID string, job Job) (event.Event, string) {
	ev := event.New()
	ev.SetID(jobID)
	ev.SetType(EventTypeJob)
	ev.SetSource(b.cfg.Queue)
	if job.RunID != "" {
		ev.SetSubject(job.RunID)
	}
	_ = ev.SetData("application/json", d.Body) // []byte is passed through unchanged
	tp := telemetry.Traceparent(ctx)
	if tp == "" {
		tp, _ = headerString(d.Headers, HeaderTraceparent) // pass through what came in
	}
	if tp != "" {
		// The function sees the event, not the HTTP request: the trace
		// context travels as the CloudEvents distributed-tracing extension.
		ev.SetExtension(HeaderTraceparent, tp)
	}
	return ev, tp
}

// call POSTs the delivery to the function as a binary-mode CloudEvent and reads
// the reply. Transport failures come back in Reply.Err.
func (b *Bridge) call(ctx context.Context, d amqp.Delivery, jobID string, job Job, attempt int) (r Reply) {
	r.Attempt = attempt
	ev, tp := b.jobEvent(ctx, d, jobID, job)

	reqCtx, done := b.request(ctx, &r)
	defer done()

	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, b.cfg.FunctionURL, nil)
	if err == nil {
		err = cehttp.WriteRequest(reqCtx, binding.ToMessage(&ev), req)
	}
	if err != nil {
		r.Err = fmt.Errorf("build request: %w", err)
		return r
	}
	req.Header.Set("X-Delivery-Attempt", strconv.Itoa(attempt))
	if tp != "" {
		req.Header.Set(HeaderTraceparent, tp)
	}
	b.do(req, &r)
	return r
}

// request starts one call to the function: its context, bounded by
// RequestTimeout, and done, which records its duration and, in r, when it
// ended and whether the bridge's own shutdown cut it short.
func (b *Bridge) request(ctx context.Context, r *Reply) (context.Context, func()) {
	reqCtx, cancel := context.WithTimeout(ctx, b.cfg.RequestTimeout)
	start := time.Now()
	return reqCtx, func() {
		cancel()
		b.metrics.request.Observe(time.Since(start).Seconds())
		r.Now = time.Now()
		r.ShuttingDown = r.Err != nil && ctx.Err() != nil
	}
}

// callBatch POSTs the deliveries to the function as a CloudEvents batch
// (structured-mode events in a JSON array) and reads the reply. Each event is
// the one call sends, plus its delivery attempt as the deliveryattempt
// extension. Transport failures come back in Reply.Err; Reply.Attempt is not
// set (every delivery has its own).
func (b *Bridge) callBatch(ctx context.Context, ds []*delivery) (r Reply) {
	events := make([]event.Event, len(ds))
	for i, d := range ds {
		ev, _ := b.jobEvent(d.ctx, d.d, d.jobID, d.job)
		ev.SetExtension(wire.DeliveryAttemptExtension, d.attempt)
		// In the structured format a JSON body goes in as JSON ("data"); one
		// that does not parse, or holds invalid UTF-8 that a JSON decoder
		// would replace, goes as "data_base64", byte for byte (the function
		// answers it 400), so that it cannot break the array around it.
		ev.DataBase64 = !json.Valid(d.d.Body) || !utf8.Valid(d.d.Body)
		events[i] = ev
	}

	reqCtx, done := b.request(ctx, &r)
	defer done()

	req, err := cehttp.NewHTTPRequestFromEvents(reqCtx, b.cfg.FunctionURL, events)
	if err != nil {
		r.Err = fmt.Errorf("build batch request: %w", err)
		return r
	}
	b.do(req, &r)
	return r
}

// do sends req and reads the reply into r: at most MaxReplyBytes of a 2xx
// body, maxErrorBodyBytes of any other.
func (b *Bridge) do(req *http.Request, r *Reply) {
	resp, err := b.cfg.HTTPClient.Do(req)
	if err != nil {
		r.Err = err
		return
	}
	defer resp.Body.Close()
	limit := int64(maxErrorBodyBytes)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		limit = MaxReplyBytes
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		r.Err = fmt.Errorf("read reply (HTTP %d): %w", resp.StatusCode, err)
		return
	}
	if int64(len(body)) > limit {
		body, r.BodyTruncated = body[:limit], true
	}
	r.Status, r.Header, r.Body = resp.StatusCode, resp.Header, body
}

// carryOut executes a batch's decisions: it publishes everything they ask
// for, pipelined on the confirm channel, then waits for all the confirms,
// then settles each delivery: ack, or requeue for a delivery whose own
// publishes failed (at-least-once: the function is idempotent per job id).
func (b *Bridge) carryOut(ctx context.Context, s *channels, ds []*delivery) {
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	now := time.Now()
	for _, d := range ds {
		d.dcs, d.pubErr = b.publishFor(pctx, s, d, now)
	}
	start := time.Now()
	waited := false
	for _, d := range ds {
		if d.pubErr != nil {
			continue
		}
		for _, dc := range d.dcs {
			if d.pubErr = waitConfirm(pctx, dc); d.pubErr != nil {
				break
			}
		}
		waited = waited || len(d.dcs) > 0
	}
	if waited {
		b.metrics.confirm.Observe(time.Since(start).Seconds())
	}
	for _, d := range ds {
		dec, log := d.dec, d.log
		if d.pubErr != nil {
			log.Error("publishing for a delivery failed; requeueing it", "decision", dec.Kind.String(), "err", d.pubErr)
			dec = Decision{Kind: KindRequeue, Reason: d.pubErr.Error()}
		}
		if d.status != 0 {
			log = log.With("status", d.status)
		}
		b.settle(d.d, log, dec)
	}
}

// publishFor publishes what d's decision asks for, without waiting for the
// confirms: the reply's jobs, a delayed retry, or a dead letter.
func (b *Bridge) publishFor(ctx context.Context, s *channels, d *delivery, now time.Time) ([]*amqp.DeferredConfirmation, error) {
	var dcs []*amqp.DeferredConfirmation
	switch dec := d.dec; dec.Kind {
	case KindPublish:
		var headers amqp.Table
		tp := telemetry.Traceparent(d.ctx)
		if tp == "" {
			tp, _ = headerString(d.d.Headers, HeaderTraceparent)
		}
		if tp != "" {
			headers = amqp.Table{HeaderTraceparent: tp} // the next steps continue the trace
		}
		for _, j := range dec.Jobs {
			for range max(1, b.cfg.PublishCopies) {
				dc, err := sendJob(ctx, s.pub, b.cfg.Queue, j.Job, time.Duration(j.DelayMs)*time.Millisecond, headers)
				if err != nil {
					return nil, err
				}
				dcs = append(dcs, dc)
			}
		}
	case KindRetry:
		msg := republishing(d.d)
		msg.Headers[HeaderAttempts] = int32(d.attempt)
		if _, ok := msg.Headers[HeaderFirstFailure]; !ok {
			msg.Headers[HeaderFirstFailure] = now.UTC().Format(time.RFC3339)
		}
		dc, err := sendDelayed(ctx, s.pub, b.cfg.Queue, msg, dec.Delay, now)
		if err != nil {
			return nil, err
		}
		dcs = append(dcs, dc)
	case KindDeadLetter:
		msg := republishing(d.d)
		msg.Headers[HeaderDeadLetterID] = uuid.NewString()
		msg.Headers[HeaderErrorCode] = dec.Code
		msg.Headers[HeaderErrorReason] = dec.Reason
		msg.Headers[HeaderAttempts] = int32(d.attempt)
		if _, ok := msg.Headers[HeaderFirstFailure]; !ok {
			msg.Headers[HeaderFirstFailure] = now.UTC().Format(time.RFC3339)
		}
		dc, err := send(ctx, s.pub, DeadLetterQueue(b.cfg.Queue), msg)
		if err != nil {
			return nil, err
		}
		dcs = append(dcs, dc)
	}
	return dcs, nil
}

// settle acks or nacks d as dec says, counts the outcome and logs it.
func (b *Bridge) settle(d amqp.Delivery, log *slog.Logger, dec Decision) {
	if log == nil {
		job := peekJob(d.Body)
		log = b.log.With("job_id", deliveryJobID(d.MessageId, d.Body), "run_id", job.RunID, "node_id", job.NodeID)
	}
	var outcome string
	var err error
	level := slog.LevelDebug
	if dec.Kind == KindRequeue {
		outcome = outcomeRequeued
		level = slog.LevelInfo
		err = d.Nack(false, true)
	} else {
		switch dec.Kind {
		case KindPublish:
			outcome = outcomeReplyPublished
		case KindAck:
			outcome = outcomeAck
		case KindRetry:
			outcome, level = outcomeRetried, slog.LevelInfo
		case KindDeadLetter:
			outcome, level = outcomeDeadLettered, slog.LevelWarn
		}
		err = d.Ack(false)
	}
	if err != nil {
		// The delivery's channel is gone; the broker redelivers the message.
		log.Warn("could not settle delivery; the broker will redeliver it", "decision", dec.Kind.String(), "err", err)
		outcome = outcomeRequeued
	}
	b.metrics.deliveries.WithLabelValues(outcome).Inc()
	attrs := []any{"outcome", outcome}
	if dec.Code != "" {
		attrs = append(attrs, "code", dec.Code)
	}
	if dec.Reason != "" {
		attrs = append(attrs, "reason", dec.Reason)
	}
	if dec.Kind == KindRetry {
		attrs = append(attrs, "delay", dec.Delay)
	}
	if dec.Kind == KindPublish {
		attrs = append(attrs, "jobs", len(dec.Jobs))
	}
	log.Log(context.Background(), level, "delivery settled", attrs...)
}

// redelay sends a delivery that came back before its due time further down the
// delay ladder, without calling the function.
func (b *Bridge) redelay(ctx context.Context, s *channels, d amqp.Delivery, remaining time.Duration) {
	defer b.wg.Done()
	b.metrics.inflight.Inc()
	defer b.metrics.inflight.Dec()

	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	msg := republishing(d) // keeps x-stepflow-due
	start := time.Now()
	dc, err := send(pctx, s.pub, redelayRoute(b.cfg.Queue, remaining), msg)
	if err == nil {
		err = waitConfirm(pctx, dc)
		b.metrics.confirm.Observe(time.Since(start).Seconds())
	}
	job := peekJob(d.Body)
	log := b.log.With("job_id", deliveryJobID(d.MessageId, d.Body), "run_id", job.RunID, "node_id", job.NodeID, "due_in", remaining)
	if err != nil {
		log.Error("redelay failed; requeueing", "err", err)
		b.settle(d, log, Decision{Kind: KindRequeue})
		return
	}
	if err := d.Ack(false); err != nil {
		log.Warn("could not ack redelayed delivery; the broker will redeliver it", "err", err)
		b.metrics.deliveries.WithLabelValues(outcomeRequeued).Inc()
		return
	}
	b.metrics.deliveries.WithLabelValues(outcomeRedelayed).Inc()
	log.Debug("delivery settled", "outcome", outcomeRedelayed)
}

// republishing copies a delivery into a message to publish again: same body,
// properties, message id and headers (the headers map is a copy). It is always
// persistent; Expiration is dropped so that only the delay buckets' TTL applies.
func republishing(d amqp.Delivery) amqp.Publishing {
	headers := maps.Clone(d.Headers)
	if headers == nil {
		headers = amqp.Table{}
	}
	return amqp.Publishing{
		Headers:         headers,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        d.Priority,
		CorrelationId:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		MessageId:       d.MessageId,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		AppId:           d.AppId,
		Body:            d.Body,
	}
}

// waitFunctionReady polls ReadinessURL until it answers 200 or ctx ends.
func (b *Bridge) waitFunctionReady(ctx context.Context) error {
	wait := 100 * time.Millisecond
	for try := 1; ; try++ {
		err := b.probeReadiness(ctx)
		if err == nil {
			b.log.Info("step function is ready", "url", b.cfg.ReadinessURL)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.log.Info("waiting for the step function to be ready", "url", b.cfg.ReadinessURL, "try", try, "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, readinessPollMax)
	}
}

func (b *Bridge) probeReadiness(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, min(b.cfg.RequestTimeout, readinessPollMax))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.cfg.ReadinessURL, nil)
	if err != nil {
		return err
	}
	resp, err := b.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}
