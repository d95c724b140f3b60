package api

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Probes and metrics, beside the API and like every stepflow service's:
//
//	GET /health/liveness   the process serves
//	GET /health/readiness  PostgreSQL and RabbitMQ answer (503 naming the one that does not)
//	GET /metrics           Prometheus
func (s *Server) routeHealth() {
	s.handle("GET /health/liveness", open, func(w http.ResponseWriter, _ *http.Request) error {
		fmt.Fprint(w, "ALIVE")
		return nil
	})
	s.handle("GET /health/readiness", open, s.readiness)
	metrics := promhttp.HandlerFor(s.o.Registry, promhttp.HandlerOpts{})
	s.handle("GET /metrics", open, func(w http.ResponseWriter, r *http.Request) error {
		metrics.ServeHTTP(w, r)
		return nil
	})
}

// readinessTimeout bounds each check of a probe (Kubernetes' own timeout
// is 3 s in deploy/).
const readinessTimeout = 2 * time.Second

func (s *Server) readiness(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), readinessTimeout)
	defer cancel()
	checks := []struct {
		name string
		ping func(context.Context) error
	}{{"PostgreSQL", s.client.Ping}, {"RabbitMQ", s.client.PingRabbitMQ}}
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() { errs[i] = c.ping(ctx) })
	}
	wg.Wait()
	for i, c := range checks {
		if errs[i] != nil {
			http.Error(w, fmt.Sprintf("not ready: %s: %v", c.name, errs[i]), http.StatusServiceUnavailable)
			return nil
		}
	}
	fmt.Fprint(w, "READY")
	return nil
}
