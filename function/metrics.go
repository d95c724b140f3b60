package function

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	steps        *prometheus.CounterVec
	stepDuration *prometheus.HistogramVec
	runs         *prometheus.CounterVec
	replies      *prometheus.CounterVec
	batchJobs    prometheus.Histogram
	commit       prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepflow_steps_total",
			Help: "Node attempts run by the step function, by outcome (succeeded, retried, failed, fallback, suspended, timed_out) and node type.",
		}, []string{"outcome", "node_type"}),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stepflow_step_duration_seconds",
			Help:    "Time a node attempt ran, by node type.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}, []string{"node_type"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepflow_runs_finished_total",
			Help: "Runs that reached a final status in this function, by status.",
		}, []string{"status"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepflow_function_replies_total",
			Help: "Replies of the step function by HTTP status class and reason.",
		}, []string{"code", "reason"}),
		batchJobs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stepflow_function_request_jobs",
			Help:    "Jobs per request: 1 for a one-event request, the batch's size for a CloudEvents batch.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stepflow_function_commit_seconds",
			Help:    "Time to commit the outcomes of one request (one transaction for the whole batch).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	reg.MustRegister(m.steps, m.stepDuration, m.runs, m.replies, m.batchJobs, m.commit)
	return m
}
