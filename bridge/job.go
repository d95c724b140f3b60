package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/stepflow/stepflow/internal/wire"
)

// peekJob reads a delivery body leniently, only to name the job in ids, the
// CloudEvent subject and logs; a body that does not parse gives the zero Job.
// Whether a body is acceptable is the function's call (it answers 400), never
// the bridge's.
func peekJob(body []byte) wire.Job {
	var j wire.Job
	if err := json.Unmarshal(body, &j); err != nil {
		return wire.Job{}
	}
	return j
}

// deliveryJobID names a delivery: its message id when it has one (stepflow
// publishers set it), else the id computed from the body (Flowcraft clients
// publish without one), else a sha256 of a body that does not parse.
func deliveryJobID(messageID string, body []byte) string {
	if messageID != "" {
		return messageID
	}
	if j := peekJob(body); j.RunID != "" && j.NodeID != "" {
		return j.ID()
	}
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}
