// Package wire holds the bridge ↔ function contract: the job message (the
// Flowcraft adapter's JobPayload plus an attempt) and the reply event that
// carries the next jobs. See docs/contract.md.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// CloudEvent types.
const (
	JobEventType   = "dev.stepflow.job.v1"  // bridge → function
	JobsEventType  = "dev.stepflow.jobs.v1" // function → bridge (reply)
	FunctionSource = "stepflow/function"
	// ResultEventType is the reply to one job of a batch (function → bridge).
	ResultEventType = "dev.stepflow.result.v1"
)

// BatchContentType is the CloudEvents batch format: a JSON array of
// structured-mode events. The bridge POSTs several jobs in one request
// with it; the function answers with one ResultEventType event per job, in
// the same order and with the same ids.
const BatchContentType = "application/cloudevents-batch+json"

// MaxBatch bounds the number of events in one batch request.
const MaxBatch = 256

// DeliveryAttemptExtension carries a job's transport attempt in a batch
// (X-Delivery-Attempt in the one-event form).
const DeliveryAttemptExtension = "deliveryattempt"

// MaxIDBytes bounds a run, blueprint or node id.
const MaxIDBytes = 512

// MaxJobBytes bounds a job body.
const MaxJobBytes = 64 << 10

// Job is one step to run: the message body on the queue.
type Job struct {
	RunID       string `json:"runId"`
	BlueprintID string `json:"blueprintId"`
	NodeID      string `json:"nodeId"`
	// StepKey names the occurrence of the node to run (a loop iteration,
	// "<node>#<n>"); absent means NodeID, the step of a node outside
	// loops. A dynamic node (a batch worker) has its id as NodeID and no
	// StepKey.
	StepKey string `json:"stepKey,omitempty"`
	// Attempt is the node-level attempt, 1-based; absent means 1.
	Attempt int `json:"attempt,omitempty"`
}

// NewJob is the job of step stepKey of node nodeID: StepKey is left out
// when it is the node id, so that a job outside loops is the Flowcraft
// adapter's JobPayload as it always was.
func NewJob(runID, blueprintID, nodeID, stepKey string, attempt int) Job {
	j := Job{RunID: runID, BlueprintID: blueprintID, NodeID: nodeID, Attempt: attempt}
	if stepKey != nodeID {
		j.StepKey = stepKey
	}
	return j
}

// Key is the job's step key: StepKey, or NodeID without one.
func (j Job) Key() string {
	if j.StepKey != "" {
		return j.StepKey
	}
	return j.NodeID
}

// ID is "runId:stepKey:attempt" (the step key is the node id outside
// loops): the AMQP message id and CloudEvent id.
func (j Job) ID() string {
	a := j.Attempt
	if a <= 0 {
		a = 1
	}
	return j.RunID + ":" + j.Key() + ":" + strconv.Itoa(a)
}

// ParseJob decodes and validates a job body; the error names what is
// wrong. Unknown fields are ignored, as a newer publisher may add some.
func ParseJob(body []byte) (Job, error) {
	var j Job
	if len(body) > MaxJobBytes {
		return j, fmt.Errorf("job body is %d bytes, more than %d", len(body), MaxJobBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&j); err != nil {
		return j, fmt.Errorf("job body is not a job JSON object: %w", err)
	}
	if err := j.Validate(); err != nil {
		return j, fmt.Errorf("job: %w", err)
	}
	if j.Attempt == 0 {
		j.Attempt = 1
	}
	return j, nil
}

// Validate reports every missing or bad field.
func (j Job) Validate() error {
	var errs []error
	if j.RunID == "" {
		errs = append(errs, errors.New("runId is required"))
	}
	if j.BlueprintID == "" {
		errs = append(errs, errors.New("blueprintId is required"))
	}
	if j.NodeID == "" {
		errs = append(errs, errors.New("nodeId is required"))
	}
	if j.Attempt < 0 {
		errs = append(errs, fmt.Errorf("attempt must be positive, got %d", j.Attempt))
	}
	for _, f := range []struct{ name, v string }{{"runId", j.RunID}, {"blueprintId", j.BlueprintID}, {"nodeId", j.NodeID}, {"stepKey", j.StepKey}} {
		switch {
		case len(f.v) > MaxIDBytes:
			errs = append(errs, fmt.Errorf("%s is %d bytes, more than %d", f.name, len(f.v), MaxIDBytes))
		case !utf8.ValidString(f.v) || strings.ContainsRune(f.v, 0):
			errs = append(errs, fmt.Errorf("%s %q holds a NUL byte or invalid UTF-8", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// NextJob is a job in a reply, with the delay before it is due.
type NextJob struct {
	Job
	DelayMs int64 `json:"delayMs,omitempty"`
}

// Reply is the data of a JobsEventType event.
type Reply struct {
	Jobs []NextJob `json:"jobs"`
}

// Result is the data of a ResultEventType event: what the one-event form
// says with its HTTP status, body and jobs event, for one job of a batch.
type Result struct {
	// Status is the HTTP status the job would have been answered with
	// alone; the bridge applies the same policy to it.
	Status int `json:"status"`
	// Error names the problem when Status is not 2xx.
	Error string `json:"error,omitempty"`
	// Jobs, with a 2xx Status: the jobs to publish before the delivery is
	// acked (none: just ack).
	Jobs []NextJob `json:"jobs,omitempty"`
}

// LeaseKey is the Redis key of the lease of (run, step key): held while a
// delivery runs that step, checked by the reconciler before
// republishing. Outside loops the step key is the node id.
func LeaseKey(prefix, runID, stepKey string) string {
	return prefix + "lease:{" + runID + "}:" + stepKey
}
