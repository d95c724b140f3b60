package function

import (
	"context"
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
