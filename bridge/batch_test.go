package bridge

// End-to-end tests of the batch form against the real RabbitMQ, with a fake
// function that reads and answers CloudEvents batches itself (setupRaw).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	dto "github.com/prometheus/client_model/go"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
)

// gate holds the function's first request (a warm-up job) until opened, so
// that with Concurrency 1 the jobs published meanwhile wait in the bridge
// and reach the function together in the next request.
type gate struct {
	open  chan struct{}
	first atomic.Bool
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

// wrap answers the first request, once the gate is open, with 200 for every
// job; next answers the others.
func (g *gate) wrap(t *testing.T, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if g.first.CompareAndSwap(false, true) {
			<-g.open
			ackAll(t, w, r)
			return
		}
		next(w, r)
	}
}

// batchUp makes the function's next request a batch of the n deliveries
// that publish publishes: a warm-up job holds the only request slot until
// they all wait in the bridge. It consumes the warm-up's request from tb.reqs.
func (tb *testBundle) batchUp(g *gate, n int, publish func()) {
	tb.t.Helper()
	tb.publishJob(wire.Job{RunID: "warm", BlueprintID: "bp", NodeID: "up"}, 0)
	tb.nextRequest(wait)
	publish()
	testenv.Eventually(tb.t, wait, fmt.Sprint(n, " deliveries waiting for the request slot"), func() bool {
		return metricValue(tb.t, tb.bridge.metrics.waiting) == float64(n)
	})
	close(g.open)
}

// events reads a recorded request: a batch, or a lone job in the one-event
// form (binary mode), whose X-Delivery-Attempt is then set on the event as
// the deliveryattempt extension a batch carries.
func (r request) events(t *testing.T) []event.Event {
	t.Helper()
	if isBatch(r.Header) {
		return batchEvents(t, r.Header, r.Body)
	}
	ev, err := binding.ToEvent(context.Background(), cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(r.Body))))
	if err != nil {
		t.Fatalf("request is neither a batch nor one event: %v (Content-Type %q)", err, r.Header.Get("Content-Type"))
	}
	if a := r.Header.Get("X-Delivery-Attempt"); a != "" {
		n, err := strconv.Atoi(a)
		if err != nil {
			t.Fatalf("X-Delivery-Attempt %q: %v", a, err)
		}
		ev.SetExtension(wire.DeliveryAttemptExtension, n)
	}
	return []event.Event{*ev}
}

// answerJobs reads a request in either form, asks decide for a result per
// job, and answers in the request's form: a batch of results, or the
// one-event reply a lone job's result stands for.
func answerJobs(t *testing.T, w http.ResponseWriter, r *http.Request, decide func(evs []event.Event) []wire.Result) {
	body, _ := io.ReadAll(r.Body)
	rec := request{Header: r.Header, Body: body}
	evs := rec.events(t)
	results := decide(evs)
	if isBatch(r.Header) {
		writeResults(t, w, ids(evs), results)
		return
	}
	res := results[0]
	switch {
	case res.Status != http.StatusOK:
		http.Error(w, res.Error, res.Status)
	case len(res.Jobs) == 0:
		w.WriteHeader(http.StatusOK)
	default:
		reply := event.New()
		reply.SetID(evs[0].ID() + "/reply")
		reply.SetType(EventTypeJobs)
		reply.SetSource(wire.FunctionSource)
		if err := reply.SetData(event.ApplicationJSON, wire.Reply{Jobs: res.Jobs}); err != nil {
			t.Error(err)
		}
		if err := cehttp.WriteResponseWriter(r.Context(), binding.ToMessage(&reply), http.StatusOK, w); err != nil {
			t.Error(err)
		}
	}
}

func ids(evs []event.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID()
	}
	return out
}

// ackAll answers every job with 200 and no jobs.
func ackAll(t *testing.T, w http.ResponseWriter, r *http.Request) {
	answerJobs(t, w, r, func(evs []event.Event) []wire.Result {
		return slices.Repeat([]wire.Result{{Status: http.StatusOK}}, len(evs))
	})
}

func deliveryAttempt(t *testing.T, ev event.Event) int {
	t.Helper()
	v, ok := ev.Extensions()[wire.DeliveryAttemptExtension]
	if !ok {
		t.Fatalf("event %s has no %s extension", ev.ID(), wire.DeliveryAttemptExtension)
	}
	n, err := strconv.Atoi(fmt.Sprint(v))
	if err != nil {
		t.Fatalf("event %s: %s = %v", ev.ID(), wire.DeliveryAttemptExtension, v)
	}
	return n
}

func histogram(t *testing.T, h interface{ Write(*dto.Metric) error }) (count uint64, sum float64) {
	t.Helper()
	var out dto.Metric
	if err := h.Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.Histogram.GetSampleCount(), out.Histogram.GetSampleSum()
}

// The batch request as it goes over the wire: a JSON array of structured
// events, each today's job event plus deliveryattempt.
func TestBatchRequestShape(t *testing.T) {
	t.Parallel()
	g := newGate()
	tb := setupRaw(t, g.wrap(t, func(w http.ResponseWriter, r *http.Request) { ackAll(t, w, r) }), func(c *Config) { c.Concurrency = 1 })
	tb.start()
	flowcraft := []byte(`{ "runId":"run-1", "blueprintId":"bp", "nodeId":"charge" }`)
	malformed := []byte(`{not json`)
	tb.batchUp(g, 3, func() {
		tb.publishRaw(amqp.Publishing{ContentType: "application/json", Body: flowcraft,
			Headers: amqp.Table{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}})
		tb.publishRaw(amqp.Publishing{ContentType: "application/json", MessageId: "run-2:ship:4",
			Body: []byte(`{"runId":"run-2","blueprintId":"bp","nodeId":"ship","attempt":4}`), Headers: amqp.Table{jobqueue.HeaderAttempts: int32(2)}})
		tb.publishRaw(amqp.Publishing{ContentType: "application/json", Body: malformed})
	})
	r := tb.nextRequest(wait)
	if ct := r.Header.Get("Content-Type"); ct != wire.BatchContentType {
		t.Errorf("Content-Type = %q, want %q", ct, wire.BatchContentType)
	}
	if v := r.Header.Get("X-Delivery-Attempt"); v != "" {
		t.Errorf("a batch request has X-Delivery-Attempt %q; each event carries its own", v)
	}
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &raw); err != nil {
		t.Fatalf("body is not a JSON array of objects: %v\n%s", err, r.Body)
	}
	if len(raw) != 3 {
		t.Fatalf("%d events, want 3:\n%s", len(raw), r.Body)
	}
	str := func(i int, k string) string {
		var s string
		if err := json.Unmarshal(raw[i][k], &s); err != nil {
			t.Errorf("event %d: %s = %s, want a string", i, k, raw[i][k])
		}
		return s
	}
	for i, want := range []map[string]string{
		{"id": "run-1:charge:1", "subject": "run-1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		{"id": "run-2:ship:4", "subject": "run-2"},
		{"id": fmt.Sprintf("%x", sha256.Sum256(malformed))},
	} {
		want["specversion"], want["type"], want["source"], want["datacontenttype"] = "1.0", EventTypeJob, tb.queue, "application/json"
		for k, v := range want {
			if got := str(i, k); got != v {
				t.Errorf("event %d: %s = %q, want %q", i, k, got, v)
			}
		}
	}
	if _, ok := raw[2]["subject"]; ok {
		t.Errorf("subject set for a body without a run id")
	}
	for i, want := range []int{1, 3, 1} {
		if got := string(raw[i][wire.DeliveryAttemptExtension]); got != strconv.Itoa(want) {
			t.Errorf("event %d: %s = %s, want the JSON number %d", i, wire.DeliveryAttemptExtension, got, want)
		}
	}
	// encoding/json, which sdk-go writes a batch with, compacts the events,
	// so the job JSON comes without its spaces.
	var compact bytes.Buffer
	_ = json.Compact(&compact, flowcraft)
	if got := string(raw[0]["data"]); got != compact.String() {
		t.Errorf("event 0: data = %s, want the body as JSON: %s", got, flowcraft)
	}
	if got, _ := base64.StdEncoding.DecodeString(str(2, "data_base64")); string(got) != string(malformed) {
		t.Errorf("event 2: data_base64 = %q, want the body that is not JSON unchanged", got)
	}
	// And as sdk-go reads it.
	evs := r.events(t)
	if string(evs[2].Data()) != string(malformed) {
		t.Errorf("event 2 data = %q", evs[2].Data())
	}
	tb.waitOutcome(outcomeAck, 4, wait)
	tb.stopAndAssertEmpty()
}

// Under load deliveries wait for a request slot and go out together, at most
// BatchSize at a time; a lone job goes at once, alone.
func TestBatchesFormUnderLoad(t *testing.T) {
	t.Parallel()
	g := newGate()
	tb := setupRaw(t, g.wrap(t, func(w http.ResponseWriter, r *http.Request) { ackAll(t, w, r) }), func(c *Config) { c.Concurrency = 1; c.BatchSize = 8; c.Prefetch = 64 })
	tb.start()
	var want []string
	tb.batchUp(g, 20, func() {
		for i := range 20 {
			j := wire.Job{RunID: "r", BlueprintID: "bp", NodeID: fmt.Sprint("n", i)}
			want = append(want, j.ID())
			tb.publishJob(j, 0)
		}
	})
	var got []string
	for _, size := range []int{8, 8, 4} {
		evs := tb.nextRequest(wait).events(t)
		if len(evs) != size {
			t.Errorf("batch of %d, want %d (BatchSize 8, 20 waiting)", len(evs), size)
		}
		got = append(got, ids(evs)...)
	}
	if !slices.Equal(got, want) {
		t.Errorf("jobs sent %v, want the queue's order %v", got, want)
	}
	tb.waitOutcome(outcomeAck, 21, wait)

	published := time.Now()
	tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "lone"}, 0)
	r := tb.nextRequest(wait)
	if evs := r.events(t); len(evs) != 1 || evs[0].ID() != "r:lone:1" || isBatch(r.Header) {
		t.Errorf("lone job sent as %v (Content-Type %q), want alone, in the one-event form", ids(evs), r.Header.Get("Content-Type"))
	}
	if took := r.At.Sub(published); took > time.Second {
		t.Errorf("lone job reached the function after %s: it waited for a batch", took)
	}
	tb.waitOutcome(outcomeAck, 22, wait)
	if n, sum := histogram(t, tb.bridge.metrics.batchSize); n != 5 || sum != 22 {
		t.Errorf("batch size histogram: %d requests, %v deliveries; want 5 and 22", n, sum)
	}
	tb.stopAndAssertEmpty()
}

// Each job of one batch gets its own outcome from its own result.
func TestBatchMixedResults(t *testing.T) {
	t.Parallel()
	const tp = "00-11111111111111111111111111111111-2222222222222222-01"
	next := wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "after"}
	var mu sync.Mutex
	attempts := map[string][]int{} // job id → delivery attempts seen
	var afterTP string             // the traceparent of pub's next job
	g := newGate()
	tb := setupRaw(t, g.wrap(t, func(w http.ResponseWriter, r *http.Request) {
		answerJobs(t, w, r, func(evs []event.Event) []wire.Result {
			results := make([]wire.Result, len(evs))
			mu.Lock()
			defer mu.Unlock()
			for i, ev := range evs {
				attempts[ev.ID()] = append(attempts[ev.ID()], deliveryAttempt(t, ev))
				first := len(attempts[ev.ID()]) == 1
				if ev.ID() == next.ID() {
					afterTP = fmt.Sprint(ev.Extensions()[jobqueue.HeaderTraceparent])
				}
				switch res := &results[i]; {
				case ev.ID() == "r:pub:1":
					*res = wire.Result{Status: 200, Jobs: []wire.NextJob{{Job: next}}}
				case ev.ID() == "r:busy:1" && first:
					*res = wire.Result{Status: 409, Error: "lease held by another delivery"}
				case ev.ID() == "r:bad:1":
					*res = wire.Result{Status: 422, Error: `node "bad" does not exist`}
				case ev.ID() == "r:down:1" && first:
					*res = wire.Result{Status: 503, Error: "database unavailable"}
				default:
					*res = wire.Result{Status: 200}
				}
			}
			return results
		})
	}), func(c *Config) { c.Concurrency = 1 })
	tb.start()
	start := time.Now().Add(-time.Second).Truncate(time.Second)
	nodes := []string{"pub", "ack", "busy", "bad", "down"}
	tb.batchUp(g, len(nodes), func() {
		for _, n := range nodes {
			tb.publishRaw(amqp.Publishing{ContentType: "application/json", MessageId: "r:" + n + ":1",
				Body: []byte(`{"runId":"r","blueprintId":"bp","nodeId":"` + n + `"}`), Headers: amqp.Table{"traceparent": tp}})
		}
	})
	if evs := tb.nextRequest(wait).events(t); len(evs) != len(nodes) {
		t.Fatalf("batch %v, want the %d jobs together", ids(evs), len(nodes))
	}

	d := tb.get(jobqueue.DeadLetterQueue(tb.queue), wait)
	if d.MessageId != "r:bad:1" {
		t.Errorf("dead letter %s, want r:bad:1", d.MessageId)
	}
	assertDeadLetterHeaders(t, d, "422", `node "bad" does not exist`, 1, start)
	// warm-up, ack, busy and down at their second attempt, pub's next job
	tb.waitOutcome(outcomeAck, 5, wait)
	mu.Lock()
	if afterTP != tp {
		t.Errorf("next job's traceparent = %q, want the run's trace %s", afterTP, tp)
	}
	mu.Unlock()
	tb.stopAndAssertEmpty()
	for outcome, want := range map[string]int{outcomeReplyPublished: 1, outcomeAck: 5, outcomeRetried: 2, outcomeDeadLettered: 1, outcomeRequeued: 0} {
		if got := tb.outcomes(outcome); got != want {
			t.Errorf("%s = %d, want %d", outcome, got, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id, want := range map[string][]int{"r:pub:1": {1}, "r:ack:1": {1}, "r:bad:1": {1}, "r:busy:1": {1, 2}, "r:down:1": {1, 2}, "r:after:1": {1}} {
		if !slices.Equal(attempts[id], want) {
			t.Errorf("%s delivery attempts %v, want %v", id, attempts[id], want)
		}
	}
}

// A failure of the whole request retries every job of the batch, each with
// its own attempt count.
func TestBatchWholeRequestFailure(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		fail func(w http.ResponseWriter, r *http.Request)
		gap  time.Duration // the least wait before the retry
	}{
		{"503", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "function not started", http.StatusServiceUnavailable)
		}, time.Second},
		{"timeout", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, 0},
		{"connection reset", func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			_ = conn.(interface{ SetLinger(int) error }).SetLinger(0) // RST, not FIN
			conn.Close()
		}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int64
			var failedAt atomic.Int64
			var mu sync.Mutex
			attempts := map[string][]int{}
			g := newGate()
			tb := setupRaw(t, g.wrap(t, func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) == 1 {
					failedAt.Store(time.Now().UnixNano())
					tt.fail(w, r)
					return
				}
				answerJobs(t, w, r, func(evs []event.Event) []wire.Result {
					mu.Lock()
					for _, ev := range evs {
						attempts[ev.ID()] = append(attempts[ev.ID()], deliveryAttempt(t, ev))
					}
					mu.Unlock()
					return slices.Repeat([]wire.Result{{Status: 200}}, len(evs))
				})
			}), func(c *Config) { c.Concurrency = 1; c.RequestTimeout = time.Second; c.MaxAttempts = 10 })
			tb.start()
			made := map[string]int32{"r:a:1": 0, "r:b:1": 2, "r:c:1": 5} // x-attempts already made
			tb.batchUp(g, len(made), func() {
				for _, n := range []string{"a", "b", "c"} {
					h := amqp.Table{}
					if m := made["r:"+n+":1"]; m > 0 {
						h[jobqueue.HeaderAttempts] = m
					}
					tb.publishRaw(amqp.Publishing{ContentType: "application/json", MessageId: "r:" + n + ":1",
						Body: []byte(`{"runId":"r","blueprintId":"bp","nodeId":"` + n + `"}`), Headers: h})
				}
			})
			first := tb.nextRequest(wait)
			for i, ev := range first.events(t) {
				if got, want := deliveryAttempt(t, ev), int(made[ev.ID()])+1; got != want {
					t.Errorf("event %d (%s): deliveryattempt %d, want %d", i, ev.ID(), got, want)
				}
			}
			tb.waitOutcome(outcomeRetried, 3, wait)
			tb.waitOutcome(outcomeAck, 4, wait)
			retry := tb.nextRequest(wait)
			if gap := retry.At.Sub(time.Unix(0, failedAt.Load())); gap < tt.gap {
				t.Errorf("retried after %s, want at least %s (Retry-After)", gap, tt.gap)
			}
			tb.stopAndAssertEmpty()
			mu.Lock()
			defer mu.Unlock()
			for id, m := range made {
				if want := []int{int(m) + 2}; !slices.Equal(attempts[id], want) {
					t.Errorf("%s retried with delivery attempts %v, want %v", id, attempts[id], want)
				}
			}
			if got := tb.outcomes(outcomeDeadLettered); got != 0 {
				t.Errorf("dead_lettered = %d, want 0", got)
			}
		})
	}
}

// A whole-request failure on a job's last attempt dead-letters it with the
// code of that failure, while the others of the batch are retried.
func TestBatchWholeRequestDeadLetters(t *testing.T) {
	t.Parallel()
	g := newGate()
	var calls atomic.Int64
	tb := setupRaw(t, g.wrap(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		ackAll(t, w, r)
	}), func(c *Config) { c.Concurrency = 1; c.MaxAttempts = 3 })
	tb.start()
	start := time.Now().Add(-time.Second).Truncate(time.Second)
	tb.batchUp(g, 2, func() {
		tb.publishRaw(amqp.Publishing{ContentType: "application/json", MessageId: "r:last:1",
			Body: []byte(`{"runId":"r","blueprintId":"bp","nodeId":"last"}`), Headers: amqp.Table{jobqueue.HeaderAttempts: int32(2)}})
		tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "fresh"}, 0)
	})
	d := tb.get(jobqueue.DeadLetterQueue(tb.queue), wait)
	if d.MessageId != "r:last:1" {
		t.Errorf("dead letter %s, want r:last:1", d.MessageId)
	}
	assertDeadLetterHeaders(t, d, "500", "boom", 3, start)
	tb.waitOutcome(outcomeAck, 2, wait) // warm-up, fresh
	tb.stopAndAssertEmpty()
	if got := tb.outcomes(outcomeRetried); got != 1 {
		t.Errorf("retried = %d, want 1", got)
	}
}

// A 2xx that is not a valid batch reply dead-letters, as bad-reply, every
// job without a valid result of its own; the others get theirs.
func TestBatchBadReply(t *testing.T) {
	t.Parallel()
	ok := wire.Result{Status: 200}
	okResult := func(id string) event.Event { return resultEvent(t, id, ok) }
	for _, tt := range []struct {
		name   string
		reply  func(t *testing.T, w http.ResponseWriter, ids []string)
		bad    []string // dead-lettered, the others acked
		reason string
	}{
		{"plain text", func(t *testing.T, w http.ResponseWriter, ids []string) { _, _ = w.Write([]byte("ok")) },
			[]string{"r:a:1", "r:b:1", "r:c:1"}, "not a CloudEvents batch"},
		{"empty 204", func(t *testing.T, w http.ResponseWriter, ids []string) { w.WriteHeader(http.StatusNoContent) },
			[]string{"r:a:1", "r:b:1", "r:c:1"}, "not a CloudEvents batch (HTTP 204"},
		{"one jobs event", func(t *testing.T, w http.ResponseWriter, ids []string) {
			ev := event.New()
			ev.SetID("x")
			ev.SetType(EventTypeJobs)
			ev.SetSource("/f")
			_ = ev.SetData("application/json", wire.Reply{Jobs: []wire.NextJob{}})
			_ = cehttp.WriteResponseWriter(t.Context(), binding.ToMessage(&ev), http.StatusOK, w)
		}, []string{"r:a:1", "r:b:1", "r:c:1"}, "not a CloudEvents batch"},
		{"unreadable", func(t *testing.T, w http.ResponseWriter, ids []string) {
			w.Header().Set("Content-Type", wire.BatchContentType)
			_, _ = w.Write([]byte(`[{"specversion":`))
		}, []string{"r:a:1", "r:b:1", "r:c:1"}, "not a readable CloudEvents batch"},
		{"too few results", func(t *testing.T, w http.ResponseWriter, ids []string) {
			writeEvents(t, w, []event.Event{okResult(ids[0]), okResult(ids[1])})
		}, []string{"r:c:1"}, "2 results for 3 jobs"},
		{"id mismatch", func(t *testing.T, w http.ResponseWriter, ids []string) {
			writeEvents(t, w, []event.Event{okResult(ids[0]), okResult("r:x:1"), okResult(ids[2])})
		}, []string{"r:b:1"}, `has id "r:x:1", want "r:b:1"`},
		{"out of order", func(t *testing.T, w http.ResponseWriter, ids []string) {
			writeEvents(t, w, []event.Event{okResult(ids[1]), okResult(ids[0]), okResult(ids[2])})
		}, []string{"r:a:1", "r:b:1"}, "request order"},
		{"wrong type", func(t *testing.T, w http.ResponseWriter, ids []string) {
			b := okResult(ids[1])
			b.SetType(EventTypeJobs)
			writeEvents(t, w, []event.Event{okResult(ids[0]), b, okResult(ids[2])})
		}, []string{"r:b:1"}, `type "dev.stepflow.jobs.v1"`},
		{"data not a result", func(t *testing.T, w http.ResponseWriter, ids []string) {
			b := okResult(ids[1])
			_ = b.SetData("application/json", map[string]string{"status": "fine"})
			writeEvents(t, w, []event.Event{okResult(ids[0]), b, okResult(ids[2])})
		}, []string{"r:b:1"}, `data is not {"status"`},
		{"no status", func(t *testing.T, w http.ResponseWriter, ids []string) {
			writeEvents(t, w, []event.Event{okResult(ids[0]), resultEvent(t, ids[1], wire.Result{}), okResult(ids[2])})
		}, []string{"r:b:1"}, "status 0"},
		{"invalid job", func(t *testing.T, w http.ResponseWriter, ids []string) {
			b := resultEvent(t, ids[1], wire.Result{Status: 200, Jobs: []wire.NextJob{{Job: wire.Job{RunID: "r", NodeID: "n"}}}})
			writeEvents(t, w, []event.Event{okResult(ids[0]), b, okResult(ids[2])})
		}, []string{"r:b:1"}, "jobs[0]: blueprintId is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int64
			g := newGate()
			tb := setupRaw(t, g.wrap(t, func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) > 1 {
					t.Errorf("a bad reply was retried")
					ackAll(t, w, r)
					return
				}
				evs, err := cehttp.NewEventsFromHTTPRequest(r)
				if err != nil {
					t.Error(err)
				}
				tt.reply(t, w, ids(evs))
			}), func(c *Config) { c.Concurrency = 1 })
			tb.start()
			start := time.Now().Add(-time.Second).Truncate(time.Second)
			tb.batchUp(g, 3, func() {
				for _, n := range []string{"a", "b", "c"} {
					tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: n}, 0)
				}
			})
			var got []string
			for range tt.bad {
				d := tb.get(jobqueue.DeadLetterQueue(tb.queue), wait)
				got = append(got, d.MessageId)
				assertDeadLetterHeaders(t, d, CodeBadReply, tt.reason, 1, start)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.bad) {
				t.Errorf("dead-lettered %v, want %v", got, tt.bad)
			}
			tb.waitOutcome(outcomeAck, 1+3-len(tt.bad), wait)
			tb.stopAndAssertEmpty()
			if n := tb.outcomes(outcomeDeadLettered); n != len(tt.bad) {
				t.Errorf("dead_lettered = %d, want %d", n, len(tt.bad))
			}
			if n := tb.outcomes(outcomeAck); n != 1+3-len(tt.bad) {
				t.Errorf("ack = %d, want %d", n, 1+3-len(tt.bad))
			}
		})
	}
}

// Shutdown with a batch in flight past the grace: the request is cancelled
// and every job of it requeued, none counted as failed.
func TestBatchShutdownRequeuesInFlight(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	cancelled := make(chan struct{})
	g := newGate()
	tb := setupRaw(t, g.wrap(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			<-r.Context().Done()
			close(cancelled)
			return
		}
		ackAll(t, w, r)
	}), func(c *Config) { c.Concurrency = 1; c.ShutdownGrace = 200 * time.Millisecond })
	tb.start()
	tb.batchUp(g, 3, func() {
		for _, n := range []string{"a", "b", "c"} {
			tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: n}, 0)
		}
	})
	if evs := tb.nextRequest(wait).events(t); len(evs) != 3 {
		t.Fatalf("batch %v, want 3 jobs", ids(evs))
	}
	if err := tb.stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	select {
	case <-cancelled:
	case <-time.After(wait):
		t.Fatal("the in-flight batch was not cancelled")
	}
	if n := tb.count(jobqueue.DeadLetterQueue(tb.queue)); n != 0 {
		t.Errorf("%d dead letters after a shutdown", n)
	}
	var got []string
	for range 3 {
		d := tb.get(tb.queue, wait)
		got = append(got, d.MessageId)
		if _, ok := d.Headers[jobqueue.HeaderAttempts]; ok {
			t.Errorf("shutdown counted as a failed attempt: %v", d.Headers)
		}
	}
	slices.Sort(got)
	if want := []string{"r:a:1", "r:b:1", "r:c:1"}; !slices.Equal(got, want) {
		t.Errorf("requeued %v, want %v", got, want)
	}
	if got := tb.outcomes(outcomeRequeued); got != 3 {
		t.Errorf("requeued = %d, want 3", got)
	}
	if got := tb.outcomes(outcomeRetried) + tb.outcomes(outcomeDeadLettered); got != 0 {
		t.Errorf("retried+dead_lettered = %d, want 0", got)
	}
	if got := metricValue(t, tb.bridge.metrics.inflight); got != 0 {
		t.Errorf("inflight = %v after shutdown", got)
	}
	if got := metricValue(t, tb.bridge.metrics.waiting); got != 0 {
		t.Errorf("waiting = %v after shutdown", got)
	}
}

// A batch also stops at maxBatchBytes: a delivery that does not fit goes
// first in the next request, and order is kept.
func TestBatchBytesLimit(t *testing.T) {
	t.Parallel()
	g := newGate()
	tb := setupRaw(t, g.wrap(t, func(w http.ResponseWriter, r *http.Request) { ackAll(t, w, r) }),
		func(c *Config) { c.Concurrency = 1; c.BatchSize = 8 })
	tb.start()
	pad := strings.Repeat("x", 2<<20) // two of these are more than maxBatchBytes
	big := func(n string) []byte {
		return []byte(`{"runId":"r","blueprintId":"bp","nodeId":"` + n + `","pad":"` + pad + `"}`)
	}
	order := []string{"big0", "big1", "small0", "small1", "big2"}
	tb.batchUp(g, len(order), func() {
		for _, n := range order {
			body := []byte(`{"runId":"r","blueprintId":"bp","nodeId":"` + n + `"}`)
			if strings.HasPrefix(n, "big") {
				body = big(n)
			}
			tb.publishRaw(amqp.Publishing{ContentType: "application/json", MessageId: "r:" + n + ":1", Body: body})
		}
	})
	var got [][]string
	for range 3 {
		r := tb.nextRequest(wait)
		if len(r.Body) > maxBatchBytes {
			t.Errorf("batch request of %d bytes, more than %d", len(r.Body), maxBatchBytes)
		}
		got = append(got, ids(r.events(t)))
	}
	want := [][]string{{"r:big0:1"}, {"r:big1:1", "r:small0:1", "r:small1:1"}, {"r:big2:1"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("batches %v, want %v", got, want)
	}
	tb.waitOutcome(outcomeAck, 1+len(order), wait)
	tb.stopAndAssertEmpty()
}
