package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/wire"
)

// jobsEventHeader is the header of a binary-mode jobs reply.
func jobsEventHeader(typ string) http.Header {
	h := http.Header{}
	h.Set("Ce-Specversion", "1.0")
	h.Set("Ce-Id", "reply-1")
	h.Set("Ce-Source", "/function")
	h.Set("Ce-Type", typ)
	h.Set("Content-Type", "application/json")
	return h
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var _ net.Error = timeoutErr{}

func TestPolicyDecide(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	p := Policy{
		MaxAttempts: 10,
		BackoffBase: time.Second,
		BackoffMax:  10 * time.Second,
		Jitter:      func(d time.Duration) time.Duration { return d }, // the ceiling, deterministic
	}
	withHeader := func(k, v string) http.Header { h := http.Header{}; h.Set(k, v); return h }
	text := withHeader("Content-Type", "text/plain")

	tests := []struct {
		name       string
		reply      Reply
		kind       Kind
		code       string
		delay      time.Duration
		reasonPart string
		jobs       int
	}{
		// 2xx
		{name: "200 jobs", kind: KindPublish, jobs: 2, reply: Reply{Status: 200, Header: jobsEventHeader(EventTypeJobs),
			Body: []byte(`{"jobs":[{"runId":"r","blueprintId":"b","nodeId":"n2","attempt":1,"delayMs":0},{"runId":"r","blueprintId":"b","nodeId":"n3","delayMs":500}]}`)}},
		{name: "200 zero jobs", kind: KindPublish, jobs: 0, reply: Reply{Status: 200, Header: jobsEventHeader(EventTypeJobs), Body: []byte(`{"jobs":[]}`)}},
		{name: "200 structured jobs event", kind: KindPublish, jobs: 1, reply: Reply{Status: 200,
			Header: withHeader("Content-Type", "application/cloudevents+json"),
			Body:   []byte(`{"specversion":"1.0","id":"x","source":"/f","type":"dev.stepflow.jobs.v1","datacontenttype":"application/json","data":{"jobs":[{"runId":"r","blueprintId":"b","nodeId":"n"}]}}`)}},
		{name: "200 empty", kind: KindAck, reply: Reply{Status: 200, Header: http.Header{}}},
		{name: "202 empty", kind: KindAck, reply: Reply{Status: 202, Header: http.Header{}}},
		{name: "204", kind: KindAck, reply: Reply{Status: 204, Header: http.Header{}}},
		{name: "200 plain text", kind: KindDeadLetter, code: CodeBadReply, reasonPart: "not a CloudEvent", reply: Reply{Status: 200, Header: text, Body: []byte("ok")}},
		{name: "200 wrong type", kind: KindDeadLetter, code: CodeBadReply, reasonPart: `type "dev.other.v1"`, reply: Reply{Status: 200, Header: jobsEventHeader("dev.other.v1"), Body: []byte(`{"jobs":[]}`)}},
		{name: "200 data not json", kind: KindDeadLetter, code: CodeBadReply, reasonPart: "not {\"jobs\"", reply: Reply{Status: 200, Header: jobsEventHeader(EventTypeJobs), Body: []byte(`nope`)}},
		{name: "200 no jobs key", kind: KindDeadLetter, code: CodeBadReply, reasonPart: `no "jobs"`, reply: Reply{Status: 200, Header: jobsEventHeader(EventTypeJobs), Body: []byte(`{}`)}},
		{name: "200 no data", kind: KindDeadLetter, code: CodeBadReply, reasonPart: "no data", reply: Reply{Status: 200, Header: jobsEventHeader(EventTypeJobs)}},
		{name: "200 job missing nodeId", kind: KindDeadLetter, code: CodeBadReply, reasonPart: "jobs[0]: nodeId is required", reply: Reply{Status: 200, Header: jobsEventHeader(EventTypeJobs), Body: []byte(`{"jobs":[{"runId":"r","blueprintId":"b"}]}`)}},
		{name: "200 negative delay", kind: KindDeadLetter, code: CodeBadReply, reasonPart: "delayMs is negative", reply: Reply{Status: 200, Header: jobsEventHeader(EventTypeJobs), Body: []byte(`{"jobs":[{"runId":"r","blueprintId":"b","nodeId":"n","delayMs":-1}]}`)}},
		{name: "200 delay too long", kind: KindDeadLetter, code: CodeBadReply, reasonPart: "more than a year", reply: Reply{Status: 200, Header: jobsEventHeader(EventTypeJobs), Body: []byte(`{"jobs":[{"runId":"r","blueprintId":"b","nodeId":"n","delayMs":99999999999999}]}`)}},
		{name: "200 truncated", kind: KindDeadLetter, code: CodeBadReply, reasonPart: "larger than", reply: Reply{Status: 200, Header: jobsEventHeader(EventTypeJobs), Body: []byte(`{"jobs":[`), BodyTruncated: true}},
		{name: "200 event missing source", kind: KindDeadLetter, code: CodeBadReply, reasonPart: "invalid", reply: Reply{Status: 200,
			Header: func() http.Header { h := jobsEventHeader(EventTypeJobs); h.Del("Ce-Source"); return h }(), Body: []byte(`{"jobs":[]}`)}},
		{name: "200 xml data", kind: KindDeadLetter, code: CodeBadReply, reasonPart: "content type", reply: Reply{Status: 200,
			Header: func() http.Header {
				h := jobsEventHeader(EventTypeJobs)
				h.Set("Content-Type", "application/xml")
				return h
			}(), Body: []byte(`<jobs/>`)}},

		// dead-letter at once
		{name: "400", kind: KindDeadLetter, code: "400", reasonPart: "bad job", reply: Reply{Status: 400, Header: text, Body: []byte("bad job\n")}},
		{name: "413", kind: KindDeadLetter, code: "413", reasonPart: "Request Entity Too Large", reply: Reply{Status: 413, Header: http.Header{}}},
		{name: "415", kind: KindDeadLetter, code: "415", reply: Reply{Status: 415, Header: http.Header{}}},
		{name: "422", kind: KindDeadLetter, code: "422", reply: Reply{Status: 422, Header: http.Header{}}},
		{name: "401 other 4xx", kind: KindDeadLetter, code: "401", reply: Reply{Status: 401, Header: http.Header{}}},
		{name: "418 other 4xx", kind: KindDeadLetter, code: "418", reply: Reply{Status: 418, Header: http.Header{}}},
		{name: "302", kind: KindDeadLetter, code: "302", reply: Reply{Status: 302, Header: withHeader("Location", "/elsewhere")}},
		{name: "400 on last attempt is still 400", kind: KindDeadLetter, code: "400", reply: Reply{Status: 400, Header: http.Header{}, Attempt: 10}},

		// retry
		{name: "404", kind: KindRetry, code: "404", delay: time.Second, reply: Reply{Status: 404, Header: http.Header{}, Attempt: 1}},
		{name: "408", kind: KindRetry, code: "408", delay: time.Second, reply: Reply{Status: 408, Header: http.Header{}, Attempt: 1}},
		{name: "409", kind: KindRetry, code: "409", delay: 2 * time.Second, reply: Reply{Status: 409, Header: http.Header{}, Attempt: 2}},
		{name: "425", kind: KindRetry, code: "425", delay: time.Second, reply: Reply{Status: 425, Header: http.Header{}, Attempt: 1}},
		{name: "429", kind: KindRetry, code: "429", delay: time.Second, reply: Reply{Status: 429, Header: http.Header{}, Attempt: 1}},
		{name: "500", kind: KindRetry, code: "500", reasonPart: "boom", delay: time.Second, reply: Reply{Status: 500, Header: text, Body: []byte("boom"), Attempt: 1}},
		{name: "503", kind: KindRetry, code: "503", delay: time.Second, reply: Reply{Status: 503, Header: http.Header{}, Attempt: 1}},
		{name: "599", kind: KindRetry, code: "599", delay: time.Second, reply: Reply{Status: 599, Header: http.Header{}, Attempt: 1}},
		{name: "429 Retry-After seconds beats backoff", kind: KindRetry, code: "429", delay: 7 * time.Second,
			reply: Reply{Status: 429, Header: withHeader("Retry-After", "7"), Attempt: 1}},
		{name: "503 Retry-After date", kind: KindRetry, code: "503", delay: 90 * time.Second,
			reply: Reply{Status: 503, Header: withHeader("Retry-After", now.Add(90*time.Second).Format(http.TimeFormat)), Attempt: 1, Now: now}},
		{name: "Retry-After shorter than backoff keeps backoff", kind: KindRetry, code: "503", delay: 2 * time.Second,
			reply: Reply{Status: 503, Header: withHeader("Retry-After", "1"), Attempt: 2, Now: now}},
		{name: "Retry-After date in the past", kind: KindRetry, code: "503", delay: time.Second,
			reply: Reply{Status: 503, Header: withHeader("Retry-After", now.Add(-time.Hour).Format(http.TimeFormat)), Attempt: 1, Now: now}},
		{name: "Retry-After absurd is capped", kind: KindRetry, code: "503", delay: maxRetryAfter,
			reply: Reply{Status: 503, Header: withHeader("Retry-After", "99999999999999"), Attempt: 1}},
		{name: "Retry-After garbage ignored", kind: KindRetry, code: "503", delay: time.Second,
			reply: Reply{Status: 503, Header: withHeader("Retry-After", "soon"), Attempt: 1}},
		{name: "backoff capped", kind: KindRetry, code: "500", delay: 10 * time.Second,
			reply: Reply{Status: 500, Header: http.Header{}, Attempt: 9}},
		{name: "timeout", kind: KindRetry, code: CodeTimeout, delay: time.Second, reasonPart: "deadline",
			reply: Reply{Err: &url.Error{Op: "Post", URL: "http://f/", Err: context.DeadlineExceeded}, Attempt: 1}},
		{name: "net timeout", kind: KindRetry, code: CodeTimeout, delay: time.Second, reply: Reply{Err: timeoutErr{}, Attempt: 1}},
		{name: "connection refused", kind: KindRetry, code: CodeConnection, delay: time.Second, reasonPart: "refused",
			reply: Reply{Err: errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), Attempt: 1}},

		// attempts used up
		{name: "500 last attempt", kind: KindDeadLetter, code: "500", reasonPart: "boom", reply: Reply{Status: 500, Header: http.Header{}, Body: []byte("boom"), Attempt: 10}},
		{name: "429 last attempt", kind: KindDeadLetter, code: "429", reply: Reply{Status: 429, Header: withHeader("Retry-After", "5"), Attempt: 10}},
		{name: "timeout last attempt", kind: KindDeadLetter, code: CodeTimeout, reply: Reply{Err: context.DeadlineExceeded, Attempt: 10}},
		{name: "connection last attempt", kind: KindDeadLetter, code: CodeConnection, reply: Reply{Err: errors.New("EOF"), Attempt: 11}},

		// shutdown
		{name: "cancelled by shutdown", kind: KindRequeue, reply: Reply{Err: context.Canceled, ShuttingDown: true, Attempt: 3}},
		{name: "reply during shutdown still counts", kind: KindAck, reply: Reply{Status: 204, Header: http.Header{}, ShuttingDown: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.reply.Attempt == 0 {
				tt.reply.Attempt = 1
			}
			got := p.Decide(tt.reply)
			if got.Kind != tt.kind {
				t.Fatalf("kind = %s, want %s (decision %+v)", got.Kind, tt.kind, got)
			}
			if got.Code != tt.code {
				t.Errorf("code = %q, want %q", got.Code, tt.code)
			}
			if tt.kind == KindRetry && got.Delay != tt.delay {
				t.Errorf("delay = %s, want %s", got.Delay, tt.delay)
			}
			if !strings.Contains(got.Reason, tt.reasonPart) {
				t.Errorf("reason = %q, want it to contain %q", got.Reason, tt.reasonPart)
			}
			if tt.kind == KindDeadLetter && got.Reason == "" {
				t.Error("dead letter without a reason")
			}
			if tt.kind == KindPublish && len(got.Jobs) != tt.jobs {
				t.Errorf("jobs = %d, want %d", len(got.Jobs), tt.jobs)
			}
		})
	}
}

// The bridge's own rows decide the deliveries that no reply decides.
func TestPolicyOwnRows(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	dueIn := func(d time.Duration) amqp.Table { return amqp.Table{jobqueue.HeaderDue: now.Add(d).UnixMilli()} }
	earlyRow := func(h amqp.Table) func() (Decision, bool) { return func() (Decision, bool) { return early(h, now) } }
	row := func(d Decision) func() (Decision, bool) { return func() (Decision, bool) { return d, true } }
	long := strings.Repeat("x", 2*MaxReasonBytes)
	nacked := fmt.Errorf("wait for publish confirm: %w", jobqueue.ErrNacked)

	for _, tt := range []struct {
		name    string
		row     func() (Decision, bool)
		applies bool
		want    Decision
	}{
		{"early by 1.5s", earlyRow(dueIn(1500 * time.Millisecond)), true, Decision{Kind: KindRedelay, Delay: 1500 * time.Millisecond}},
		{"early by 1ms", earlyRow(dueIn(time.Millisecond)), true, Decision{Kind: KindRedelay, Delay: time.Millisecond}},
		{"early, due time as a string", earlyRow(amqp.Table{jobqueue.HeaderDue: strconv.FormatInt(now.Add(time.Second).UnixMilli(), 10)}), true,
			Decision{Kind: KindRedelay, Delay: time.Second}},
		{"due now", earlyRow(dueIn(0)), false, Decision{}},
		{"overdue", earlyRow(dueIn(-time.Minute)), false, Decision{}},
		{"no due time", earlyRow(amqp.Table{"x-other": int64(1)}), false, Decision{}},
		{"no headers", earlyRow(nil), false, Decision{}},
		{"due time not a number", earlyRow(amqp.Table{jobqueue.HeaderDue: "soon"}), false, Decision{}},
		{"shutdown before it was sent", row(notSent()), true, Decision{Kind: KindRequeue}},
		{"shutdown in flight", row(shutdownInFlight(context.Canceled)), true, Decision{Kind: KindRequeue, Reason: "context canceled"}},
		{"shutdown in flight, long error", row(shutdownInFlight(errors.New(long))), true, Decision{Kind: KindRequeue, Reason: long[:MaxReasonBytes]}},
		{"session lost before resending", row(connectionLost()), true, Decision{Kind: KindRequeue, Reason: "rabbitmq connection lost"}},
		{"publishes not confirmed", row(publishFailed(nacked)), true, Decision{Kind: KindRequeue, Reason: nacked.Error()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, applies := tt.row()
			if applies != tt.applies || got.Kind != tt.want.Kind || got.Delay != tt.want.Delay ||
				got.Code != tt.want.Code || got.Reason != tt.want.Reason || got.Jobs != nil {
				t.Errorf("got %+v (applies %v), want %+v (applies %v)", got, applies, tt.want, tt.applies)
			}
		})
	}
}

// A call cut short by the bridge's own shutdown is decided by the same row
// in both forms.
func TestPolicyShutdownRowInBothForms(t *testing.T) {
	t.Parallel()
	p := Policy{MaxAttempts: 1, BackoffBase: time.Second, BackoffMax: time.Second}
	err := &url.Error{Op: "Post", URL: "http://f/", Err: context.Canceled}
	want := shutdownInFlight(err)
	one := p.Decide(Reply{Err: err, ShuttingDown: true, Attempt: 1})
	batch := p.DecideBatch(Reply{Err: err, ShuttingDown: true}, []BatchJob{{ID: "r:a:1", Attempt: 1}, {ID: "r:b:1", Attempt: 9}})
	for i, got := range []Decision{one, batch[0].Decision, batch[1].Decision} {
		if got.Kind != want.Kind || got.Reason != want.Reason || got.Code != "" {
			t.Errorf("decision %d: %+v, want %+v", i, got, want)
		}
	}
}

func TestKindString(t *testing.T) {
	t.Parallel()
	for k, want := range map[Kind]string{
		KindPublish: "publish", KindAck: "ack", KindRetry: "retry", KindDeadLetter: "dead-letter",
		KindRequeue: "requeue", KindRedelay: "redelay", Kind(0): "Kind(0)", Kind(99): "Kind(99)",
	} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

func TestPolicyJobsKeepOrderAndDelay(t *testing.T) {
	t.Parallel()
	d := Policy{MaxAttempts: 1}.Decide(Reply{Status: 200, Header: jobsEventHeader(EventTypeJobs), Attempt: 1,
		Body: []byte(`{"jobs":[{"runId":"r","blueprintId":"b","nodeId":"a","attempt":2,"delayMs":1500},{"runId":"r","blueprintId":"b","nodeId":"z"}]}`)})
	if d.Kind != KindPublish || len(d.Jobs) != 2 {
		t.Fatalf("decision %+v", d)
	}
	if j := d.Jobs[0]; j.NodeID != "a" || j.Attempt != 2 || j.DelayMs != 1500 || j.ID() != "r:a:2" {
		t.Errorf("jobs[0] = %+v", j)
	}
	if j := d.Jobs[1]; j.NodeID != "z" || j.DelayMs != 0 || j.ID() != "r:z:1" {
		t.Errorf("jobs[1] = %+v", j)
	}
}

func TestPolicyFullJitter(t *testing.T) {
	t.Parallel()
	p := Policy{MaxAttempts: 100, BackoffBase: 10 * time.Millisecond, BackoffMax: 80 * time.Millisecond}
	for attempt := 1; attempt <= 70; attempt++ {
		ceiling := min(p.BackoffMax, p.BackoffBase<<min(attempt-1, 20))
		for range 50 {
			d := p.Decide(Reply{Status: 503, Header: http.Header{}, Attempt: attempt})
			if d.Kind != KindRetry || d.Delay < 0 || d.Delay > ceiling {
				t.Fatalf("attempt %d: %+v, want delay in [0, %s]", attempt, d, ceiling)
			}
		}
	}
}

func TestTrimReason(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", MaxReasonBytes) // 2 bytes each
	got := trimReason(long)
	if len(got) > MaxReasonBytes || !strings.HasPrefix(long, got) || len(got) < MaxReasonBytes-1 {
		t.Fatalf("len %d", len(got))
	}
	d := Policy{MaxAttempts: 1}.Decide(Reply{Status: 400, Header: http.Header{}, Body: []byte(long), Attempt: 1})
	if len(d.Reason) > MaxReasonBytes {
		t.Fatalf("reason is %d bytes", len(d.Reason))
	}
}

func TestJobID(t *testing.T) {
	t.Parallel()
	hash := func(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }
	for _, tt := range []struct {
		msgID, body, want string
	}{
		{"", `{"runId":"r1","blueprintId":"b","nodeId":"n"}`, "r1:n:1"},
		{"", `{"runId":"r1","blueprintId":"b","nodeId":"n","attempt":3}`, "r1:n:3"},
		{"given", `{"runId":"r1","blueprintId":"b","nodeId":"n"}`, "given"},
		{"", `{not json`, hash(`{not json`)},
		{"", `{"blueprintId":"b"}`, hash(`{"blueprintId":"b"}`)}, // parses but names no job
		{"", `{"runId":"r","nodeId":"n","attempt":"x"}`, hash(`{"runId":"r","nodeId":"n","attempt":"x"}`)},
	} {
		if got := deliveryJobID(tt.msgID, []byte(tt.body)); got != tt.want {
			t.Errorf("deliveryJobID(%q, %q) = %q, want %q", tt.msgID, tt.body, got, tt.want)
		}
	}
	if got := (wire.Job{RunID: "r", NodeID: "n", Attempt: 2}).ID(); got != "r:n:2" {
		t.Errorf("ID = %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	c := Config{AMQPURL: "amqp://guest:guest@127.0.0.1:5672/", FunctionURL: "http://127.0.0.1:8080/fn?x=1"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Queue != DefaultQueue || c.Prefetch != DefaultPrefetch || c.Concurrency != DefaultConcurrency || c.BatchSize != DefaultBatchSize ||
		c.RequestTimeout != DefaultRequestTimeout || c.MaxAttempts != DefaultMaxAttempts ||
		c.BackoffBase != DefaultBackoffBase || c.BackoffMax != DefaultBackoffMax || c.ShutdownGrace != DefaultShutdownGrace ||
		c.Logger == nil || c.Registerer == nil || c.HTTPClient == nil {
		t.Errorf("defaults not filled: %+v", c)
	}
	if c.ReadinessURL != "http://127.0.0.1:8080/health/readiness" {
		t.Errorf("ReadinessURL = %q", c.ReadinessURL)
	}
	if c.HTTPClient.CheckRedirect == nil {
		t.Error("default client follows redirects")
	}

	bad := Config{AMQPURL: "http://nope", FunctionURL: "ftp://x", Prefetch: -1, Concurrency: -2, BatchSize: -3,
		BackoffBase: time.Minute, BackoffMax: time.Second, ShutdownGrace: -time.Second}
	err := bad.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, field := range []string{"AMQPURL", "FunctionURL", "Prefetch", "Concurrency", "BatchSize", "BackoffBase", "ShutdownGrace"} {
		if !strings.Contains(err.Error(), field+":") {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
	for size, ok := range map[int]bool{1: true, wire.MaxBatch: true, wire.MaxBatch + 1: false} {
		c := Config{AMQPURL: "amqp://127.0.0.1/", FunctionURL: "http://127.0.0.1/", BatchSize: size}
		if err := c.Validate(); (err == nil) != ok {
			t.Errorf("BatchSize %d: %v", size, err)
		} else if !ok && !strings.Contains(err.Error(), "BatchSize: must be at most 256") {
			t.Errorf("BatchSize %d: %v, want it named with the limit", size, err)
		}
	}
	if err := (&Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "AMQPURL: required") ||
		!strings.Contains(err.Error(), "FunctionURL: required") {
		t.Errorf("missing fields: %v", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New accepted an empty config")
	}
}

// batchReply is a 200 batch reply of the given result events, written as
// the function writes it.
func batchReply(t *testing.T, evs ...event.Event) Reply {
	t.Helper()
	body, err := json.Marshal(evs)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("Content-Type", wire.BatchContentType)
	return Reply{Status: 200, Header: h, Body: body}
}

func TestPolicyDecideBatch(t *testing.T) {
	t.Parallel()
	p := Policy{
		MaxAttempts: 5,
		BackoffBase: time.Second,
		BackoffMax:  10 * time.Second,
		Jitter:      func(d time.Duration) time.Duration { return d },
	}
	jobs := []BatchJob{{ID: "r:a:1", Attempt: 1}, {ID: "r:b:1", Attempt: 3}, {ID: "r:c:1", Attempt: 5}}
	res := func(id string, r wire.Result) event.Event { return resultEvent(t, id, r) }
	next := []wire.NextJob{{Job: wire.Job{RunID: "r", BlueprintID: "b", NodeID: "n"}, DelayMs: 20}}
	type want struct {
		kind   Kind
		code   string
		reason string
		delay  time.Duration
		status int
	}
	withHeader := func(r Reply, k, v string) Reply { r.Header = http.Header{}; r.Header.Set(k, v); return r }
	for _, tt := range []struct {
		name  string
		reply Reply
		want  []want
	}{
		{"per-job results", batchReply(t,
			res("r:a:1", wire.Result{Status: 200, Jobs: next}),
			res("r:b:1", wire.Result{Status: 409, Error: "lease held"}),
			res("r:c:1", wire.Result{Status: 422, Error: "unknown node"})),
			[]want{{kind: KindPublish, status: 200}, {kind: KindRetry, code: "409", reason: "lease held", delay: 4 * time.Second, status: 409},
				{kind: KindDeadLetter, code: "422", reason: "unknown node", status: 422}}},
		{"ack, 503 retried, 503 on the last attempt", batchReply(t,
			res("r:a:1", wire.Result{Status: 204}),
			res("r:b:1", wire.Result{Status: 503, Error: "database down"}),
			res("r:c:1", wire.Result{Status: 503, Error: "database down"})),
			[]want{{kind: KindAck, status: 204}, {kind: KindRetry, code: "503", delay: 4 * time.Second, status: 503},
				{kind: KindDeadLetter, code: "503", reason: "database down", status: 503}}},
		{"400 without error text", batchReply(t,
			res("r:a:1", wire.Result{Status: 400}), res("r:b:1", wire.Result{Status: 200}), res("r:c:1", wire.Result{Status: 302})),
			[]want{{kind: KindDeadLetter, code: "400", reason: "Bad Request", status: 400}, {kind: KindAck, status: 200},
				{kind: KindDeadLetter, code: "302", status: 302}}},
		{"bad jobs in a result", batchReply(t,
			res("r:a:1", wire.Result{Status: 200, Jobs: []wire.NextJob{{Job: wire.Job{RunID: "r"}}}}),
			res("r:b:1", wire.Result{Status: 200, Jobs: []wire.NextJob{{Job: next[0].Job, DelayMs: -1}}}),
			res("r:c:1", wire.Result{Status: 200})),
			[]want{{kind: KindDeadLetter, code: CodeBadReply, reason: "jobs[0]: blueprintId is required", status: 200},
				{kind: KindDeadLetter, code: CodeBadReply, reason: "delayMs is negative", status: 200}, {kind: KindAck, status: 200}}},
		{"whole 503 with Retry-After", withHeader(Reply{Status: 503, Body: []byte("not started")}, "Retry-After", "30"),
			[]want{{kind: KindRetry, code: "503", reason: "not started", delay: 30 * time.Second, status: 503},
				{kind: KindRetry, code: "503", delay: 30 * time.Second, status: 503}, {kind: KindDeadLetter, code: "503", status: 503}}},
		{"whole 413", Reply{Status: 413, Header: http.Header{}},
			[]want{{kind: KindDeadLetter, code: "413", status: 413}, {kind: KindDeadLetter, code: "413", status: 413}, {kind: KindDeadLetter, code: "413", status: 413}}},
		{"whole timeout", Reply{Err: context.DeadlineExceeded},
			[]want{{kind: KindRetry, code: CodeTimeout, delay: time.Second}, {kind: KindRetry, code: CodeTimeout, delay: 4 * time.Second}, {kind: KindDeadLetter, code: CodeTimeout}}},
		{"shutdown", Reply{Err: context.Canceled, ShuttingDown: true},
			[]want{{kind: KindRequeue}, {kind: KindRequeue}, {kind: KindRequeue}}},
		{"2xx not a batch", Reply{Status: 204, Header: http.Header{}},
			[]want{{kind: KindDeadLetter, code: CodeBadReply, reason: "not a CloudEvents batch"}, {kind: KindDeadLetter, code: CodeBadReply},
				{kind: KindDeadLetter, code: CodeBadReply}}},
		{"truncated", func() Reply { r := batchReply(t); r.BodyTruncated = true; return r }(),
			[]want{{kind: KindDeadLetter, code: CodeBadReply, reason: "larger than"}, {kind: KindDeadLetter, code: CodeBadReply}, {kind: KindDeadLetter, code: CodeBadReply}}},
		{"too many results", batchReply(t, res("r:a:1", wire.Result{Status: 200}), res("r:b:1", wire.Result{Status: 200}),
			res("r:c:1", wire.Result{Status: 200}), res("r:d:1", wire.Result{Status: 200})),
			[]want{{kind: KindAck, status: 200}, {kind: KindAck, status: 200}, {kind: KindAck, status: 200}}},
		{"too few results", batchReply(t, res("r:a:1", wire.Result{Status: 200})),
			[]want{{kind: KindAck, status: 200}, {kind: KindDeadLetter, code: CodeBadReply, reason: "1 results for 3 jobs: none for job 1 (r:b:1)"},
				{kind: KindDeadLetter, code: CodeBadReply, reason: "none for job 2 (r:c:1)"}}},
		{"result without source", func() Reply {
			r := batchReply(t, res("r:a:1", wire.Result{Status: 200}), res("r:b:1", wire.Result{Status: 200}), res("r:c:1", wire.Result{Status: 200}))
			var raw []map[string]any
			_ = json.Unmarshal(r.Body, &raw)
			delete(raw[1], "source")
			r.Body, _ = json.Marshal(raw)
			return r
		}(), []want{{kind: KindAck, status: 200}, {kind: KindDeadLetter, code: CodeBadReply, reason: "result 1 (job r:b:1): invalid CloudEvent"}, {kind: KindAck, status: 200}}},
		{"unreadable event", func() Reply {
			r := batchReply(t, res("r:a:1", wire.Result{Status: 200}))
			r.Body = []byte(`[{"specversion":"1.0","id":"r:a:1","source":"%zz","type":"x"}]`)
			return r
		}(), []want{{kind: KindDeadLetter, code: CodeBadReply, reason: "not a readable CloudEvents batch"}, {kind: KindDeadLetter, code: CodeBadReply}, {kind: KindDeadLetter, code: CodeBadReply}}},
		{"status out of range", batchReply(t, res("r:a:1", wire.Result{Status: 200}), res("r:b:1", wire.Result{Status: 1000}), res("r:c:1", wire.Result{Status: 200})),
			[]want{{kind: KindAck, status: 200}, {kind: KindDeadLetter, code: CodeBadReply, reason: "status 1000"}, {kind: KindAck, status: 200}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := p.DecideBatch(tt.reply, jobs)
			if len(got) != len(jobs) {
				t.Fatalf("%d decisions for %d jobs", len(got), len(jobs))
			}
			for i, w := range tt.want {
				g := got[i]
				if g.Kind != w.kind || g.Code != w.code || g.Status != w.status || !strings.Contains(g.Reason, w.reason) ||
					(w.kind == KindRetry && g.Delay != w.delay) || (w.kind == KindDeadLetter && g.Reason == "") {
					t.Errorf("job %d: %+v, want %+v", i, g, w)
				}
			}
		})
	}
	// A result's jobs come through in order, with their delays.
	d := p.DecideBatch(batchReply(t, res("r:a:1", wire.Result{Status: 200, Jobs: next})), jobs[:1])
	if d[0].Kind != KindPublish || len(d[0].Jobs) != 1 || d[0].Jobs[0] != next[0] {
		t.Errorf("jobs = %+v, want %+v", d[0].Jobs, next)
	}
}

// One result is decided as a one-event reply of its status would be.
func TestPolicyResultMatchesOneEventTable(t *testing.T) {
	t.Parallel()
	p := Policy{MaxAttempts: 3, BackoffBase: time.Second, BackoffMax: time.Minute, Jitter: func(d time.Duration) time.Duration { return d }}
	for status := 200; status <= 599; status++ {
		if http.StatusText(status) == "" {
			continue
		}
		why := "why" // the body of an error; a 2xx without jobs has none
		if status < 300 {
			why = ""
		}
		for attempt := 1; attempt <= 3; attempt++ {
			one := p.Decide(Reply{Status: status, Header: http.Header{}, Body: []byte(why), Attempt: attempt})
			got := p.DecideBatch(batchReply(t, resultEvent(t, "r:n:1", wire.Result{Status: status, Error: why})),
				[]BatchJob{{ID: "r:n:1", Attempt: attempt}})[0]
			if got.Kind != one.Kind || got.Code != one.Code || got.Reason != one.Reason || got.Delay != one.Delay {
				t.Errorf("status %d attempt %d: batch %+v, one-event %+v", status, attempt, got.Decision, one)
			}
		}
	}
}

// A batch answered as a whole with 400 or 415 (a function that takes no
// batches) or 413 (too large) is sent again one job per request; only 413
// leaves batching on. Anything else is decided as it is.
func TestBatchRefusal(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name         string
		reply        Reply
		resend, stop bool
	}{
		{"400", Reply{Status: 400, Header: http.Header{}, Body: []byte("could not read a CloudEvent")}, true, true},
		{"415", Reply{Status: 415, Header: http.Header{}}, true, true},
		{"413", Reply{Status: 413, Header: http.Header{}}, true, false},
		{"422", Reply{Status: 422, Header: http.Header{}}, false, false},
		{"404", Reply{Status: 404, Header: http.Header{}}, false, false},
		{"500", Reply{Status: 500, Header: http.Header{}}, false, false},
		{"503", Reply{Status: 503, Header: http.Header{}}, false, false},
		{"200", batchReply(t), false, false},
		{"204", Reply{Status: 204, Header: http.Header{}}, false, false},
		{"timeout", Reply{Err: context.DeadlineExceeded}, false, false},
		{"shutdown", Reply{Err: context.Canceled, ShuttingDown: true}, false, false},
		{"error after a 400 status line", Reply{Status: 400, Err: errors.New("read reply (HTTP 400): unexpected EOF")}, false, false},
	} {
		if resend, stop := batchRefusal(tt.reply); resend != tt.resend || stop != tt.stop {
			t.Errorf("%s: batchRefusal = (%v, %v), want (%v, %v)", tt.name, resend, stop, tt.resend, tt.stop)
		}
	}
}
