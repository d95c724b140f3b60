package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/robfig/cron/v3"
)

// ValidateSchedule reports whether spec is a schedule a Service takes: a
// cron spec ("*/1 * * * *") or a descriptor ("@every 30s", "@hourly").
func ValidateSchedule(spec string) error {
	_, err := cron.ParseStandard(spec)
	return err
}

// ServiceOptions configure a Service.
type ServiceOptions struct {
	Schedule string // when a pass runs (see ValidateSchedule); default DefaultSchedule
	// Registry receives the service's metrics and is what its /metrics
	// serves; nil: a registry of its own.
	Registry *prometheus.Registry
	// Routes, when set, adds handlers to the service's HTTP endpoints
	// (profiles, say).
	Routes func(mux *http.ServeMux)
	// AfterPass, when set, is called after every pass with its result.
	AfterPass func(Stats, error)
	Logger    *slog.Logger
}

// Service is the long-lived reconciler: it runs a pass on a cron schedule
// (never two at once), counts them in Prometheus metrics and serves
// /health/liveness, /health/readiness (not ready while the last pass
// failed) and /metrics.
type Service struct {
	rec      *Reconciler
	o        ServiceOptions
	schedule cron.Schedule
	healthy  atomic.Bool

	runs     *prometheus.CounterVec
	passes   *prometheus.CounterVec
	duration prometheus.Histogram
}

// NewService returns a Service running rec's passes; it registers the
// metrics.
func NewService(rec *Reconciler, o ServiceOptions) (*Service, error) {
	if rec == nil {
		return nil, errors.New("reconciler service: a Reconciler is required")
	}
	if o.Schedule == "" {
		o.Schedule = DefaultSchedule
	}
	schedule, err := cron.ParseStandard(o.Schedule)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %w", o.Schedule, err)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Logger == nil {
		o.Logger = rec.o.Logger
	}
	s := &Service{
		rec: rec, o: o, schedule: schedule,
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepflow_reconcile_runs_total",
			Help: "Runs seen by the reconciler, by result (stalled, reconciled, failed, dead_lettered).",
		}, []string{"result"}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepflow_reconcile_passes_total",
			Help: "Reconcile passes, by outcome (ok, error).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "stepflow_reconcile_duration_seconds",
			Help: "Time one reconcile pass took.",
		}),
	}
	for _, c := range []prometheus.Collector{s.runs, s.passes, s.duration} {
		if err := o.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("reconciler metrics: %w", err)
		}
	}
	s.healthy.Store(true)
	return s, nil
}

// Ready reports whether the last pass succeeded (true before the first).
func (s *Service) Ready() bool { return s.healthy.Load() }

// Handler serves the service's HTTP endpoints.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.o.Registry, promhttp.HandlerOpts{}))
	if s.o.Routes != nil {
		s.o.Routes(mux)
	}
	mux.HandleFunc("/health/liveness", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ALIVE") })
	mux.HandleFunc("/health/readiness", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "READY")
	})
	return mux
}

// Run serves the HTTP endpoints on ln (none when ln is nil) and runs
// passes on the schedule until ctx is done; it then waits for a pass under
// way to end, and stops serving.
func (s *Service) Run(ctx context.Context, ln net.Listener) error {
	addr := ""
	if ln != nil {
		srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		addr = ln.Addr().String()
	}
	cr := cron.New(cron.WithChain(cron.SkipIfStillRunning(cron.DiscardLogger)))
	cr.Schedule(s.schedule, cron.FuncJob(func() { s.pass(ctx) }))
	s.o.Logger.Info("reconciler started", "schedule", s.o.Schedule, "threshold", s.rec.o.Threshold, "http", addr)
	cr.Start()
	<-ctx.Done()
	<-cr.Stop().Done()
	s.o.Logger.Info("reconciler stopped")
	return nil
}

// pass runs one reconcile pass and records it.
func (s *Service) pass(ctx context.Context) {
	start := time.Now()
	st, err := s.rec.Run(ctx)
	s.duration.Observe(time.Since(start).Seconds())
	s.runs.WithLabelValues("stalled").Add(float64(st.StalledRuns))
	s.runs.WithLabelValues("reconciled").Add(float64(st.ReconciledRuns))
	s.runs.WithLabelValues("failed").Add(float64(st.FailedRuns))
	s.runs.WithLabelValues("dead_lettered").Add(float64(st.DeadLetterRuns))
	defer func() {
		if s.o.AfterPass != nil {
			s.o.AfterPass(st, err)
		}
	}()
	if err != nil && ctx.Err() == nil {
		s.passes.WithLabelValues("error").Inc()
		s.healthy.Store(false)
		s.o.Logger.Error("reconcile pass failed", "err", err)
		return
	}
	s.passes.WithLabelValues("ok").Inc()
	s.healthy.Store(true)
	if st.StalledRuns > 0 || st.DeadLetters > 0 {
		s.o.Logger.Info("reconcile pass", "stalled", st.StalledRuns, "reconciled", st.ReconciledRuns, "failed", st.FailedRuns, "republished", st.Republished,
			"dead_letters", st.DeadLetters, "dead_lettered_runs", st.DeadLetterRuns, "took", time.Since(start).Round(time.Millisecond))
	}
}
