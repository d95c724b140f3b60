package bridge

// This file is the bridge's whole ack / retry / dead-letter policy: one pure
// function, Policy.Decide, from what the step function answered (or how the call
// failed) to what the bridge does with the delivery. It does no I/O; bridge.go
// carries the decision out.
//
//	reply                                         decision
//	--------------------------------------------  ---------------------------------------------
//	2xx + CloudEvent dev.stepflow.jobs.v1,         KindPublish: publish every job (delayMs > 0
//	  data {"jobs":[{job…, "delayMs":n}, …]}         through the delay queues), then ack
//	2xx, empty body, no event                      KindAck
//	2xx with anything else                         KindDeadLetter, code "bad-reply"
//	404 408 409 425 429, 5xx,                      KindRetry after capped exponential backoff
//	  timeout, connection error                      with full jitter, never sooner than
//	                                                 Retry-After; KindDeadLetter once
//	                                                 MaxAttempts attempts have been made
//	any other 4xx (400 413 415 422 …), 3xx         KindDeadLetter at once, code = the status
//	transport error caused by our own shutdown     KindRequeue (not a failure of the job)
//
// Attempts are transport attempts: the AMQP header x-attempts counts those
// already made (absent on a fresh job), so a delivery is attempt x-attempts+1,
// sent to the function as X-Delivery-Attempt. Node-level retries are the
// function's business (it replies with the job at attempt+1 and a delayMs).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/stepflow/stepflow/internal/wire"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// CloudEvent types of the bridge ↔ function contract.
const (
	EventTypeJob  = wire.JobEventType  // bridge → function: one job
	EventTypeJobs = wire.JobsEventType // function → bridge: jobs to publish
)

// Error codes written to x-error-code besides HTTP statuses ("400", "503", …).
const (
	CodeTimeout    = "timeout"    // the attempt ran past RequestTimeout
	CodeConnection = "connection" // the function could not be reached or broke the connection
	CodeBadReply   = "bad-reply"  // a 2xx whose body is not a valid jobs event
)

// MaxReasonBytes bounds x-error-reason.
const MaxReasonBytes = 1024

// MaxReplyBytes bounds the reply body the bridge reads; a larger 2xx reply is a
// bad reply.
const MaxReplyBytes = 16 << 20

// Kind is what the bridge does with a delivery.
type Kind int

const (
	// KindPublish: publish the decision's jobs with confirms, then ack the delivery.
	KindPublish Kind = iota + 1
	// KindAck: ack the delivery; the step is done and nothing follows from it here.
	KindAck
	// KindRetry: re-publish the same message after Delay with x-attempts
	// incremented (and x-first-failure set on the first failure), then ack the
	// original.
	KindRetry
	// KindDeadLetter: publish the message to <queue>.dlq with the x-error-*
	// headers, then ack the original.
	KindDeadLetter
	// KindRequeue: nack with requeue. Only for calls cut short by the bridge's
	// own shutdown, which are not failures of the job.
	KindRequeue
)

func (k Kind) String() string {
	switch k {
	case KindPublish:
		return "publish"
	case KindAck:
		return "ack"
	case KindRetry:
		return "retry"
	case KindDeadLetter:
		return "dead-letter"
	case KindRequeue:
		return "requeue"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Decision is the outcome of Policy.Decide.
type Decision struct {
	Kind   Kind
	Delay  time.Duration // KindRetry: how long to wait before the next attempt
	Code   string        // KindRetry, KindDeadLetter: HTTP status as a string, or a Code* constant
	Reason string        // KindRetry, KindDeadLetter: response body or error text, at most MaxReasonBytes
	Jobs   []ReplyJob    // KindPublish: the jobs to enqueue, in reply order
}

// ReplyJob is one entry of a jobs reply: a job plus how long to wait before it
// runs. DelayMs is stripped from the published body.
type ReplyJob = wire.NextJob

// Reply is what Decide needs to know about one transport attempt.
type Reply struct {
	Status        int         // HTTP status; 0 when Err is set
	Header        http.Header // response headers
	Body          []byte      // response body (possibly cut short, see BodyTruncated)
	BodyTruncated bool        // the body was larger than the bridge reads
	Err           error       // transport error: no (complete) response
	Attempt       int         // this transport attempt, 1-based
	ShuttingDown  bool        // the bridge cancelled the call because it is stopping
	Now           time.Time   // for Retry-After dates; zero means time.Now()
}

// Policy holds the knobs of the decision. The zero Jitter draws uniformly
// from [0, d] (full jitter).
type Policy struct {
	MaxAttempts int
	BackoffBase time.Duration
	BackoffMax  time.Duration
	Jitter      func(d time.Duration) time.Duration
}

// maxDelayMs bounds a reply job's delayMs (and keeps it far from overflowing
// a time.Duration).
const maxDelayMs = int64(365 * 24 * time.Hour / time.Millisecond)

// retryableStatus lists the 4xx statuses that mean "not now" rather than "never".
var retryableStatus = map[int]bool{
	http.StatusNotFound:        true, // function not routed yet (scale from zero, rollout)
	http.StatusRequestTimeout:  true,
	http.StatusConflict:        true, // step lease held by another delivery
	http.StatusTooEarly:        true,
	http.StatusTooManyRequests: true,
}

// Decide maps one attempt's outcome to what the bridge does with the delivery.
func (p Policy) Decide(r Reply) Decision {
	if r.Err != nil {
		if r.ShuttingDown {
			return Decision{Kind: KindRequeue, Reason: trimReason(r.Err.Error())}
		}
		code := CodeConnection
		if isTimeout(r.Err) {
			code = CodeTimeout
		}
		return p.retry(r, code, r.Err.Error())
	}

	switch s := r.Status; {
	case s >= 200 && s < 300:
		jobs, err := parseJobsReply(r)
		if err != nil {
			return Decision{Kind: KindDeadLetter, Code: CodeBadReply, Reason: trimReason(err.Error())}
		}
		if jobs == nil {
			return Decision{Kind: KindAck}
		}
		return Decision{Kind: KindPublish, Jobs: jobs}
	case s >= 500 || retryableStatus[s]:
		return p.retry(r, strconv.Itoa(s), statusReason(r))
	default: // other 4xx, 3xx (redirects are never followed), anything else
		return Decision{Kind: KindDeadLetter, Code: strconv.Itoa(s), Reason: statusReason(r)}
	}
}

// retry decides between another attempt and the dead-letter queue.
func (p Policy) retry(r Reply, code, reason string) Decision {
	reason = trimReason(reason)
	if r.Attempt >= p.MaxAttempts {
		return Decision{Kind: KindDeadLetter, Code: code, Reason: reason}
	}
	delay := p.backoff(r.Attempt)
	if ra, ok := retryAfter(r.Header, r.Now); ok && ra > delay {
		delay = ra // never sooner than the function asked
	}
	return Decision{Kind: KindRetry, Delay: delay, Code: code, Reason: reason}
}

// backoff is capped exponential backoff with full jitter:
// uniform in [0, min(BackoffMax, BackoffBase·2^(attempt-1))].
func (p Policy) backoff(attempt int) time.Duration {
	ceiling := p.BackoffMax
	if attempt < 1 {
		attempt = 1
	}
	if shift := attempt - 1; shift < 62 && p.BackoffBase > 0 {
		if d := p.BackoffBase << shift; d > 0 && d>>shift == p.BackoffBase && d < ceiling {
			ceiling = d
		}
	}
	if ceiling <= 0 {
		return 0
	}
	if p.Jitter != nil {
		return p.Jitter(ceiling)
	}
	return rand.N(ceiling + 1)
}

// maxRetryAfter bounds Retry-After so that a bogus value cannot park a job
// for centuries (or overflow a time.Duration).
const maxRetryAfter = 365 * 24 * time.Hour

// retryAfter reads Retry-After as delay-seconds or an HTTP-date.
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		if now.IsZero() {
			now = time.Now()
		}
		return min(max(t.Sub(now), 0), maxRetryAfter), true
	}
	return 0, false
}

// parseJobsReply reads a 2xx reply. It returns (nil, nil) for "no event, empty
// body", the jobs for a valid jobs event (an empty, non-nil slice for zero jobs),
// and an error naming what is wrong otherwise.
func parseJobsReply(r Reply) ([]ReplyJob, error) {
	if r.BodyTruncated {
		return nil, fmt.Errorf("reply body larger than %d bytes", MaxReplyBytes)
	}
	msg := cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(r.Body)))
	switch msg.ReadEncoding() {
	case binding.EncodingUnknown:
		if len(bytes.TrimSpace(r.Body)) == 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("reply has a body but is not a CloudEvent (no ce-specversion header, content-type %q)",
			r.Header.Get("Content-Type"))
	case binding.EncodingBatch:
		return nil, errors.New("reply is a CloudEvents batch; want one " + EventTypeJobs + " event")
	}
	ev, err := binding.ToEvent(context.Background(), msg)
	if err != nil {
		return nil, fmt.Errorf("reply is not a readable CloudEvent: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("reply CloudEvent is invalid: %w", err)
	}
	if ev.Type() != EventTypeJobs {
		return nil, fmt.Errorf("reply CloudEvent has type %q, want %q", ev.Type(), EventTypeJobs)
	}
	if ct := ev.DataContentType(); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return nil, fmt.Errorf("reply data content type is %q, want application/json", ct)
		}
	}
	if len(ev.Data()) == 0 {
		return nil, errors.New("reply " + EventTypeJobs + " event has no data")
	}
	var data struct {
		Jobs *[]ReplyJob `json:"jobs"`
	}
	if err := json.Unmarshal(ev.Data(), &data); err != nil {
		return nil, fmt.Errorf("reply data is not {\"jobs\":[…]}: %w", err)
	}
	if data.Jobs == nil {
		return nil, errors.New(`reply data has no "jobs" array`)
	}
	jobs := *data.Jobs
	if jobs == nil {
		jobs = []ReplyJob{}
	}
	for i, j := range jobs {
		if err := j.Validate(); err != nil {
			return nil, fmt.Errorf("reply jobs[%d]: %w", i, err)
		}
		if j.DelayMs < 0 {
			return nil, fmt.Errorf("reply jobs[%d]: delayMs is negative", i)
		}
		if j.DelayMs > maxDelayMs {
			return nil, fmt.Errorf("reply jobs[%d]: delayMs %d is more than a year", i, j.DelayMs)
		}
	}
	return jobs, nil
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func statusReason(r Reply) string {
	if s := strings.TrimSpace(string(r.Body)); s != "" {
		return trimReason(s)
	}
	if t := http.StatusText(r.Status); t != "" {
		return t
	}
	return "HTTP " + strconv.Itoa(r.Status)
}

// trimReason cuts s to MaxReasonBytes without splitting a UTF-8 sequence.
func trimReason(s string) string {
	s = strings.TrimSpace(s)
	if len(s) <= MaxReasonBytes {
		return s
	}
	cut := MaxReasonBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
