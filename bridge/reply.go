package bridge

// Reading the function's replies: the jobs a 2xx reply carries, or why it is
// a bad reply (policy.go dead-letters it as CodeBadReply).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/stepflow/stepflow/internal/wire"
)

// MaxReplyBytes bounds the reply body the bridge reads; a larger 2xx reply is a
// bad reply.
const MaxReplyBytes = 16 << 20

// maxDelayMs bounds a reply job's delayMs (and keeps it far from overflowing
// a time.Duration).
const maxDelayMs = int64(365 * 24 * time.Hour / time.Millisecond)

// parseBatchReply reads a 2xx batch reply: for each job, its result or an
// error naming why it has none (the same error for every job when the reply
// as a whole is unusable).
func parseBatchReply(r Reply, jobs []BatchJob) ([]wire.Result, []error) {
	results := make([]wire.Result, len(jobs))
	errs := make([]error, len(jobs))
	all := func(err error) ([]wire.Result, []error) {
		for i := range errs {
			errs[i] = err
		}
		return results, errs
	}
	if r.BodyTruncated {
		return all(fmt.Errorf("reply body larger than %d bytes", MaxReplyBytes))
	}
	msg := cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(r.Body)))
	if msg.ReadEncoding() != binding.EncodingBatch {
		return all(fmt.Errorf("reply to a batch is not a CloudEvents batch (HTTP %d, content-type %q, want %s)",
			r.Status, r.Header.Get("Content-Type"), wire.BatchContentType))
	}
	events, err := binding.ToEvents(context.Background(), msg, msg.BodyReader)
	if err != nil {
		return all(fmt.Errorf("reply batch is not a readable CloudEvents batch: %w", err))
	}
	for i, j := range jobs {
		if i >= len(events) {
			errs[i] = fmt.Errorf("reply batch has %d results for %d jobs: none for job %d (%s)", len(events), len(jobs), i, j.ID)
			continue
		}
		res, err := parseResult(events[i], j.ID)
		if err != nil {
			errs[i] = fmt.Errorf("reply batch result %d (job %s): %w", i, j.ID, err)
			continue
		}
		results[i] = res
	}
	return results, errs
}

// parseResult reads one result event of a batch reply, which must answer the
// job with id.
func parseResult(ev event.Event, id string) (wire.Result, error) {
	var res wire.Result
	if err := ev.Validate(); err != nil {
		return res, fmt.Errorf("invalid CloudEvent: %w", err)
	}
	if ev.ID() != id {
		return res, fmt.Errorf("has id %q, want %q (results must be in request order)", ev.ID(), id)
	}
	if ev.Type() != wire.ResultEventType {
		return res, fmt.Errorf("has type %q, want %q", ev.Type(), wire.ResultEventType)
	}
	if err := checkJSONData(ev); err != nil {
		return res, err
	}
	if err := json.Unmarshal(ev.Data(), &res); err != nil {
		return res, fmt.Errorf("data is not {\"status\":…}: %w", err)
	}
	if res.Status < 100 || res.Status > 599 {
		return res, fmt.Errorf("data has status %d, want an HTTP status", res.Status)
	}
	return res, nil
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
	if err := checkJSONData(*ev); err != nil {
		return nil, fmt.Errorf("reply %w", err)
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
	jobs, err := checkJobs(*data.Jobs)
	if err != nil {
		return nil, fmt.Errorf("reply %w", err)
	}
	if jobs == nil {
		jobs = []ReplyJob{}
	}
	return jobs, nil
}

// checkJSONData checks that ev has data, and JSON data if it says what.
func checkJSONData(ev event.Event) error {
	if ct := ev.DataContentType(); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return fmt.Errorf("data content type is %q, want application/json", ct)
		}
	}
	if len(ev.Data()) == 0 {
		return errors.New(ev.Type() + " event has no data")
	}
	return nil
}

// checkJobs validates the jobs of a reply or a result.
func checkJobs(jobs []ReplyJob) ([]ReplyJob, error) {
	for i, j := range jobs {
		if err := j.Validate(); err != nil {
			return nil, fmt.Errorf("jobs[%d]: %w", i, err)
		}
		if j.DelayMs < 0 {
			return nil, fmt.Errorf("jobs[%d]: delayMs is negative", i)
		}
		if j.DelayMs > maxDelayMs {
			return nil, fmt.Errorf("jobs[%d]: delayMs %d is more than a year", i, j.DelayMs)
		}
	}
	return jobs, nil
}
