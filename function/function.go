package function

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/stepflow/stepflow/internal/redisconn"
	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/workflow"
)

// Options configure a Function at construction.
type Options struct {
	// Registry holds the node implementations (default: built-ins only).
	Registry *workflow.Registry
	// Blueprints are registered at construction, for runs started without
	// a pinned snapshot (the Flowcraft adapter's way).
	Blueprints []*workflow.Blueprint
	Logger     *slog.Logger
	// Registerer receives the function's metrics (nil: a private registry).
	Registerer prometheus.Registerer
}

// Function is the step function. Create it with New, then Start it.
type Function struct {
	reg     *workflow.Registry
	log     *slog.Logger
	metrics *metrics

	mu         sync.RWMutex
	cfg        Config
	pool       *pgxpool.Pool
	rdb        redis.UniversalClient
	store      *store.Store
	registered map[string]*workflow.Workflow // by blueprint id
	compiled   sync.Map                      // digest → *workflow.Workflow
	started    bool
	startErr   error
	releasing  sync.WaitGroup // lease releases after answers (releaseLater)
	relMu      sync.Mutex     // orders releaseLater's Add before Stop's Wait
	stopping   bool           // under relMu: releases run in place
}

// New returns an unstarted function. Invalid blueprints in opts are a
// programming error and panic with the validation message.
func New(opts Options) *Function {
	if opts.Registry == nil {
		opts.Registry = workflow.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	f := &Function{reg: opts.Registry, log: opts.Logger, registered: map[string]*workflow.Workflow{}, metrics: newMetrics(opts.Registerer)}
	for _, bp := range opts.Blueprints {
		if err := f.Register(bp); err != nil {
			panic(err)
		}
	}
	return f
}

// Register makes a blueprint available by id for runs that were started
// without a pinned snapshot.
func (f *Function) Register(bp *workflow.Blueprint) error {
	w, err := workflow.Compile(bp, f.reg)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registered[bp.ID] = w
	f.compiled.Store(w.Digest, w)
	return nil
}

// RegisterDir registers every *.json blueprint file of dir.
func (f *Function) RegisterDir(dir string) ([]string, error) {
	if st, err := os.Stat(dir); err != nil {
		return nil, err
	} else if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a folder", dir)
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var ids []string
	var errs []error
	for _, p := range paths {
		if strings.HasSuffix(p, ".input.json") {
			continue // example inputs live beside blueprints
		}
		data, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		bp, err := workflow.Decode(data)
		if err == nil {
			err = f.Register(bp)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		ids = append(ids, bp.ID)
	}
	if len(paths) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s holds no *.json blueprint", dir))
	}
	return ids, errors.Join(errs...)
}

// Start connects to PostgreSQL and Redis using cfg (the environment, as
// func-go passes it). It returns once both clients exist; Ready reports
// whether they answer.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	c, err := ConfigFromMap(cfg)
	if err != nil {
		f.fail(err)
		return err
	}
	return f.StartWith(ctx, c)
}

// StartWith is Start with a parsed configuration; zero fields take the
// defaults.
func (f *Function) StartWith(ctx context.Context, c Config) error {
	f.relMu.Lock()
	f.stopping = false
	f.relMu.Unlock()
	c.applyDefaults()
	if err := c.Tables.Validate(); err != nil {
		f.fail(err)
		return err
	}
	if c.BlueprintsDir != "" {
		ids, err := f.RegisterDir(c.BlueprintsDir)
		if err != nil {
			f.fail(err)
			return fmt.Errorf("BLUEPRINTS_DIR %s: %w", c.BlueprintsDir, err)
		}
		f.log.Info("registered blueprints", "dir", c.BlueprintsDir, "blueprints", ids)
	}
	pool, err := store.Connect(ctx, c.PostgresURL, c.PGMaxConns)
	if err != nil {
		f.fail(err)
		return err
	}
	rdb, err := redisconn.Open(c.RedisURL)
	if err != nil {
		pool.Close()
		err = fmt.Errorf("REDIS_URL: %w", err)
		f.fail(err)
		return err
	}
	st, err := store.New(pool, c.Tables)
	if err != nil {
		pool.Close()
		_ = rdb.Close()
		f.fail(err)
		return err
	}
	f.mu.Lock()
	f.cfg, f.pool, f.rdb, f.store, f.started = c, pool, rdb, st, true
	f.mu.Unlock()
	f.log.Info("step function started", "tables", c.Tables, "step_timeout", c.StepTimeout)
	return nil
}

func (f *Function) fail(err error) {
	f.mu.Lock()
	f.startErr = err
	f.mu.Unlock()
	f.log.Error("step function cannot start", "err", err)
}

// Stop closes the connections, once the leases of answered requests are
// released.
func (f *Function) Stop(ctx context.Context) error {
	f.relMu.Lock()
	f.stopping = true
	f.relMu.Unlock()
	f.releasing.Wait() // each release is bounded by its own time limit
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.started {
		return nil
	}
	f.started = false
	f.pool.Close()
	return f.rdb.Close()
}

// Ready reports whether PostgreSQL and Redis answer.
func (f *Function) Ready(ctx context.Context) (bool, error) {
	f.mu.RLock()
	started, pool, rdb, startErr := f.started, f.pool, f.rdb, f.startErr
	f.mu.RUnlock()
	if startErr != nil {
		return false, startErr
	}
	if !started {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := pool.Ping(ctx); err != nil {
		return false, nil
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		return false, nil
	}
	return true, nil
}

// Alive reports whether the function is alive: it is unless its
// configuration made it unable to start.
func (f *Function) Alive(ctx context.Context) (bool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.startErr == nil, nil
}

// deps returns the started dependencies (nil store: not started).
func (f *Function) deps() (*store.Store, redis.UniversalClient, Config) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.store, f.rdb, f.cfg
}

// workflowFor returns the compiled workflow of a run: its pinned snapshot,
// or the blueprint registered under the job's blueprint id.
func (f *Function) workflowFor(ctx context.Context, st *store.Store, digest, blueprintID string) (*workflow.Workflow, error) {
	if digest == "" {
		f.mu.RLock()
		w := f.registered[blueprintID]
		f.mu.RUnlock()
		if w == nil {
			return nil, fmt.Errorf("unknown blueprint %q: the run has no pinned snapshot and no blueprint with that id is registered", blueprintID)
		}
		return w, nil
	}
	if w, ok := f.compiled.Load(digest); ok {
		return w.(*workflow.Workflow), nil
	}
	bp, err := st.LoadBlueprint(ctx, digest)
	if err != nil {
		if errors.Is(err, store.ErrBlueprintNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", errTransient, err)
	}
	w, err := workflow.Compile(bp, f.reg)
	if err != nil {
		return nil, err
	}
	f.compiled.Store(digest, w)
	return w, nil
}
