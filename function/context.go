package function

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/workflow"
)

// outputLookup reads a node's output at its bare key ("start") or at
// _outputs.<id> when the running node asks for one it did not name in its
// inputs or expressions, as Flowcraft's context holds them: a node whose
// params say which key to read still sees the output, and the step loads
// no outputs for nodes that ask for none. A key that is no node of the
// blueprint, or a node that has not run yet, falls back to the context.
type outputLookup struct {
	ctx     context.Context
	st      *store.Store
	w       *workflow.Workflow
	runID   string
	outputs map[string]any // the outputs loaded for the node already

	mu  sync.Mutex
	err error // a failed read: the attempt is not committed (503)
}

func (l *outputLookup) get(key string) (any, bool) {
	id, _ := strings.CutPrefix(key, workflow.OutputKey(""))
	if _, ok := l.w.Node(id); !ok {
		return nil, false
	}
	if v, ok := l.outputs[id]; ok {
		return v, true
	}
	out, err := l.st.Outputs(l.ctx, nil, l.runID, []string{id})
	if err != nil {
		l.mu.Lock()
		l.err = err
		l.mu.Unlock()
		return nil, false
	}
	v, ok := out[id]
	return v, ok
}

// failed is the error of a read that failed, if any.
func (l *outputLookup) failed() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// encodeOutput is a node's output as the step's commit stores it, or an
// error naming the node when it cannot be encoded or is larger than max
// bytes: the attempt fails (its retries and fallback apply).
func encodeOutput(nodeID string, output any, max int) ([]byte, error) {
	b, err := json.Marshal(output)
	if err != nil {
		return nil, fmt.Errorf("node %s: output cannot be stored as JSON: %w", nodeID, err)
	}
	if len(b) > max {
		return nil, fmt.Errorf("node %s: output is %d bytes of JSON, over the limit of %d (STEPFLOW_MAX_OUTPUT_BYTES)", nodeID, len(b), max)
	}
	return b, nil
}
