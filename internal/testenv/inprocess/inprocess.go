// Package inprocess runs stepflow's services in the caller's process, over
// a table set, a queue topology and a Redis key prefix of their own: a
// step function served over httptest, a bridge consuming the queue, and a
// reconciler passing every ReconcileEvery (so dead letters are recorded
// and their runs failed, as `stepflow dev` does). Tests and runnable
// examples drive real runs through it with a client of those tables and
// that queue; Close stops the services and removes what they created.
//
// It is imported by tests only. It imports function, bridge and
// reconciler, so those packages' own tests can use it only from their
// external test packages (package x_test); e2e/harness_test.go has the
// same services with the hooks of its fault tests.
package inprocess

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/stepflow/stepflow/bridge"
	"github.com/stepflow/stepflow/function"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/redisconn"
	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/schema"
	"github.com/stepflow/stepflow/workflow"
)

// ReconcileEvery is how often the stack's reconciler passes: short, so a
// dead-lettered job fails its run within a test's patience.
const ReconcileEvery = 100 * time.Millisecond

// readyWithin bounds the wait for the bridge to consume its queue.
const readyWithin = 15 * time.Second

// Options adjust a Stack before it starts.
type Options struct {
	// Registry holds the function's node types (nil: the built-ins).
	Registry *workflow.Registry
	// Blueprints are registered in the function at construction
	// (function.Options.Blueprints): runs started by blueprint id, and the
	// child blueprints of subflows.
	Blueprints []*workflow.Blueprint
	// Handler wraps the function's CloudEvents handler (not its health
	// endpoints): a test's fault injection between bridge and function.
	Handler func(http.Handler) http.Handler
	// Bridge adjusts the bridge's configuration before it starts.
	Bridge func(*bridge.Config)
	// Logger receives the services' logs (nil: discarded).
	Logger *slog.Logger
	// RedisURL is the Redis (or Redis Cluster) the function and the
	// reconciler use (default testenv.RedisURL()).
	RedisURL string
	// QueueType is the type of the stack's queues: "classic" (default) or
	// "quorum"; a client of the stack uses the same.
	QueueType string
	// PublicURL is the base of the webhook URLs the function's webhook
	// nodes output (function.Config.PublicURL; "": its default).
	PublicURL string
	// BlueprintsDir is the function's BLUEPRINTS_DIR: the blueprints it
	// registers, which subflows find their children among.
	BlueprintsDir string
}

// Stack is the running services and where they keep their state. A
// client.Config of PostgresURL, AMQPURL, Queue, QueueType and Tables talks
// to it.
type Stack struct {
	PostgresURL string
	RedisURL    string
	AMQPURL     string
	Tables      schema.Tables
	Queue       string
	QueueType   string
	RedisPrefix string
	FunctionURL string // where the bridge POSTs CloudEvents

	closers []func() error // run last-registered first by Close
}

// Start migrates the stack's tables, declares its queues and starts the
// function, the bridge (returning once it consumes) and the reconciler.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	id := testenv.RandomHex(4)
	s := &Stack{
		PostgresURL: testenv.PostgresURL(),
		RedisURL:    o.RedisURL,
		AMQPURL:     testenv.RabbitMQURL(),
		Tables:      testenv.PrefixedTables("t_" + id + "_"),
		Queue:       "inprocess-" + id,
		QueueType:   o.QueueType,
		RedisPrefix: "inprocess:" + id + ":",
	}
	if s.RedisURL == "" {
		s.RedisURL = testenv.RedisURL()
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}

	pool, err := s.migrate(ctx)
	if err != nil {
		return nil, err
	}
	rdb, err := s.redis(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.declareQueues(); err != nil {
		return nil, err
	}
	url, err := s.serveFunction(ctx, o)
	if err != nil {
		return nil, err
	}
	s.FunctionURL = url
	if err := s.runBridge(ctx, o, url); err != nil {
		return nil, err
	}
	if err := s.runReconciler(ctx, o, pool, rdb); err != nil {
		return nil, err
	}
	return s, nil
}

// ForTest starts a Stack that logs to t's output and closes when t ends;
// t fails at once when the services cannot start.
func ForTest(t testing.TB, o Options) *Stack {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("start stepflow in-process (PostgreSQL, Redis and RabbitMQ must answer): %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close the in-process stack: %v", err)
		}
	})
	return s
}

// Close stops the services, then removes the tables, queues and Redis
// keys; it returns what it could not do.
func (s *Stack) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	s.closers = nil
	return errors.Join(errs...)
}

func (s *Stack) onClose(fn func() error) { s.closers = append(s.closers, fn) }

// cleanupContext bounds one step of Close.
func cleanupContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func (s *Stack) migrate(ctx context.Context) (*pgxpool.Pool, error) {
	// The reconciler's queries and the migration; the function and the
	// client have pools of their own.
	pool, err := store.Connect(ctx, s.PostgresURL, 3)
	if err != nil {
		return nil, err
	}
	s.onClose(func() error { pool.Close(); return nil })
	s.onClose(func() error { // also what a failed migration left
		ctx, cancel := cleanupContext()
		defer cancel()
		return testenv.DropTables(ctx, pool, s.Tables)
	})
	if _, err := schema.Migrate(ctx, pool, s.Tables); err != nil {
		return nil, fmt.Errorf("migrate tables on PostgreSQL at %s: %w", s.PostgresURL, err)
	}
	return pool, nil
}

func (s *Stack) redis(ctx context.Context) (redis.UniversalClient, error) {
	rdb, err := redisconn.Open(s.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	s.onClose(rdb.Close)
	if err := rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("ping Redis at %s: %w", s.RedisURL, err)
	}
	s.onClose(func() error {
		ctx, cancel := cleanupContext()
		defer cancel()
		return testenv.RemoveRedisKeys(ctx, rdb, s.RedisPrefix)
	})
	return rdb, nil
}

func (s *Stack) declareQueues() error {
	conn, err := amqp.DialConfig(s.AMQPURL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return fmt.Errorf("dial RabbitMQ at %s: %w", s.AMQPURL, err)
	}
	s.onClose(conn.Close)
	s.onClose(func() error { return testenv.RemoveQueues(conn, jobqueue.TopologyQueues(s.Queue)...) })
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open a channel on RabbitMQ: %w", err)
	}
	defer ch.Close()
	return s.topology().Declare(ch)
}

func (s *Stack) topology() jobqueue.Topology {
	return jobqueue.Topology{Queue: s.Queue, Type: jobqueue.QueueType(s.QueueType)}
}

// serveFunction starts the step function and serves it as `stepflow
// function` does; it returns the URL to POST CloudEvents to.
func (s *Stack) serveFunction(ctx context.Context, o Options) (string, error) {
	f := function.New(function.Options{Registry: o.Registry, Blueprints: o.Blueprints, Logger: o.Logger})
	if err := f.StartWith(ctx, function.Config{
		PostgresURL:   s.PostgresURL,
		RedisURL:      s.RedisURL,
		Tables:        s.Tables,
		RedisPrefix:   s.RedisPrefix,
		StepTimeout:   10 * time.Second,
		PGMaxConns:    4,
		PublicURL:     o.PublicURL,
		BlueprintsDir: o.BlueprintsDir,
	}); err != nil {
		return "", fmt.Errorf("start the step function: %w", err)
	}
	s.onClose(func() error { return f.Stop(context.Background()) })
	var events http.Handler = f
	if o.Handler != nil {
		events = o.Handler(events)
	}
	mux := http.NewServeMux()
	mux.Handle("/health/", f.Health())
	mux.Handle("/", events)
	srv := httptest.NewServer(mux)
	s.onClose(func() error {
		// Bounded: a request wedged in the CloudEvents SDK's handler (see
		// e2e's TestFunctionHTTPDoesNotWedge) would hold Close forever.
		done := make(chan struct{})
		go func() { srv.Close(); close(done) }()
		select {
		case <-done:
			return nil
		case <-time.After(3 * time.Second):
			return errors.New("the function's HTTP server still serves a request 3 s after the bridge stopped")
		}
	})
	return srv.URL + "/", nil
}

func (s *Stack) runBridge(ctx context.Context, o Options, functionURL string) error {
	cfg := bridge.Config{
		AMQPURL:        s.AMQPURL,
		Queue:          s.Queue,
		QueueType:      s.QueueType,
		FunctionURL:    functionURL,
		RequestTimeout: 10 * time.Second,
		BackoffBase:    20 * time.Millisecond,
		BackoffMax:     500 * time.Millisecond,
		MaxAttempts:    5,
		ShutdownGrace:  2 * time.Second,
		Logger:         o.Logger,
	}
	if o.Bridge != nil {
		o.Bridge(&cfg)
	}
	b, err := bridge.New(cfg)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- b.Run(runCtx) }()
	s.onClose(func() error {
		stop()
		select {
		case err := <-ran:
			return err
		case <-time.After(cfg.ShutdownGrace + 10*time.Second):
			return errors.New("the bridge did not stop")
		}
	})
	deadline := time.NewTimer(readyWithin)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !b.Ready() {
		select {
		case err := <-ran:
			ran <- err // for Close
			return fmt.Errorf("the bridge stopped before consuming: %w", err)
		case <-deadline.C:
			return fmt.Errorf("the bridge did not consume %s within %s", s.Queue, readyWithin)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// runReconciler wires a reconciler as `stepflow reconciler` does (with a
// publisher of its own) and passes it every ReconcileEvery.
func (s *Stack) runReconciler(ctx context.Context, o Options, pool *pgxpool.Pool, rdb redis.UniversalClient) error {
	pub := jobqueue.NewTopologyPublisher(s.AMQPURL, s.topology())
	s.onClose(func() error { pub.Close(); return nil })
	st, err := store.New(pool, s.Tables)
	if err != nil {
		return err
	}
	r, err := reconciler.New(reconciler.Options{
		Store: st, Redis: rdb, RedisPrefix: s.RedisPrefix,
		Publish: pub.Publish, Channel: pub.Channel, Queue: s.Queue,
		Logger: o.Logger,
	})
	if err != nil {
		return err
	}
	loopCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(ReconcileEvery)
		defer tick.Stop()
		for {
			select {
			case <-loopCtx.Done():
				return
			case <-tick.C:
			}
			if _, err := r.Run(loopCtx); err != nil && loopCtx.Err() == nil {
				o.Logger.Error("reconcile", "err", err)
			}
		}
	})
	s.onClose(func() error { stop(); wg.Wait(); return nil })
	return nil
}
