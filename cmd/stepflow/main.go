// Command stepflow runs durable workflows on RabbitMQ, PostgreSQL and
// Redis: the step function, the bridge, the reconciler, and the tools to
// validate, run and watch workflows.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	fce "knative.dev/func-go/cloudevents"

	"github.com/stepflow/stepflow/bridge"
	"github.com/stepflow/stepflow/function"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/telemetry"
	"github.com/stepflow/stepflow/schema"
)

// pprofEnabled serves net/http/pprof on the HTTP address of long-lived
// commands.
var pprofEnabled bool

// shutdownTracing flushes spans before the process exits.
var shutdownTracing = func(context.Context) error { return nil }

// exitError carries a process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func exitCode(code int, err error) error { return &exitError{code: code, err: err} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	err := root.ExecuteContext(ctx)
	flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = shutdownTracing(flushCtx)
	cancel()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "stepflow:", ee.err)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "stepflow:", err)
	os.Exit(2)
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "stepflow",
		Short: "Durable workflows on RabbitMQ, PostgreSQL and Redis, one step per function call",
		Long: `stepflow runs Flowcraft blueprints (JSON workflows) the serverless way: a bridge
consumes jobs from RabbitMQ and calls a stateless step function over HTTP with a
CloudEvent; the function runs one node against PostgreSQL and Redis and replies
with the next jobs; a reconciler republishes what stalled runs are missing.

Every setting is a flag and an environment variable (shown in each --help).
Tracing: set the standard OTEL_* variables (e.g. OTEL_EXPORTER_OTLP_ENDPOINT) to
export OpenTelemetry traces; one run is one trace.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("log-level", envOr("LOG_LEVEL", "info"), "log level: debug, info, warn, error (env LOG_LEVEL)")
	root.PersistentFlags().String("log-format", envOr("LOG_FORMAT", "text"), "log format: text or json (env LOG_FORMAT)")
	root.PersistentFlags().BoolVar(&pprofEnabled, "pprof", false, "serve Go profiles at /debug/pprof/ on the command's HTTP address (env STEPFLOW_PPROF)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := applyEnv(cmd); err != nil {
			return err
		}
		if err := setupLogging(cmd); err != nil {
			return err
		}
		shutdown, err := telemetry.Setup(cmd.Context(), "stepflow-"+cmd.Name())
		if err != nil {
			return exitCode(2, fmt.Errorf("OpenTelemetry (OTEL_* variables): %w", err))
		}
		shutdownTracing = shutdown
		return nil
	}
	root.AddCommand(
		newValidateCmd(), newRunCmd(), newGraphCmd(), newMigrateCmd(),
		newFunctionCmd(), newBridgeCmd(), newReconcilerCmd(), newReconcileCmd(), newDevCmd(),
		newStartCmd(), newStatusCmd(), newCancelCmd(), newResumeCmd(), newDLQCmd(), newAPICmd(),
	)
	return root
}

var envInUsage = regexp.MustCompile(`\(env ([A-Z0-9_]+)\)`)

// applyEnv parses, for every flag not given on the command line, the
// environment variable its usage names, so that a bad value fails fast
// with a message naming the variable — exactly as the flag would.
func applyEnv(cmd *cobra.Command) error {
	var errs []error
	visit := func(f *pflag.Flag) {
		m := envInUsage.FindStringSubmatch(f.Usage)
		if m == nil || f.Changed {
			return
		}
		v, ok := os.LookupEnv(m[1])
		if !ok || v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q (for --%s): %v", m[1], v, f.Name, err))
		}
	}
	cmd.Flags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
	if len(errs) > 0 {
		return exitCode(2, errors.Join(errs...))
	}
	return nil
}

func setupLogging(cmd *cobra.Command) error {
	levelName, _ := cmd.Flags().GetString("log-level")
	format, _ := cmd.Flags().GetString("log-format")
	var level slog.Level
	if err := level.UnmarshalText([]byte(levelName)); err != nil {
		return exitCode(2, fmt.Errorf("--log-level %q: want debug, info, warn or error", levelName))
	}
	opts := &slog.HandlerOptions{Level: level}
	// func-go logs through zerolog; keep it at our level.
	switch {
	case level <= slog.LevelDebug:
		fce.SetLogLevel(fce.LogDebug)
	case level <= slog.LevelInfo:
		fce.SetLogLevel(fce.LogInfo)
	default:
		fce.SetLogLevel(fce.LogWarn)
	}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		return exitCode(2, fmt.Errorf("--log-format %q: want text or json", format))
	}
	slog.SetDefault(slog.New(h))
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// conn holds the connection settings most commands share.
type conn struct {
	postgresURL, redisURL, amqpURL, queue, redisPrefix string
	queueType                                          string
	tables                                             schema.Tables
}

func addConnFlags(fs *pflag.FlagSet, c *conn, want ...string) {
	has := func(s string) bool {
		for _, w := range want {
			if w == s {
				return true
			}
		}
		return false
	}
	if has("postgres") {
		fs.StringVar(&c.postgresURL, "postgres-url", envOr("POSTGRES_URL", function.DefaultPostgresURL), "PostgreSQL URL (env POSTGRES_URL)")
		d := schema.DefaultTables()
		fs.StringVar(&c.tables.Contexts, "contexts-table", envOr("STEPFLOW_CONTEXTS_TABLE", d.Contexts), "contexts table (env STEPFLOW_CONTEXTS_TABLE)")
		fs.StringVar(&c.tables.Statuses, "statuses-table", envOr("STEPFLOW_STATUSES_TABLE", d.Statuses), "statuses table (env STEPFLOW_STATUSES_TABLE)")
		fs.StringVar(&c.tables.Steps, "steps-table", envOr("STEPFLOW_STEPS_TABLE", d.Steps), "steps table (env STEPFLOW_STEPS_TABLE)")
		fs.StringVar(&c.tables.Blueprints, "blueprints-table", envOr("STEPFLOW_BLUEPRINTS_TABLE", d.Blueprints), "blueprint snapshots table (env STEPFLOW_BLUEPRINTS_TABLE)")
		fs.StringVar(&c.tables.DeadLetters, "dead-letters-table", envOr("STEPFLOW_DEAD_LETTERS_TABLE", d.DeadLetters), "recorded dead letters table (env STEPFLOW_DEAD_LETTERS_TABLE)")
	}
	if has("redis") {
		fs.StringVar(&c.redisURL, "redis-url", envOr("REDIS_URL", function.DefaultRedisURL), "Redis URL (env REDIS_URL)")
		fs.StringVar(&c.redisPrefix, "redis-prefix", envOr("REDIS_PREFIX", function.DefaultRedisPrefix), "prefix of every Redis key (env REDIS_PREFIX)")
	}
	if has("amqp") {
		fs.StringVar(&c.amqpURL, "rabbitmq-url", envOr("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ URL (env RABBITMQ_URL)")
		fs.StringVar(&c.queue, "queue", envOr("STEPFLOW_QUEUE", bridge.DefaultQueue), "job queue name (env STEPFLOW_QUEUE)")
		fs.StringVar(&c.queueType, "queue-type", envOr("STEPFLOW_QUEUE_TYPE", string(jobqueue.QueueClassic)), "type of the job, delay and dead-letter queues declared: classic or quorum (replicated, for a RabbitMQ cluster); the same for every component (env STEPFLOW_QUEUE_TYPE)")
	}
}

func (c *conn) validate() error {
	if _, err := jobqueue.ParseQueueType(c.queueType); err != nil {
		return exitCode(2, fmt.Errorf("--queue-type: %w", err))
	}
	if c.tables != (schema.Tables{}) {
		if err := c.tables.Validate(); err != nil {
			return exitCode(2, err)
		}
	}
	return nil
}

// functionEnv is the function's configuration as the map func-go passes.
func (c *conn) functionEnv() map[string]string {
	return map[string]string{
		"POSTGRES_URL":                c.postgresURL,
		"REDIS_URL":                   c.redisURL,
		"REDIS_PREFIX":                c.redisPrefix,
		"STEPFLOW_CONTEXTS_TABLE":     c.tables.Contexts,
		"STEPFLOW_STATUSES_TABLE":     c.tables.Statuses,
		"STEPFLOW_STEPS_TABLE":        c.tables.Steps,
		"STEPFLOW_BLUEPRINTS_TABLE":   c.tables.Blueprints,
		"STEPFLOW_DEAD_LETTERS_TABLE": c.tables.DeadLetters,
	}
}

func redact(url string) string {
	if i := strings.Index(url, "@"); i > 0 {
		if j := strings.Index(url, "://"); j > 0 && j < i {
			return url[:j+3] + "…@" + url[i+1:]
		}
	}
	return url
}
