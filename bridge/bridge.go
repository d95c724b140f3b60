package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	reconnectBackoffBase = 200 * time.Millisecond
	reconnectBackoffMax  = 30 * time.Second
	readinessPollMax     = 5 * time.Second
)

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
	pause     pause   // the function judged down: not consuming (pause.go)
	handOns   handOns // jobs handed on straight to the function (handon.go)
	instance  string  // names this bridge in headerHandedOn
	// foreignDelay: how long another bridge's copies wait (foreignCopy).
	foreignDelay time.Duration
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
		log:          cfg.Logger.With("queue", cfg.Queue),
		metrics:      m,
		sem:          make(chan struct{}, cfg.Concurrency),
		pause:        pause{request: make(chan struct{}, 1)},
		instance:     uuid.NewString(),
		foreignDelay: handOnForeignDelay,
	}, nil
}

// Ready reports whether the bridge is connected to RabbitMQ and consuming:
// not while it is paused because its function does not answer.
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

	if err := b.waitFunctionReady(ctx, nil); err != nil {
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

// waitFunctionReady polls ReadinessURL until it answers 200, or ctx ends
// or lost is closed (nil: never).
func (b *Bridge) waitFunctionReady(ctx context.Context, lost <-chan struct{}) error {
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
		case <-lost:
			t.Stop()
			return errors.New("rabbitmq session lost")
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
