package e2e

// What an operator sees: the Prometheus metrics of the function and the
// bridge after a run, and one trace per run across client, bridge and
// function.

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/testenv"
)

// metricSum adds the values of every series of a counter, gauge or
// histogram (sample count) whose labels include want.
func metricSum(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	var sum float64
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue series
				}
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				sum += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				sum += m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// The order example runs 7 nodes in 8 attempts (payment-gateway fails once):
// the metrics count exactly that. (A delayed retry may also hop through the
// delay queues, counted as "redelayed" deliveries.)
func TestMetricsCountARun(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID := tb.start(testenv.Example(t, "order"), exampleInput(t, "order"))
	res := tb.wait(runID, 30*time.Second)
	if res.Status != "completed" {
		t.Fatalf("run %s: %s", runID, res.Status)
	}
	checks := []struct {
		reg    *prometheus.Registry
		name   string
		labels map[string]string
		want   float64
	}{
		{tb.fnMetrics, "stepflow_steps_total", nil, 8},
		{tb.fnMetrics, "stepflow_steps_total", map[string]string{"outcome": "succeeded"}, 7},
		{tb.fnMetrics, "stepflow_steps_total", map[string]string{"outcome": "retried", "node_type": "flaky"}, 1},
		{tb.fnMetrics, "stepflow_step_duration_seconds", nil, 8},
		{tb.fnMetrics, "stepflow_runs_finished_total", map[string]string{"status": "completed"}, 1},
		{tb.bridgeMetrics, "stepflow_bridge_deliveries_total", map[string]string{"outcome": "dead_lettered"}, 0},
		{tb.bridgeMetrics, "stepflow_bridge_deliveries_total", map[string]string{"outcome": "retried"}, 0},
		{tb.bridgeMetrics, "stepflow_bridge_inflight_deliveries", nil, 0},
		// One observation per request; a batch holds several attempts.
		{tb.bridgeMetrics, "stepflow_bridge_function_request_seconds", nil, float64(tb.http.posts.Load())},
		{tb.bridgeMetrics, "stepflow_bridge_batch_size", nil, float64(tb.http.posts.Load())},
		{tb.fnMetrics, "stepflow_function_request_jobs", nil, float64(tb.http.posts.Load())},
	}
	for _, c := range checks {
		// The bridge counts a delivery after acking it, a moment after the
		// run's final commit: poll briefly.
		var got float64
		_ = testenv.Poll(tb.ctx, 5*time.Second, 10*time.Millisecond, func() (bool, error) {
			got = metricSum(t, c.reg, c.name, c.labels)
			return got == c.want, nil
		})
		if got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Eight attempts were committed, by at most as many requests.
	if n := metricSum(t, tb.fnMetrics, "stepflow_function_commit_seconds", nil); n < 1 || n > 8 || n > float64(tb.http.posts.Load()) {
		t.Errorf("stepflow_function_commit_seconds counts %v group commits, want 1 to 8 and no more than the %d requests", n, tb.http.posts.Load())
	}
	// Every job comes from the queue once and is settled once: with the
	// function's answer, or, for a job the bridge handed on straight to
	// the function, as the copy of one (handed_on_copy).
	published := metricSum(t, tb.bridgeMetrics, "stepflow_bridge_deliveries_total", map[string]string{"outcome": "reply_published"})
	acked := metricSum(t, tb.bridgeMetrics, "stepflow_bridge_deliveries_total", map[string]string{"outcome": "ack"})
	copies := metricSum(t, tb.bridgeMetrics, "stepflow_bridge_deliveries_total", map[string]string{"outcome": "handed_on_copy"})
	if published+acked+copies != 8 {
		t.Errorf("deliveries: %v reply_published + %v ack + %v handed_on_copy, want 8", published, acked, copies)
	}
	// At least four answers published next jobs (from a delivery or a
	// job handed on), each waiting for its confirms.
	if n := metricSum(t, tb.bridgeMetrics, "stepflow_bridge_publish_confirm_seconds", nil); n < max(published, 4) {
		t.Errorf("publish-confirm latency observed %v times, want at least %v", n, max(published, 4))
	}
}

// One run is one trace: the client's start span is the root, and every
// bridge delivery, function step and node span of the run shares its trace.
func TestOneRunIsOneTrace(t *testing.T) {
	// Not parallel: it installs the global tracer provider.
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(prev); _ = tp.Shutdown(context.Background()) })

	tb := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	runID, err := tb.client.Start(ctx, testenv.Example(t, "chain10"), nil, client.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tb.wait(runID, 30*time.Second)
	// The last bridge span ends just after the final commit.
	var byName map[string]int
	var root sdktrace.ReadOnlySpan
	err = testenv.Poll(tb.ctx, 5*time.Second, 10*time.Millisecond, func() (bool, error) {
		byName, root = map[string]int{}, nil
		spans := exp.GetSpans().Snapshots()
		for _, s := range spans {
			for _, a := range s.Attributes() {
				if a.Key == "stepflow.run_id" && a.Value.AsString() == runID && s.Name() == "stepflow.run.start" {
					root = s
				}
			}
		}
		if root != nil {
			trace := root.SpanContext().TraceID()
			for _, s := range spans {
				if s.SpanContext().TraceID() == trace {
					byName[s.Name()]++
				}
			}
		}
		return byName["stepflow.bridge.deliver"] == 10 && byName["stepflow.function.step"] == 10 && byName["stepflow.node noop"] == 10, nil
	})
	if err != nil {
		t.Fatalf("spans in the run's trace %s: %v (root found: %v); want 10 deliveries, 10 steps, 10 node spans", err, byName, root != nil)
	}
}
