package api_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stepflow/stepflow/api"
	"github.com/stepflow/stepflow/client"
)

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{})
	// Answers for the metrics to count.
	tb.do("GET", "/api/v1/runs/ghost", "")
	tb.do("GET", "/api/v1/nowhere", "")
	tb.do("POST", "/api/v1/runs", startBody(t, greet, `, "input": {"name": "Ada"}`))
	tb.run([]request{
		{name: "liveness", method: "GET", path: "/health/liveness", code: 200, says: []string{"ALIVE"}},
		{name: "readiness", method: "GET", path: "/health/readiness", code: 200, says: []string{"READY"}},
		{name: "a probe's wrong method", method: "POST", path: "/health/readiness", code: 405},
		{name: "metrics", method: "GET", path: "/metrics", code: 200, says: []string{
			`stepflow_api_requests_total{code="404",route="GET /api/v1/runs/{id}"} 1`,
			`stepflow_api_requests_total{code="404",route="unmatched"} 1`,
			`stepflow_api_requests_total{code="201",route="POST /api/v1/runs"} 1`,
			`stepflow_api_request_duration_seconds_count{code="201",route="POST /api/v1/runs"} 1`,
			`stepflow_api_request_duration_seconds_bucket{code="404",route="GET /api/v1/runs/{id}",le="+Inf"} 1`,
		}},
	})
}

// Readiness says which service does not answer.
func TestReadinessNamesWhatIsDown(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{})
	for _, tc := range []struct {
		name        string
		postgres    string
		amqp        string
		code        int
		says, never string
	}{
		{name: "both answer", postgres: tb.stack.PostgresURL, amqp: tb.stack.AMQPURL, code: 200, says: "READY"},
		{name: "RabbitMQ down", postgres: tb.stack.PostgresURL, amqp: "amqp://guest:guest@127.0.0.1:1/", code: 503, says: "not ready: RabbitMQ", never: "PostgreSQL"},
		{name: "PostgreSQL down", postgres: "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=1", amqp: tb.stack.AMQPURL, code: 503, says: "not ready: PostgreSQL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(tb.ctx, client.Config{PostgresURL: tc.postgres, AMQPURL: tc.amqp, Queue: tb.stack.Queue, Tables: tb.stack.Tables})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			srv, err := api.New(c, api.Options{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, httptest.NewRequestWithContext(tb.ctx, "GET", "/health/readiness", nil))
			body, _ := io.ReadAll(rec.Result().Body)
			if rec.Code != tc.code || !strings.Contains(string(body), tc.says) || (tc.never != "" && strings.Contains(string(body), tc.never)) {
				t.Errorf("readiness: %d %q, want %d saying %q", rec.Code, body, tc.code, tc.says)
			}
		})
	}
}
