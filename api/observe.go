package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// observer counts and times requests by route and code (Prometheus, through
// promhttp's instrumentation) and logs each one.
type observer struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	log      *slog.Logger
}

func newObserver(reg prometheus.Registerer, log *slog.Logger) (*observer, error) {
	o := &observer{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepflow_api_requests_total",
			Help: `Requests to the API, by route (the pattern that took it, or "unmatched") and status code.`,
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stepflow_api_request_duration_seconds",
			Help:    `Time to answer a request to the API, by route (the pattern that took it, or "unmatched") and status code.`,
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "code"}),
		log: log,
	}
	for _, c := range []prometheus.Collector{o.requests, o.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("api metrics: %w", err)
		}
	}
	return o, nil
}

// instrument wraps h, the handler of route, with the metrics and the
// request log.
func (o *observer) instrument(route string, h http.Handler) http.Handler {
	labels := prometheus.Labels{"route": route}
	h = promhttp.InstrumentHandlerDuration(o.duration.MustCurryWith(labels), h)
	h = promhttp.InstrumentHandlerCounter(o.requests.MustCurryWith(labels), h)
	// Probes, scrapes and the console's polls come every few seconds: log
	// them at debug only.
	level := slog.LevelInfo
	if strings.Contains(route, " /health/") || strings.HasSuffix(route, " /metrics") || strings.Contains(route, " /fragments/") || strings.Contains(route, " /assets/") {
		level = slog.LevelDebug
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		note := &requestNote{}
		r = r.WithContext(context.WithValue(r.Context(), noteKey{}, note))
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if !o.log.Enabled(r.Context(), level) {
			return
		}
		attrs := append([]slog.Attr{
			slog.String("method", r.Method), slog.String("path", logPath(r.URL.Path)), slog.String("route", route),
			slog.Int("code", sw.status()), slog.String("took", time.Since(start).Round(time.Microsecond).String()),
			slog.String("remote", r.RemoteAddr),
		}, logAttrs(r)...)
		o.log.LogAttrs(r.Context(), level, "api request", attrs...)
	})
}

// statusWriter remembers the status code written through it for the log.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
