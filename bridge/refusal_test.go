package bridge

// End-to-end tests of a batch refused as a whole (400, 413, 415): its jobs
// go again one per request, and after a 400 or 415 no more batches go.

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
)

// holder holds the function's one-event request for the job with id until
// released, so that with Concurrency 1 the jobs published meanwhile wait in
// the bridge for the next request slot (gate does this for the first
// request only).
type holder struct {
	id       string
	open     chan struct{}
	openOnce sync.Once
}

func newHolder(t *testing.T, id string) *holder {
	h := &holder{id: id, open: make(chan struct{})}
	t.Cleanup(h.release) // a failed test must not leave the server's handler blocked
	return h
}

func (h *holder) release() { h.openOnce.Do(func() { close(h.open) }) }

func (h *holder) wrap(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !isBatch(r.Header) && r.Header.Get("Ce-Id") == h.id {
			<-h.open
		}
		next(w, r)
	}
}

// holdUp makes the function's next request after the held job's hold the
// n deliveries that publish publishes. It publishes the held job itself
// and consumes its request from tb.reqs.
func (tb *testBundle) holdUp(h *holder, job wire.Job, n int, publish func()) {
	tb.t.Helper()
	if job.ID() != h.id {
		tb.t.Fatalf("held job %s, holder waits for %s", job.ID(), h.id)
	}
	tb.publishJob(job, 0)
	if r := tb.nextRequest(wait); r.Header.Get("Ce-Id") != h.id {
		tb.t.Fatalf("request %q (Content-Type %q), want the held job %s alone", r.Header.Get("Ce-Id"), r.Header.Get("Content-Type"), h.id)
	}
	publish()
	testenv.Eventually(tb.t, wait, fmt.Sprint(n, " deliveries waiting for the request slot"), func() bool {
		return metricValue(tb.t, tb.bridge.metrics.waiting) == float64(n)
	})
	h.release()
}

// logRecorder keeps the messages of the records at warn level and above
// that it passes on to the test's log.
type logRecorder struct {
	slog.Handler
	mu   *sync.Mutex
	msgs *[]string
}

func recordWarnings(t *testing.T) (*slog.Logger, func() []string) {
	h := logRecorder{Handler: testLogger(t).Handler(), mu: &sync.Mutex{}, msgs: new([]string)}
	return slog.New(h), func() []string {
		h.mu.Lock()
		defer h.mu.Unlock()
		return slices.Clone(*h.msgs)
	}
}

func (h logRecorder) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.mu.Lock()
		*h.msgs = append(*h.msgs, r.Message)
		h.mu.Unlock()
	}
	return h.Handler.Handle(ctx, r)
}

func (h logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	h.Handler = h.Handler.WithAttrs(as)
	return h
}

func (h logRecorder) WithGroup(name string) slog.Handler {
	h.Handler = h.Handler.WithGroup(name)
	return h
}

// matching returns the messages that contain part.
func matching(msgs []string, part string) []string {
	var out []string
	for _, m := range msgs {
		if strings.Contains(m, part) {
			out = append(out, m)
		}
	}
	return out
}

const refusedWarning = "refused a CloudEvents batch ("

// oneEventRequests reads the next n requests: each one job, in the one-event
// form. It returns their job ids and delivery attempts.
func (tb *testBundle) oneEventRequests(n int) (ids []string, attempts []int) {
	tb.t.Helper()
	for range n {
		r := tb.nextRequest(wait)
		if isBatch(r.Header) {
			tb.t.Fatalf("a batch request (%s), want one job per request", r.Body)
		}
		ids = append(ids, r.Header.Get("Ce-Id"))
		a, err := strconv.Atoi(r.Header.Get("X-Delivery-Attempt"))
		if err != nil {
			tb.t.Errorf("X-Delivery-Attempt %q: %v", r.Header.Get("X-Delivery-Attempt"), err)
		}
		attempts = append(attempts, a)
	}
	return ids, attempts
}

// A function that takes no batches (func-go reads one event per request)
// answers a batch 400 (or 415) as a whole. The bridge does not dead-letter
// the batch's jobs: it sends each of them again, at once, alone (its
// delivery attempt unchanged), decides on its own reply, and sends no
// more batches, saying so once.
func TestBatchRefusedFallsBackToOneEvent(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		status int
		body   string
	}{
		{http.StatusBadRequest, "could not read the CloudEvent: unknown Message encoding"},
		{http.StatusUnsupportedMediaType, "unsupported content type"},
	} {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			t.Parallel()
			next := wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "after"}
			var batches atomic.Int64
			g, h := newGate(), newHolder(t, "r:hold:1")
			logger, warnings := recordWarnings(t)
			tb := setupRaw(t, g.wrap(t, h.wrap(func(w http.ResponseWriter, r *http.Request) {
				if isBatch(r.Header) {
					batches.Add(1)
					http.Error(w, tt.body, tt.status)
					return
				}
				answerJobs(t, w, r, func(evs []event.Event) []wire.Result {
					if evs[0].ID() == "r:pub:1" {
						return []wire.Result{{Status: 200, Jobs: []wire.NextJob{{Job: next}}}}
					}
					return []wire.Result{{Status: 200}}
				})
			})), func(c *Config) { c.Concurrency = 1; c.Logger = logger })
			tb.start()
			if got := metricValue(t, tb.bridge.metrics.batchesRefused); got != 0 {
				t.Errorf("batches_refused = %v before any batch, want 0", got)
			}

			tb.batchUp(g, 3, func() {
				tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "a"}, 0)
				tb.publishRaw(amqp.Publishing{ContentType: "application/json", MessageId: "r:b:1",
					Body: []byte(`{"runId":"r","blueprintId":"bp","nodeId":"b"}`), Headers: amqp.Table{jobqueue.HeaderAttempts: int32(2)}})
				tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "pub"}, 0)
			})
			refused := tb.nextRequest(wait)
			if evs := refused.events(t); !isBatch(refused.Header) || len(evs) != 3 {
				t.Fatalf("first request %v (Content-Type %q), want the batch of 3", ids(evs), refused.Header.Get("Content-Type"))
			}
			gotIDs, gotAttempts := tb.oneEventRequests(4) // a, b, pub again, then pub's next job
			if want := []string{"r:a:1", "r:b:1", "r:pub:1", "r:after:1"}; !slices.Equal(gotIDs, want) {
				t.Errorf("one-event requests %v, want %v", gotIDs, want)
			}
			// The refused batch was no attempt at its jobs: the same
			// delivery attempts, not a retry's.
			if want := []int{1, 3, 1, 1}; !slices.Equal(gotAttempts, want) {
				t.Errorf("delivery attempts %v, want %v", gotAttempts, want)
			}
			tb.waitOutcome(outcomeAck, 4, wait) // warm-up, a, b, after
			tb.waitOutcome(outcomeReplyPublished, 1, wait)
			if got := metricValue(t, tb.bridge.metrics.batchesRefused); got != 1 {
				t.Errorf("batches_refused = %v, want 1", got)
			}

			// From now on one job per request, even with several waiting.
			tb.holdUp(h, wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "hold"}, 3, func() {
				for _, n := range []string{"c", "d", "e"} {
					tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: n}, 0)
				}
			})
			gotIDs, _ = tb.oneEventRequests(3)
			if want := []string{"r:c:1", "r:d:1", "r:e:1"}; !slices.Equal(gotIDs, want) {
				t.Errorf("requests after the refusal %v, want %v one by one", gotIDs, want)
			}
			tb.waitOutcome(outcomeAck, 8, wait)
			tb.stopAndAssertEmpty()

			if n := batches.Load(); n != 1 {
				t.Errorf("%d batch requests, want 1 (none after the refusal)", n)
			}
			for outcome, want := range map[string]int{outcomeAck: 8, outcomeReplyPublished: 1, outcomeRetried: 0, outcomeDeadLettered: 0, outcomeRequeued: 0} {
				if got := tb.outcomes(outcome); got != want {
					t.Errorf("%s = %d, want %d", outcome, got, want)
				}
			}
			warned := matching(warnings(), refusedWarning)
			if len(warned) != 1 {
				t.Fatalf("warnings about the refusal: %q, want one", warned)
			}
			for _, part := range []string{fmt.Sprintf("(HTTP %d: %s)", tt.status, tt.body), "one job per request from now on", "BRIDGE_BATCH_SIZE=1"} {
				if !strings.Contains(warned[0], part) {
					t.Errorf("warning %q does not say %q", warned[0], part)
				}
			}
		})
	}
}

// A batch too large for the function (413) goes again one job per request,
// that batch only: the next requests are batches again.
func TestBatchTooLargeFallsBackOnce(t *testing.T) {
	t.Parallel()
	var batches atomic.Int64
	g, h := newGate(), newHolder(t, "r:hold:1")
	logger, warnings := recordWarnings(t)
	tb := setupRaw(t, g.wrap(t, h.wrap(func(w http.ResponseWriter, r *http.Request) {
		if isBatch(r.Header) && batches.Add(1) == 1 {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		ackAll(t, w, r)
	})), func(c *Config) { c.Concurrency = 1; c.Logger = logger })
	tb.start()
	tb.batchUp(g, 3, func() {
		for _, n := range []string{"a", "b", "c"} {
			tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: n}, 0)
		}
	})
	if r := tb.nextRequest(wait); !isBatch(r.Header) {
		t.Fatalf("first request not a batch (Content-Type %q)", r.Header.Get("Content-Type"))
	}
	gotIDs, gotAttempts := tb.oneEventRequests(3)
	if want := []string{"r:a:1", "r:b:1", "r:c:1"}; !slices.Equal(gotIDs, want) {
		t.Errorf("one-event requests %v, want %v", gotIDs, want)
	}
	if want := []int{1, 1, 1}; !slices.Equal(gotAttempts, want) {
		t.Errorf("delivery attempts %v, want %v", gotAttempts, want)
	}
	tb.waitOutcome(outcomeAck, 4, wait)

	tb.holdUp(h, wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "hold"}, 3, func() {
		for _, n := range []string{"d", "e", "f"} {
			tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: n}, 0)
		}
	})
	r := tb.nextRequest(wait)
	if evs := r.events(t); !isBatch(r.Header) || !slices.Equal(ids(evs), []string{"r:d:1", "r:e:1", "r:f:1"}) {
		t.Errorf("request after the 413 %v (Content-Type %q), want the 3 waiting jobs as a batch", ids(evs), r.Header.Get("Content-Type"))
	}
	tb.waitOutcome(outcomeAck, 8, wait) // warm-up, a, b, c, hold, d, e, f
	tb.stopAndAssertEmpty()
	if got := metricValue(t, tb.bridge.metrics.batchesRefused); got != 0 {
		t.Errorf("batches_refused = %v after a 413, want 0", got)
	}
	if got := tb.outcomes(outcomeRetried) + tb.outcomes(outcomeDeadLettered); got != 0 {
		t.Errorf("retried+dead_lettered = %d, want 0", got)
	}
	if n := batches.Load(); n != 2 {
		t.Errorf("%d batch requests, want 2", n)
	}
	if warned := matching(warnings(), "from now on"); len(warned) != 0 {
		t.Errorf("a 413 switched batches off: %q", warned)
	}
	if warned := matching(warnings(), "as too large (HTTP 413"); len(warned) != 1 {
		t.Errorf("warnings about the 413: %q, want one", warned)
	}
}

// Other whole-request failures of a batch are decided as before, and do not
// switch batches off: 422 dead-letters every job, 503 retries every job
// (after backoff, at the next delivery attempt), none is sent again at once.
func TestBatchWholeRequestNotRefusal(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		status int
		dead   int // dead-lettered
		retry  int // retried
	}{
		{http.StatusUnprocessableEntity, 3, 0},
		{http.StatusServiceUnavailable, 0, 3},
	} {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			t.Parallel()
			var batches atomic.Int64
			var mu sync.Mutex
			attempts := map[string][]int{}
			g := newGate()
			logger, warnings := recordWarnings(t)
			tb := setupRaw(t, g.wrap(t, func(w http.ResponseWriter, r *http.Request) {
				if isBatch(r.Header) && batches.Add(1) == 1 {
					http.Error(w, "refused as a whole", tt.status)
					return
				}
				answerJobs(t, w, r, func(evs []event.Event) []wire.Result {
					mu.Lock()
					defer mu.Unlock()
					for _, ev := range evs {
						attempts[ev.ID()] = append(attempts[ev.ID()], deliveryAttempt(t, ev))
					}
					return slices.Repeat([]wire.Result{{Status: 200}}, len(evs))
				})
			}), func(c *Config) { c.Concurrency = 1; c.Logger = logger })
			tb.start()
			start := time.Now().Add(-time.Second).Truncate(time.Second)
			tb.batchUp(g, 3, func() {
				for _, n := range []string{"a", "b", "c"} {
					tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: n}, 0)
				}
			})
			if r := tb.nextRequest(wait); !isBatch(r.Header) {
				t.Fatalf("first request not a batch (Content-Type %q)", r.Header.Get("Content-Type"))
			}
			var dead []string
			for range tt.dead {
				d := tb.get(jobqueue.DeadLetterQueue(tb.queue), wait)
				dead = append(dead, d.MessageId)
				assertDeadLetterHeaders(t, d, strconv.Itoa(tt.status), "refused as a whole", 1, start)
			}
			slices.Sort(dead)
			if tt.dead > 0 && !slices.Equal(dead, []string{"r:a:1", "r:b:1", "r:c:1"}) {
				t.Errorf("dead-lettered %v, want every job of the batch", dead)
			}
			tb.waitOutcome(outcomeRetried, tt.retry, wait)
			tb.waitOutcome(outcomeAck, 1+tt.retry, wait)
			tb.stopAndAssertEmpty()
			if got := tb.outcomes(outcomeDeadLettered); got != tt.dead {
				t.Errorf("dead_lettered = %d, want %d", got, tt.dead)
			}
			if got := tb.outcomes(outcomeRetried); got != tt.retry {
				t.Errorf("retried = %d, want %d", got, tt.retry)
			}
			mu.Lock()
			for _, id := range []string{"r:a:1", "r:b:1", "r:c:1"} {
				var want []int // not sent again after a 422
				if tt.retry > 0 {
					want = []int{2} // retried, not resent at attempt 1
				}
				if got := attempts[id]; !slices.Equal(got, want) {
					t.Errorf("%s sent again with delivery attempts %v, want %v", id, got, want)
				}
			}
			mu.Unlock()
			if got := metricValue(t, tb.bridge.metrics.batchesRefused); got != 0 {
				t.Errorf("batches_refused = %v, want 0", got)
			}
			if warned := matching(warnings(), refusedWarning); len(warned) != 0 {
				t.Errorf("a %d switched batches off: %q", tt.status, warned)
			}
		})
	}
}
