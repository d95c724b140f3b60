package bridge

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
)

// handOnState tells whether the bridge has handed on the job with id, and
// whether that call is decided and succeeded, and how many copies of it
// wait parked.
func (h *handOns) state(id string) (known, done, ok bool, parked int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.m[id]
	if e == nil {
		return false, false, false, 0
	}
	return true, e.done, e.ok, len(e.parked)
}

// The rows of handing on (policy.go): which jobs go, which calls count as
// done for good. A nacked or lost confirm is not success, so the copy of
// such a job is decided as any delivery.
func TestHandOnRows(t *testing.T) {
	t.Parallel()
	if !mayHandOn(ReplyJob{Job: wire.Job{RunID: "r", NodeID: "n"}}) {
		t.Error("a job due now is not handed on")
	}
	if mayHandOn(ReplyJob{Job: wire.Job{RunID: "r", NodeID: "n"}, DelayMs: 1}) {
		t.Error("a delayed job is handed on; it must wait in the delay queues")
	}
	nacked := errors.Join(errors.New("wait for publish confirm"), jobqueue.ErrNacked)
	for _, c := range []struct {
		name   string
		dec    Decision
		pubErr error
		want   bool
	}{
		{"jobs, confirmed", Decision{Kind: KindPublish}, nil, true},
		{"no jobs", Decision{Kind: KindAck}, nil, true},
		{"jobs, confirm nacked", Decision{Kind: KindPublish}, nacked, false},
		{"retry", Decision{Kind: KindRetry}, nil, false},
		{"dead letter", Decision{Kind: KindDeadLetter}, nil, false},
		{"requeue (shutdown, pause, session lost)", Decision{Kind: KindRequeue}, nil, false},
	} {
		if got := handedOnSucceeded(c.dec, c.pubErr); got != c.want {
			t.Errorf("%s: handedOnSucceeded = %v, want %v", c.name, got, c.want)
		}
	}
	if d := handedOnCopy(); d.Kind != KindAckCopy {
		t.Errorf("handedOnCopy = %v, want KindAckCopy", d.Kind)
	}
}

// A job handed on runs before its parent's publish of it is confirmed, and
// the parent is acked only once it is: with the confirm held back and then
// lost with the connection, the parent is never acked on that session; the
// broker redelivers it, and on the next session the parent is acked after
// its publish is confirmed. The job it publishes again is not handed on a
// second time (it is known): it goes through the queue as any delivery,
// and the function absorbs it; the first copy, marked, is acked without a
// call.
func TestHandOnParentWaitsForConfirm(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testAMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, u.Host)
	var aCalls, bCalls atomic.Int64
	var tb *testBundle
	var settledWhileHeld atomic.Int64
	bRan := make(chan struct{}, 4)
	next := []ReplyJob{{Job: wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "b", Attempt: 1}}}
	tb = setup(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Ce-Id") {
		case "r:a:1":
			if aCalls.Add(1) == 1 {
				// Nothing the broker sends reaches the bridge from now on:
				// the confirm of the publish of b is held back.
				proxy.setHeld(true)
			}
			replyJobs(t, w, r, next)
		case "r:b:1":
			bCalls.Add(1)
			settledWhileHeld.Store(int64(tb.outcomes(outcomeReplyPublished) + tb.outcomes(outcomeRequeued)))
			w.WriteHeader(http.StatusNoContent)
			bRan <- struct{}{}
		default:
			t.Errorf("unexpected job %s", r.Header.Get("Ce-Id"))
			w.WriteHeader(http.StatusNoContent)
		}
	}, func(c *Config) {
		pu := *u
		pu.Host = proxy.addr()
		c.AMQPURL = pu.String()
		c.BatchSize = 1
	})
	tb.start()
	tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "a"}, 0)

	// b was handed on: it ran although no confirm can have reached the
	// bridge, and the parent was not settled meanwhile.
	select {
	case <-bRan:
	case <-time.After(wait):
		t.Fatal("b was not handed on to the function while its confirm was held back")
	}
	if n := settledWhileHeld.Load(); n != 0 {
		t.Fatalf("the parent was settled (%d) before the publish of b was confirmed", n)
	}
	testenv.Eventually(t, wait, "b's call decided", func() bool {
		_, done, ok, _ := tb.bridge.handOns.state("r:b:1")
		return done && ok
	})
	if n := tb.outcomes(outcomeReplyPublished); n != 0 {
		t.Fatalf("reply_published = %d with b decided but its confirm held back; want the parent unacked", n)
	}

	// The confirm is lost with the connection: the parent must come back.
	proxy.cut()
	proxy.setHeld(false)
	tb.waitOutcome(outcomeReplyPublished, 1, wait)
	testenv.Eventually(t, wait, "b's second publish sent as any delivery", func() bool { return bCalls.Load() == 2 })
	tb.stopAndAssertEmpty()
	if n := aCalls.Load(); n != 2 {
		t.Errorf("a called %d times, want 2 (its first delivery was never acked)", n)
	}
	if n := bCalls.Load(); n != 2 {
		t.Errorf("b called %d times, want 2 (handed on, then its second publish through the queue)", n)
	}
	if n := tb.outcomes(outcomeHandedOnCopy); n > 1 {
		t.Errorf("handed_on_copy = %d, want at most 1 (the first publish, if it reached the queue)", n)
	}
}

// A copy that arrives while the call of the job handed on still runs
// waits, parked, and is acked once that call succeeded: the function sees
// the job once.
func TestHandOnCopyParkedWhileCallRuns(t *testing.T) {
	t.Parallel()
	var tb *testBundle
	var bCalls atomic.Int64
	release := make(chan struct{})
	next := []ReplyJob{{Job: wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "b", Attempt: 1}}}
	tb = setup(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Ce-Id") {
		case "r:a:1":
			replyJobs(t, w, r, next)
		case "r:b:1":
			bCalls.Add(1)
			<-release
			w.WriteHeader(http.StatusNoContent)
		}
	})
	tb.start()
	tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "a"}, 0)
	testenv.Eventually(t, wait, "b's copy parked behind its running call", func() bool {
		_, _, _, parked := tb.bridge.handOns.state("r:b:1")
		return parked == 1
	})
	if n := tb.outcomes(outcomeHandedOnCopy); n != 0 {
		t.Fatalf("handed_on_copy = %d while b's call runs, want 0", n)
	}
	close(release)
	tb.waitOutcome(outcomeHandedOnCopy, 1, wait)
	tb.waitOutcome(outcomeReplyPublished, 1, wait)
	tb.stopAndAssertEmpty()
	if n := bCalls.Load(); n != 1 {
		t.Errorf("b called %d times, want 1", n)
	}
}

// A job handed on that fails there (503) publishes nothing and settles
// nothing: its copy from the queue is decided as any delivery, so the
// function sees it again, as a first transport attempt, and the copy is
// then acked as its answer says.
func TestHandOnFailedCallLeavesTheCopy(t *testing.T) {
	t.Parallel()
	var bCalls atomic.Int64
	next := []ReplyJob{{Job: wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "b", Attempt: 1}}}
	var mu sync.Mutex
	var attempts []string
	tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Ce-Id") {
		case "r:a:1":
			replyJobs(t, w, r, next)
		case "r:b:1":
			mu.Lock()
			attempts = append(attempts, r.Header.Get("X-Delivery-Attempt"))
			mu.Unlock()
			if bCalls.Add(1) == 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}
	}, func(c *Config) { c.BatchSize = 1 })
	tb.start()
	tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "a"}, 0)
	tb.waitOutcome(outcomeAck, 1, wait) // b's copy, decided on its own call
	tb.waitOutcome(outcomeReplyPublished, 1, wait)
	tb.stopAndAssertEmpty()
	if n := bCalls.Load(); n != 2 {
		t.Errorf("b called %d times, want 2 (handed on, then its copy)", n)
	}
	if n := tb.outcomes(outcomeHandedOnCopy) + tb.outcomes(outcomeRetried); n != 0 {
		t.Errorf("handed_on_copy + retried = %d, want 0: the failed call is not carried out", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) == 2 && (attempts[0] != "1" || attempts[1] != "1") {
		t.Errorf("delivery attempts %v, want [1 1]", attempts)
	}
}

// With NoHandOn every job reaches the function through the queue.
func TestNoHandOn(t *testing.T) {
	t.Parallel()
	next := []ReplyJob{{Job: wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "b", Attempt: 1}}}
	tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Ce-Id") == "r:a:1" {
			replyJobs(t, w, r, next)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}, func(c *Config) { c.NoHandOn = true })
	tb.start()
	tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "a"}, 0)
	tb.waitOutcome(outcomeAck, 1, wait)
	tb.stopAndAssertEmpty()
	if n := tb.outcomes(outcomeHandedOnCopy); n != 0 {
		t.Errorf("handed_on_copy = %d with NoHandOn, want 0", n)
	}
	if known, _, _, _ := tb.bridge.handOns.state("r:b:1"); known {
		t.Error("b handed on with NoHandOn")
	}
}

// Only the marked copy of a job handed on is taken for it: another message
// with the same job id — here the delayed wake-up that a sleeping node's
// answer publishes for its own job, and a copy published by hand — is sent
// to the function as usual, though the job handed on succeeded.
func TestHandOnOnlyTheMarkedCopy(t *testing.T) {
	t.Parallel()
	var bCalls atomic.Int64
	var tb *testBundle
	b := wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "b", Attempt: 1}
	tb = setup(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Ce-Id") {
		case "r:a:1":
			replyJobs(t, w, r, []ReplyJob{{Job: b}})
		case "r:b:1":
			if bCalls.Add(1) == 1 {
				// b sleeps: it answers with its own job, due later.
				replyJobs(t, w, r, []ReplyJob{{Job: b, DelayMs: 50}})
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}
	}, func(c *Config) { c.BatchSize = 1 })
	tb.start()
	tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "a"}, 0)
	testenv.Eventually(t, wait, "b woken up through the queue", func() bool { return bCalls.Load() == 2 })
	tb.publishJob(b, 0) // a copy by hand, unmarked
	testenv.Eventually(t, wait, "the unmarked copy sent", func() bool { return bCalls.Load() == 3 })
	tb.waitOutcome(outcomeHandedOnCopy, 1, wait) // the marked copy of the first b
	tb.stopAndAssertEmpty()
	if known, done, ok, _ := tb.bridge.handOns.state("r:b:1"); !known || !done || !ok {
		t.Errorf("b's hand-on: known %v, done %v, ok %v; want it remembered as succeeded", known, done, ok)
	}
}

// The copy of a job another bridge handed on waits foreignDelay (down the
// delay ladder) before it is sent: by then that bridge has run the job, so
// the function re-emits nothing still pending and no trailing duplicate of
// the run follows it. It is sent when it comes back, not delayed again.
func TestHandOnForeignCopyWaits(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var at []time.Time
	tb := setup(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	const delay = 300 * time.Millisecond
	tb.bridge.foreignDelay = delay
	tb.start()
	job := wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "b", Attempt: 1}
	body, _ := json.Marshal(job)
	sent := time.Now()
	tb.publishRaw(amqp.Publishing{ContentType: "application/json", MessageId: job.ID(), Body: body,
		Headers: amqp.Table{headerHandedOn: "another-bridge"}})
	tb.waitOutcome(outcomeAck, 1, wait)
	tb.stopAndAssertEmpty()
	mu.Lock()
	defer mu.Unlock()
	if len(at) != 1 {
		t.Fatalf("function called %d times, want 1", len(at))
	}
	if waited := at[0].Sub(sent); waited < delay {
		t.Errorf("the copy was sent %s after it was published, want at least %s", waited, delay)
	}
	if n := tb.outcomes(outcomeRedelayed); n < 1 {
		t.Errorf("redelayed = %d, want the copy sent down the delay ladder", n)
	}
}
