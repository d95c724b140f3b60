package bridge

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Delivery outcomes, the values of stepflow_bridge_deliveries_total{outcome}.
const (
	outcomeAck            = "ack"             // acked, nothing published
	outcomeReplyPublished = "reply_published" // the reply's jobs published, then acked
	outcomeRetried        = "retried"         // re-published to the delay queues for another attempt
	outcomeRedelayed      = "redelayed"       // came back before due; sent down the delay ladder again
	outcomeDeadLettered   = "dead_lettered"   // published to the DLQ, then acked
	outcomeRequeued       = "requeued"        // nacked with requeue, or dropped with its dead channel
	outcomeHandedOnCopy   = "handed_on_copy"  // the queue's copy of a job handed on straight to the function, acked without a call
)

type metrics struct {
	deliveries *prometheus.CounterVec
	inflight   prometheus.Gauge
	waiting    prometheus.Gauge
	confirm    prometheus.Histogram
	request    prometheus.Histogram
	batchSize  prometheus.Histogram
	// batchesRefused is 1 once the function has refused a batch (400,
	// 415) and the bridge sends one job per request.
	batchesRefused prometheus.Gauge
	paused         prometheus.Gauge   // 1 while the function is judged down and the bridge does not consume
	pauses         prometheus.Counter // times the bridge paused
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepflow_bridge_deliveries_total",
			Help: "Deliveries handled by the bridge, by outcome.",
		}, []string{"outcome"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stepflow_bridge_inflight_deliveries",
			Help: "Deliveries being handled right now (in a request to the function, or being redelayed).",
		}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stepflow_bridge_waiting_deliveries",
			Help: "Deliveries received from RabbitMQ and waiting for a free request slot (the next batches).",
		}),
		confirm: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stepflow_bridge_publish_confirm_seconds",
			Help:    "Time from publishing what a request's replies ask for to the broker's last confirm.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms … 4 s
		}),
		request: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stepflow_bridge_function_request_seconds",
			Help:    "Duration of step function requests, reply body included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14), // 5 ms … 41 s
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stepflow_bridge_batch_size",
			Help:    "Deliveries sent to the step function in one request.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9), // 1 … 256 (wire.MaxBatch)
		}),
		batchesRefused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stepflow_bridge_batches_refused",
			Help: "1 once the step function has refused a CloudEvents batch (HTTP 400 or 415) and the bridge sends one job per request; set BRIDGE_BATCH_SIZE=1 for a function that takes no batches.",
		}),
		paused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stepflow_bridge_paused",
			Help: "1 while the bridge has judged its step function down (BRIDGE_PAUSE_AFTER transport failures in a row): it does not consume, handed back what it held, and probes the function's readiness.",
		}),
		pauses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stepflow_bridge_pauses_total",
			Help: "Times the bridge stopped consuming because its step function did not answer.",
		}),
	}
	for _, outcome := range []string{outcomeAck, outcomeReplyPublished, outcomeRetried,
		outcomeRedelayed, outcomeDeadLettered, outcomeRequeued, outcomeHandedOnCopy} {
		m.deliveries.WithLabelValues(outcome) // export zeros so rates work from the start
	}
	var err error
	m.deliveries = register(reg, m.deliveries, &err)
	m.inflight = register(reg, m.inflight, &err)
	m.waiting = register(reg, m.waiting, &err)
	m.confirm = register(reg, m.confirm, &err)
	m.request = register(reg, m.request, &err)
	m.batchSize = register(reg, m.batchSize, &err)
	m.batchesRefused = register(reg, m.batchesRefused, &err)
	m.paused = register(reg, m.paused, &err)
	m.pauses = register(reg, m.pauses, &err)
	return m, err
}

// register registers c, or returns the collector already registered under the
// same name (two bridges in one process share their metrics).
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		*errp = errors.Join(*errp, err)
	}
	return c
}
