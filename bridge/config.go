package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/wire"
)

// Config defaults.
const (
	DefaultQueue = jobqueue.DefaultQueue // the Flowcraft adapter's queue
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
	// DefaultPauseAfter: calls to the function failing without an HTTP
	// answer this many times in a row make the bridge judge it down and
	// pause (policy.go, "The pause"). Low, because a pause costs little:
	// a function that answers its readiness probe is back in use within
	// 100 ms, while every failure before the pause costs a job a
	// transport attempt. When the function dies, the Concurrency requests
	// in flight to it fail together, so the pause comes at once.
	DefaultPauseAfter = 5
	// ReadinessPath replaces FunctionURL's path when ReadinessURL is not set
	// (the Knative func-go readiness endpoint).
	ReadinessPath = "/health/readiness"
)

// maxQueueNameLen leaves room for the ".delay.<ms>" suffix within AMQP's 255.
const maxQueueNameLen = 255 - len(".delay.83886080")

// Config configures a Bridge. Zero values take the defaults above.
type Config struct {
	AMQPURL        string        // required
	Queue          string        // default DefaultQueue
	QueueType      string        // type of the queues declared: "classic" (default) or "quorum", as every component has it
	FunctionURL    string        // required, e.g. http://127.0.0.1:8080/
	ReadinessURL   string        // default: FunctionURL with path ReadinessPath
	Prefetch       int           // AMQP prefetch (unacked deliveries held), default 512
	Concurrency    int           // requests (batches) to the function in flight at once, default 8
	RequestTimeout time.Duration // time limit of one request (one job, or a whole batch), default 25s
	MaxAttempts    int           // transport-level attempts before dead-lettering, default 10
	BackoffBase    time.Duration // transport retry backoff base, default 1s
	BackoffMax     time.Duration // transport retry backoff cap, default 5m
	ShutdownGrace  time.Duration // how long in-flight deliveries may finish on shutdown, default 30s
	PauseAfter     int           // transport failures in a row that make the bridge stop consuming until the function's readiness answers, default 5
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
	// NoHandOn turns handing on off: every reply job then reaches the
	// function only through the queue. Handing on (handon.go) sends a
	// reply's jobs straight to the function when a request slot is free,
	// the published copy being the durable one; with several bridges on
	// one queue, a copy that another bridge gets is run there as a
	// duplicate (absorbed by the function), which costs a call.
	NoHandOn bool
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

	if qt, err := jobqueue.ParseQueueType(c.QueueType); err != nil {
		bad("QueueType", "%v", err)
	} else {
		c.QueueType = string(qt)
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
	positiveInt("PauseAfter", &c.PauseAfter, DefaultPauseAfter, 1<<20)

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
