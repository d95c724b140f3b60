package bridge

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/wire"

	"github.com/stepflow/stepflow/internal/testenv"
)

func TestFunctionSignOf(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		reply Reply
		want  functionSign
	}{
		{"2xx", Reply{Status: 200}, signUp},
		{"5xx: the function answers", Reply{Status: 503}, signUp},
		{"4xx", Reply{Status: 409}, signUp},
		{"refused", Reply{Err: errors.New("dial tcp 127.0.0.1:1: connect: connection refused")}, signDown},
		{"timeout", Reply{Err: errTimeoutForTest{}}, signDown},
		{"our own shutdown", Reply{Err: errors.New("context canceled"), ShuttingDown: true}, signNone},
	} {
		if got := functionSignOf(tt.reply); got != tt.want {
			t.Errorf("%s: functionSignOf = %d, want %d", tt.name, got, tt.want)
		}
	}
	p := Policy{MaxAttempts: 3, BackoffBase: time.Second, BackoffMax: time.Minute}
	dec := p.Decide(Reply{Err: errors.New("connection refused"), Attempt: 3, FunctionDown: true})
	if dec.Kind != KindRequeue {
		t.Errorf("a transport failure while paused, on the last attempt: %s; want requeue (handed back, no attempt)", dec.Kind)
	}
	if dec := p.Decide(Reply{Status: 503, Attempt: 1, FunctionDown: true}); dec.Kind != KindRetry {
		t.Errorf("a 503 while paused: %s; want retry (the function answered)", dec.Kind)
	}
}

type errTimeoutForTest struct{}

func (errTimeoutForTest) Error() string   { return "i/o timeout" }
func (errTimeoutForTest) Timeout() bool   { return true }
func (errTimeoutForTest) Temporary() bool { return true }

// The function goes away (connections cut and refused) while jobs arrive.
// Within PauseAfter failed calls the bridge stops consuming, hands back what
// it holds, reports not ready, and consumes again once the function's
// readiness answers: every job then runs, none is dead-lettered, though
// MaxAttempts is so low that failing every job round the retry delays
// instead would dead-letter them all within a second.
func TestPauseWhileTheFunctionIsDown(t *testing.T) {
	t.Parallel()
	forms(t, func(t *testing.T, form func(*Config)) {
		var fn *tcpProxy // the way to the function: cut it to take it down
		tb := setup(t, noContent, func(c *Config) {
			u, err := url.Parse(c.FunctionURL)
			if err != nil {
				t.Fatal(err)
			}
			fn = newTCPProxy(t, u.Host)
			c.FunctionURL = "http://" + fn.addr() + "/"
			c.PauseAfter = 3
			c.MaxAttempts = 3
		}, form)
		tb.start()

		fn.setPaused(true)
		fn.cut()
		const jobs = 40
		for i := range jobs {
			tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "n" + string(rune('a'+i%26)) + string(rune('a'+i/26))}, 0)
		}
		paused := func() bool { return metricValue(t, tb.bridge.metrics.paused) == 1 }
		testenv.Eventually(t, wait, "the pause", paused)
		if tb.bridge.Ready() {
			t.Error("Ready while paused")
		}
		testenv.Eventually(t, wait, "the consumer gone from the queue", func() bool { return tb.consumers(tb.queue) == 0 })
		// Everything comes back to the queue (handed back, or retried
		// through the delay queues) and stays there: nothing consumes it.
		testenv.Eventually(t, wait, "every job back on the main queue", func() bool { return tb.count(tb.queue) == jobs })
		if n := tb.outcomes(outcomeDeadLettered); n != 0 {
			t.Errorf("%d jobs dead-lettered while the function was down", n)
		}

		fn.setPaused(false)
		tb.waitOutcome(outcomeAck, jobs, 3*wait)
		testenv.Eventually(t, wait, "the bridge ready again", tb.bridge.Ready)
		if paused() {
			t.Error("still paused once the function answers")
		}
		if n := metricValue(t, tb.bridge.metrics.pauses); n != 1 {
			t.Errorf("pauses_total = %g, want 1", n)
		}
		if n := tb.outcomes(outcomeRequeued); n == 0 {
			t.Error("nothing was handed back")
		}
		tb.stopAndAssertEmpty()
	})
}

// consumers returns the number of consumers of q.
func (tb *testBundle) consumers(q string) int {
	tb.t.Helper()
	ch, err := tb.conn.Channel()
	if err != nil {
		tb.t.Fatalf("channel: %v", err)
	}
	defer ch.Close()
	info, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil {
		tb.t.Fatalf("inspect %s: %v", q, err)
	}
	return info.Consumers
}

// A bridge paused in front of a dead function stops at once on shutdown,
// and what it held is back on the queue.
func TestShutdownWhilePaused(t *testing.T) {
	t.Parallel()
	var fn *tcpProxy
	tb := setup(t, noContent, func(c *Config) {
		u, err := url.Parse(c.FunctionURL)
		if err != nil {
			t.Fatal(err)
		}
		fn = newTCPProxy(t, u.Host)
		c.FunctionURL = "http://" + fn.addr() + "/"
		c.PauseAfter = 1 // the first failure hands everything back
	})
	tb.start()
	fn.setPaused(true)
	fn.cut()
	for i := range 5 {
		tb.publishJob(wire.Job{RunID: "r", BlueprintID: "bp", NodeID: "n" + string(rune('a'+i))}, 0)
	}
	testenv.Eventually(t, wait, "the pause", func() bool { return metricValue(t, tb.bridge.metrics.paused) == 1 })
	start := time.Now()
	if err := tb.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a paused bridge took %s to stop", d)
	}
	if n := tb.count(tb.queue); n != 5 {
		t.Errorf("%d of the 5 jobs back on the queue after the stop", n)
	}
	if n := tb.outcomes(outcomeRetried) + tb.outcomes(outcomeDeadLettered); n != 0 {
		t.Errorf("%d jobs retried or dead-lettered; want all handed back", n)
	}
}
