package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
)

const wait = 10 * time.Second // generous upper bound for anything that should take milliseconds

func noContent(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }

// replyJobs writes a binary-mode dev.stepflow.jobs.v1 reply with sdk-go, as the
// function does.
func replyJobs(t *testing.T, w http.ResponseWriter, r *http.Request, jobs []ReplyJob) {
	ev := event.New()
	ev.SetID("reply-" + r.Header.Get("Ce-Id"))
	ev.SetType(EventTypeJobs)
	ev.SetSource("/test-function")
	if err := ev.SetData("application/json", map[string]any{"jobs": jobs}); err != nil {
		t.Error(err)
	}
	if err := cehttp.WriteResponseWriter(r.Context(), binding.ToMessage(&ev), http.StatusOK, w); err != nil {
		t.Error(err)
	}
}

func TestReady(t *testing.T) {
	t.Parallel()
	tb := setup(t, noContent)
	if tb.bridge.Ready() {
		t.Fatal("Ready before Run")
	}
	tb.start() // waits for Ready
	if err := tb.stop(); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
	if tb.bridge.Ready() {
		t.Fatal("Ready after Run returned")
	}
	if err := tb.bridge.Run(context.Background()); err == nil {
		t.Fatal("second Run accepted")
	}
}

func TestRunWaitsForFunctionReadiness(t *testing.T) {
	t.Parallel()
	var ready atomic.Bool
	readiness := http.NewServeMux()
	probes := make(chan struct{}, 100)
	readiness.HandleFunc("/health/readiness", func(w http.ResponseWriter, r *http.Request) {
		probes <- struct{}{}
		if !ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	})
	rs := newHTTPServer(t, readiness)
	tb := setup(t, noContent, func(c *Config) { c.ReadinessURL = rs + "/health/readiness" })

	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- tb.bridge.Run(ctx) }()
	for range 2 { // two failed probes: it is polling, not consuming
		select {
		case <-probes:
		case <-time.After(wait):
			t.Fatal("no readiness probe")
		}
	}
	if tb.bridge.Ready() {
		t.Fatal("consuming before the function is ready")
	}
	ready.Store(true)
	testenv.Eventually(t, wait, "Ready once the function is ready", tb.bridge.Ready)
	cancel()
	if err := <-runErr; err != nil {
		t.Fatal(err)
	}
}

// TestRequestShape checks the CloudEvent the function receives in the
// one-event form (BatchSize 1): binary mode, X-Delivery-Attempt, traceparent.
// TestBatchRequestShape checks the batch form.
func TestRequestShape(t *testing.T) {
	t.Parallel()
	tb := setup(t, noContent, single)
	tb.start()

	// A Flowcraft-style message: no message id, odd spacing that must survive.
	body := []byte(`{ "runId":"run-1", "blueprintId":"bp", "nodeId":"charge" }`)
	tb.publishRaw(amqp.Publishing{
		ContentType: "application/json",
		Body:        body,
		Headers:     amqp.Table{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
	})
	r := tb.nextRequest(wait)
	for k, want := range map[string]string{
		"Ce-Specversion":     "1.0",
		"Ce-Id":              "run-1:charge:1",
		"Ce-Type":            EventTypeJob,
		"Ce-Source":          tb.queue,
		"Ce-Subject":         "run-1",
		"Content-Type":       "application/json",
		"X-Delivery-Attempt": "1",
		"Traceparent":        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if string(r.Body) != string(body) {
		t.Errorf("body = %s, want it unchanged: %s", r.Body, body)
	}

	// A stepflow message: the message id is the CloudEvent id.
	tb.publishJob(wire.Job{RunID: "run-2", BlueprintID: "bp", NodeID: "ship", Attempt: 4}, 0)
	r = tb.nextRequest(wait)
	if got := r.Header.Get("Ce-Id"); got != "run-2:ship:4" {
		t.Errorf("ce-id = %q", got)
	}
	tb.waitOutcome(outcomeAck, 2, wait)
	tb.stopAndAssertEmpty()
}

// Row 1: 200 with a jobs event → publish every job (delayed ones through the
// delay queues), then ack.
func TestReplyJobsArePublished(t *testing.T) {
	t.Parallel()
	forms(t, func(t *testing.T, form func(*Config)) {
		next := []ReplyJob{
			{Job: wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "b", Attempt: 1}},
			{Job: wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "c", Attempt: 2}, DelayMs: 300},
		}
		var replied atomic.Int64 // unix nanos of the jobs reply
		tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Ce-Id") == "r:a:1" {
				replied.Store(time.Now().UnixNano())
				replyJobs(t, w, r, next)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}, form)
		tb.start()
		tb.publishRaw(amqp.Publishing{
			ContentType: "application/json",
			Body:        []byte(`{"runId":"r","blueprintId":"bp","nodeId":"a"}`),
			Headers:     amqp.Table{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"},
		})
		if r := tb.nextRequest(wait); r.Header.Get("Ce-Id") != "r:a:1" {
			t.Fatalf("first request %v", r.Header)
		}
		got := map[string]request{}
		for range 2 {
			r := tb.nextRequest(wait)
			got[r.Header.Get("Ce-Id")] = r
		}
		for _, j := range next {
			r, ok := got[j.ID()]
			if !ok {
				t.Fatalf("job %s was not delivered; got %v", j.ID(), got)
			}
			want, _ := json.Marshal(j.Job)
			if string(r.Body) != string(want) {
				t.Errorf("job %s body = %s, want %s (delayMs stripped)", j.ID(), r.Body, want)
			}
			if strings.Contains(string(r.Body), "delayMs") {
				t.Errorf("delayMs not stripped: %s", r.Body)
			}
			if tp := r.Header.Get("Traceparent"); tp != "00-11111111111111111111111111111111-2222222222222222-01" {
				t.Errorf("traceparent not carried to the next job: %q", tp)
			}
			if j.DelayMs > 0 {
				if early := time.Duration(j.DelayMs)*time.Millisecond - r.At.Sub(time.Unix(0, replied.Load())); early > 0 {
					t.Errorf("delayed job arrived %s early", early)
				}
			}
		}
		// b, due now, was handed on to the function: its copy from the
		// queue is acked without a call; c, delayed, came through the queue.
		tb.waitOutcome(outcomeAck, 1, wait)
		tb.waitOutcome(outcomeHandedOnCopy, 1, wait)
		tb.stopAndAssertEmpty() // settles everything in flight (the reply's confirms may come last)
		if n := tb.calls.Load(); n != 3 {
			t.Errorf("function called %d times, want 3 (a, b, c once each)", n)
		}
		if n := tb.outcomes(outcomeReplyPublished); n != 1 {
			t.Errorf("reply_published = %d, want 1", n)
		}
	})
}

// Row 2: 200 / 202 / 204 without an event → ack.
func TestAckWithoutEvent(t *testing.T) {
	t.Parallel()
	for _, status := range []int{200, 202, 204} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			forms(t, func(t *testing.T, form func(*Config)) {
				tb := setup(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }, form)
				tb.start()
				tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "n"}, 0)
				tb.nextRequest(wait)
				tb.waitOutcome(outcomeAck, 1, wait)
				tb.stopAndAssertEmpty()
				if n := tb.calls.Load(); n != 1 {
					t.Errorf("function called %d times, want 1", n)
				}
			})
		})
	}
}

// Row 3: 400, 413, 415, 422, other 4xx and 3xx → dead-letter at once, then ack.
func TestDeadLetterAtOnce(t *testing.T) {
	t.Parallel()
	for _, status := range []int{400, 413, 415, 422, 403, 302} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			forms(t, func(t *testing.T, form func(*Config)) {
				tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/redirected" {
						t.Error("the bridge followed a redirect")
					}
					if status == http.StatusFound {
						w.Header().Set("Location", "/redirected")
					}
					http.Error(w, fmt.Sprintf("no way (%d)", status), status)
				}, form)
				tb.start()
				start := time.Now().Add(-time.Second).Truncate(time.Second)
				body := []byte(`{"runId":"r","blueprintId":"bp","nodeId":"n"}`)
				tb.publishRaw(amqp.Publishing{
					ContentType:  "application/json",
					DeliveryMode: amqp.Persistent,
					MessageId:    "r:n:1",
					Body:         body,
					Headers:      amqp.Table{"x-custom": "kept"},
				})
				d := tb.get(jobqueue.DeadLetterQueue(tb.queue), wait)
				if string(d.Body) != string(body) || d.MessageId != "r:n:1" || d.ContentType != "application/json" {
					t.Errorf("dead letter lost the message: body %s id %q ct %q", d.Body, d.MessageId, d.ContentType)
				}
				if d.DeliveryMode != amqp.Persistent {
					t.Errorf("dead letter not persistent")
				}
				assertDeadLetterHeaders(t, d, strconv.Itoa(status), fmt.Sprintf("no way (%d)", status), 1, start)
				if got := headerStr(t, d.Headers, "x-custom"); got != "kept" {
					t.Errorf("x-custom = %q", got)
				}
				tb.waitOutcome(outcomeDeadLettered, 1, wait)
				tb.stopAndAssertEmpty()
				if n := tb.calls.Load(); n != 1 {
					t.Errorf("function called %d times, want 1", n)
				}
			})
		})
	}
}

func assertDeadLetterHeaders(t *testing.T, d amqp.Delivery, code, reasonPart string, attempts int, notBefore time.Time) {
	t.Helper()
	if got := headerStr(t, d.Headers, jobqueue.HeaderErrorCode); got != code {
		t.Errorf("x-error-code = %q, want %q", got, code)
	}
	if got := headerStr(t, d.Headers, jobqueue.HeaderErrorReason); !strings.Contains(got, reasonPart) || len(got) > MaxReasonBytes {
		t.Errorf("x-error-reason = %q, want it to contain %q", got, reasonPart)
	}
	if got, ok := jobqueue.HeaderInt(d.Headers, jobqueue.HeaderAttempts); !ok || got != int64(attempts) {
		t.Errorf("x-attempts = %v, want %d", d.Headers[jobqueue.HeaderAttempts], attempts)
	}
	ff, err := time.Parse(time.RFC3339, headerStr(t, d.Headers, jobqueue.HeaderFirstFailure))
	if err != nil {
		t.Errorf("x-first-failure: %v", err)
	} else if ff.Before(notBefore) || ff.After(time.Now()) {
		t.Errorf("x-first-failure = %s, want between %s and now", ff, notBefore)
	}
}

// Row 4: 404, 408, 409, 425, 429, 5xx → retry with the same job id and body,
// X-Delivery-Attempt counting up, until the function accepts.
func TestRetryThenSuccess(t *testing.T) {
	t.Parallel()
	for _, status := range []int{404, 408, 409, 425, 429, 500, 503} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			forms(t, func(t *testing.T, form func(*Config)) {
				var n atomic.Int64
				tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
					if n.Add(1) <= 2 {
						http.Error(w, "not now", status)
						return
					}
					w.WriteHeader(http.StatusNoContent)
				}, form)
				tb.start()
				job := wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "n"}
				tb.publishJob(job, 0)
				want, _ := json.Marshal(job)
				for attempt := 1; attempt <= 3; attempt++ {
					r := tb.nextRequest(wait)
					if got := r.Header.Get("X-Delivery-Attempt"); got != strconv.Itoa(attempt) {
						t.Errorf("X-Delivery-Attempt = %q, want %d", got, attempt)
					}
					if got := r.Header.Get("Ce-Id"); got != "r:n:1" {
						t.Errorf("ce-id = %q, want stable r:n:1", got)
					}
					if string(r.Body) != string(want) {
						t.Errorf("body = %s", r.Body)
					}
				}
				tb.waitOutcome(outcomeAck, 1, wait)
				tb.stopAndAssertEmpty() // a retry may be settled after the attempt it published
				if got := tb.outcomes(outcomeRetried); got != 2 {
					t.Errorf("retried = %d, want 2", got)
				}
			})
		})
	}
}

// 429 with Retry-After: the retry waits at least that long even though the
// backoff is tiny.
func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}, single)
	tb.start()
	tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "n"}, 0)
	first := tb.nextRequest(wait)
	second := tb.nextRequest(wait)
	if gap := second.At.Sub(first.At); gap < time.Second || gap > 3*time.Second {
		t.Errorf("retry came after %s, want about Retry-After (1s)", gap)
	}
	tb.waitOutcome(outcomeAck, 1, wait)
	tb.stopAndAssertEmpty()
}

// MaxAttempts exhausted → DLQ with x-attempts, x-first-failure, x-error-code,
// x-error-reason; the original headers kept.
func TestMaxAttemptsExhausted(t *testing.T) {
	t.Parallel()
	forms(t, func(t *testing.T, form func(*Config)) {
		tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "boom: database down", http.StatusInternalServerError)
		}, func(c *Config) { c.MaxAttempts = 3 }, form)
		tb.start()
		start := time.Now().Add(-time.Second).Truncate(time.Second)
		tb.publishRaw(amqp.Publishing{
			ContentType: "application/json",
			Body:        []byte(`{"runId":"r","blueprintId":"bp","nodeId":"n"}`),
			Headers:     amqp.Table{"x-custom": "kept"},
		})
		d := tb.get(jobqueue.DeadLetterQueue(tb.queue), wait)
		assertDeadLetterHeaders(t, d, "500", "boom: database down", 3, start)
		if got := headerStr(t, d.Headers, "x-custom"); got != "kept" {
			t.Errorf("x-custom = %q", got)
		}
		for attempt := 1; attempt <= 3; attempt++ {
			if got := tb.nextRequest(wait).Header.Get("X-Delivery-Attempt"); got != strconv.Itoa(attempt) {
				t.Errorf("X-Delivery-Attempt = %s, want %d", got, attempt)
			}
		}
		tb.waitOutcome(outcomeDeadLettered, 1, wait)
		tb.stopAndAssertEmpty()
		if n := tb.calls.Load(); n != 3 {
			t.Errorf("function called %d times, want MaxAttempts = 3", n)
		}
	})
}

// A handler slower than RequestTimeout is a timeout: retried, then dead-lettered.
func TestTimeout(t *testing.T) {
	t.Parallel()
	forms(t, func(t *testing.T, form func(*Config)) {
		tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done() // slower than any timeout
		}, func(c *Config) { c.RequestTimeout = 150 * time.Millisecond; c.MaxAttempts = 2 }, form)
		tb.start()
		start := time.Now().Add(-time.Second).Truncate(time.Second)
		tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "n"}, 0)
		d := tb.get(jobqueue.DeadLetterQueue(tb.queue), wait)
		assertDeadLetterHeaders(t, d, CodeTimeout, "deadline exceeded", 2, start)
		tb.waitOutcome(outcomeDeadLettered, 1, wait)
		tb.stopAndAssertEmpty()
		if got := tb.outcomes(outcomeRetried); got != 1 {
			t.Errorf("retried = %d, want 1", got)
		}
	})
}

// Nothing listens on the function's port: a connection error, retried, then
// dead-lettered.
func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	forms(t, func(t *testing.T, form func(*Config)) {
		tb := setup(t, noContent, func(c *Config) {
			c.ReadinessURL = c.FunctionURL + "health/readiness" // the live server answers readiness
			c.FunctionURL = closedPortURL(t)
			c.MaxAttempts = 3
		}, form)
		tb.start()
		start := time.Now().Add(-time.Second).Truncate(time.Second)
		tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "n"}, 0)
		d := tb.get(jobqueue.DeadLetterQueue(tb.queue), wait)
		assertDeadLetterHeaders(t, d, CodeConnection, "refused", 3, start)
		tb.waitOutcome(outcomeDeadLettered, 1, wait)
		tb.stopAndAssertEmpty()
		if got := tb.outcomes(outcomeRetried); got != 2 {
			t.Errorf("retried = %d, want 2", got)
		}
	})
}

// A 200 that is not a valid jobs event is dead-lettered as bad-reply, with the
// reason naming what was wrong.
func TestBadReply(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		reply  func(w http.ResponseWriter, r *http.Request)
		reason string
	}{
		{"plain text", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }, "not a CloudEvent"},
		{"wrong type", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Ce-Specversion", "1.0")
			w.Header().Set("Ce-Id", "x")
			w.Header().Set("Ce-Source", "/f")
			w.Header().Set("Ce-Type", "dev.stepflow.other.v1")
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"jobs":[]}`))
		}, `type "dev.stepflow.other.v1"`},
		{"invalid job", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Ce-Specversion", "1.0")
			w.Header().Set("Ce-Id", "x")
			w.Header().Set("Ce-Source", "/f")
			w.Header().Set("Ce-Type", EventTypeJobs)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"jobs":[{"runId":"r","nodeId":"n"}]}`))
		}, "jobs[0]: blueprintId is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tb := setup(t, tt.reply, single)
			tb.start()
			start := time.Now().Add(-time.Second).Truncate(time.Second)
			tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "n"}, 0)
			d := tb.get(jobqueue.DeadLetterQueue(tb.queue), wait)
			assertDeadLetterHeaders(t, d, CodeBadReply, tt.reason, 1, start)
			tb.waitOutcome(outcomeDeadLettered, 1, wait)
			tb.stopAndAssertEmpty()
		})
	}
}

// A body that does not parse is still POSTed (the bridge never guesses); the
// function's 400 dead-letters it.
func TestMalformedBodyIsPostedAndDeadLettered(t *testing.T) {
	t.Parallel()
	forms(t, func(t *testing.T, form func(*Config)) {
		tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "malformed job: invalid character 'n'", http.StatusBadRequest)
		}, form)
		tb.start()
		body := []byte(`{not json`)
		tb.publishRaw(amqp.Publishing{ContentType: "application/json", Body: body})
		r := tb.nextRequest(wait)
		if string(r.Body) != string(body) {
			t.Errorf("body = %q, want it unchanged", r.Body)
		}
		sum := sha256.Sum256(body)
		if got := r.Header.Get("Ce-Id"); got != hex.EncodeToString(sum[:]) {
			t.Errorf("ce-id = %q, want the body's sha256", got)
		}
		if _, ok := r.Header["Ce-Subject"]; ok {
			t.Errorf("ce-subject set for a body without a run id: %q", r.Header.Get("Ce-Subject"))
		}
		d := tb.get(jobqueue.DeadLetterQueue(tb.queue), wait)
		if string(d.Body) != string(body) {
			t.Errorf("dead letter body = %q", d.Body)
		}
		assertDeadLetterHeaders(t, d, "400", "malformed job", 1, time.Now().Add(-time.Minute))
		tb.waitOutcome(outcomeDeadLettered, 1, wait)
		tb.stopAndAssertEmpty()
	})
}

// Shutdown with a request still in flight past the grace: the call is
// cancelled, the message requeued (back on the queue), nothing dead-lettered,
// and no failure counted.
func TestShutdownRequeuesInFlight(t *testing.T) {
	t.Parallel()
	forms(t, func(t *testing.T, form func(*Config)) {
		cancelled := make(chan struct{})
		tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
			close(cancelled)
		}, func(c *Config) { c.ShutdownGrace = 200 * time.Millisecond }, form)
		tb.start()
		body := []byte(`{"runId":"r","blueprintId":"bp","nodeId":"slow"}`)
		tb.publishRaw(amqp.Publishing{ContentType: "application/json", Body: body})
		tb.nextRequest(wait)

		stopped := time.Now()
		if err := tb.stop(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		if took := time.Since(stopped); took < 200*time.Millisecond || took > 5*time.Second {
			t.Errorf("shutdown took %s, want about the 200ms grace", took)
		}
		select {
		case <-cancelled:
		case <-time.After(wait):
			t.Fatal("the in-flight request was not cancelled")
		}
		if n := tb.count(jobqueue.DeadLetterQueue(tb.queue)); n != 0 {
			t.Errorf("%d dead letters after a shutdown", n)
		}
		d := tb.get(tb.queue, wait)
		if string(d.Body) != string(body) {
			t.Errorf("requeued body = %s", d.Body)
		}
		if _, ok := d.Headers[jobqueue.HeaderAttempts]; ok {
			t.Errorf("shutdown counted as a failed attempt: %v", d.Headers)
		}
		if got := tb.outcomes(outcomeRequeued); got != 1 {
			t.Errorf("requeued = %d, want 1", got)
		}
		if got := tb.outcomes(outcomeRetried) + tb.outcomes(outcomeDeadLettered); got != 0 {
			t.Errorf("retried+dead_lettered = %d, want 0", got)
		}
	})
}

// Shutdown lets a request that finishes within the grace complete and be acked.
func TestShutdownDrainsInFlight(t *testing.T) {
	t.Parallel()
	forms(t, func(t *testing.T, form func(*Config)) {
		release := make(chan struct{})
		tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
			<-release
			w.WriteHeader(http.StatusNoContent)
		}, form)
		tb.start()
		tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "n"}, 0)
		tb.nextRequest(wait)
		stopErr := make(chan error, 1)
		go func() { stopErr <- tb.stop() }()
		testenv.Eventually(t, wait, "Ready false once shutdown starts", func() bool { return !tb.bridge.Ready() })
		close(release)
		if err := <-stopErr; err != nil {
			t.Fatal(err)
		}
		if got := tb.outcomes(outcomeAck); got != 1 {
			t.Errorf("ack = %d, want 1", got)
		}
		tb.stopAndAssertEmpty()
	})
}

// At most Concurrency requests are in flight at once, whatever their size.
func TestConcurrencyLimit(t *testing.T) {
	t.Parallel()
	forms(t, func(t *testing.T, form func(*Config)) {
		release := make(chan struct{})
		tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
			<-release
			w.WriteHeader(http.StatusNoContent)
		}, func(c *Config) { c.Concurrency = 2; c.Prefetch = 10 }, form)
		tb.start()
		for i := range 6 {
			tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: fmt.Sprint("n", i)}, 0)
			if i < 2 { // each fills a slot alone
				testenv.Eventually(t, wait, fmt.Sprint(i+1, " requests in flight"), func() bool { return tb.httpInflight.Load() == int64(i+1) })
			}
		}
		testenv.Eventually(t, wait, "the other 4 deliveries waiting for a slot", func() bool {
			return metricValue(t, tb.bridge.metrics.waiting) == 4
		})
		if n := tb.httpCalls.Load(); n != 2 {
			t.Fatalf("%d requests while two are in flight", n)
		}
		close(release)
		tb.waitOutcome(outcomeAck, 6, wait)
		if p := tb.httpPeak.Load(); p != 2 {
			t.Errorf("peak concurrency = %d, want 2", p)
		}
		tb.stopAndAssertEmpty()
	})
}

// The bridge reconnects when its connection is cut, is not Ready while it
// cannot connect, and consumes again afterwards.
func TestReconnect(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testAMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, u.Host)
	tb := setup(t, noContent, func(c *Config) {
		pu := *u
		pu.Host = proxy.addr()
		c.AMQPURL = pu.String()
	})
	tb.start()
	tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "before"}, 0)
	tb.waitOutcome(outcomeAck, 1, wait)

	proxy.setPaused(true)
	proxy.cut()
	testenv.Eventually(t, wait, "Ready false while RabbitMQ is unreachable", func() bool { return !tb.bridge.Ready() })
	proxy.setPaused(false)
	testenv.Eventually(t, wait, "Ready again after reconnecting", tb.bridge.Ready)
	if n := proxy.accepted.Load(); n < 2 {
		t.Errorf("%d connections through the proxy, want a reconnect", n)
	}
	tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "after"}, 0)
	tb.waitOutcome(outcomeAck, 2, wait)
	tb.stopAndAssertEmpty()
}

// A queue that exists with other arguments cannot be fixed by reconnecting:
// Run returns an error naming it.
func TestRunFailsOnIncompatibleQueue(t *testing.T) {
	t.Parallel()
	conn := dialTest(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q := "test-" + uuid.NewString()
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-max-length": int32(10)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.DeleteQueues(t, conn, q) })
	srv := newHTTPServer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})) // 200: ready
	b, err := New(Config{AMQPURL: testAMQPURL(), Queue: q, FunctionURL: srv + "/", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err = b.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), q) || !strings.Contains(err.Error(), "PRECONDITION_FAILED") {
		t.Fatalf("Run = %v, want a PRECONDITION_FAILED error naming %s", err, q)
	}
}
