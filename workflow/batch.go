package workflow

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/google/uuid"
)

// BatchID is the id of the batch that the scatter step stepKey of run
// runID starts: a UUID derived from both (never drawn at random), so that
// a redelivered scatter creates the same workers, and each loop iteration
// and each run a batch of its own.
func BatchID(runID, stepKey string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("stepflow:batch:"+runID+"\x00"+stepKey)).String()
}

// batchScatter starts a batch, Flowcraft's way: for item i of its input
// (an array; nothing, null, false, 0 or "" count as []) it stores the
// item at _batch.<scatter>_<batchId>_item_<i> and creates the worker
// <workerUsesKey>_<batchId>_<i>, a dynamic node whose input is that key.
// The workers' outputs go to params.gatherNodeId. With params.chunkSize,
// the workers run a chunk at a time (chunk k+1 starts once chunk k has
// finished). It records <gather>_allWorkerIds, <gather>_hasMore (false:
// the scatter creates every chunk's workers at once) and
// <scatter>_currentIndex (the number of items) in the context.
func batchScatter(_ context.Context, in NodeInput) (NodeResult, error) {
	var items []any
	switch v := in.Input.(type) {
	case []any:
		items = v
	case nil:
	default:
		if !truthy(v) {
			break
		}
		//lint:ignore ST1005 Flowcraft's message, word for word
		return NodeResult{}, fmt.Errorf("Input for batch-scatter node '%s' must be an array.", in.NodeID)
	}
	worker, _ := in.Params["workerUsesKey"].(string)
	gather, _ := in.Params["gatherNodeId"].(string)
	if worker == "" || gather == "" {
		return NodeResult{}, errors.New("batch-scatter requires the params workerUsesKey and gatherNodeId")
	}
	chunk := len(items)
	if n, ok := intParam(in.Params, "chunkSize"); ok && n > 0 {
		chunk = n
	}
	batch := BatchID(in.RunID, in.Key())
	nodes := make([]DynamicNode, len(items))
	ids := make([]any, len(items))
	for i, item := range items {
		key := fmt.Sprintf("_batch.%s_%s_item_%d", in.NodeID, batch, i)
		in.Context.Set(key, item)
		id := fmt.Sprintf("%s_%s_%d", worker, batch, i)
		nodes[i] = DynamicNode{ID: id, Uses: worker, Inputs: &Inputs{Key: key}, Wave: i / chunk}
		ids[i] = id
	}
	in.Context.Set(in.NodeID+"_currentIndex", len(items))
	in.Context.Set(gather+"_hasMore", false)
	in.Context.Set(gather+"_allWorkerIds", ids)
	return NodeResult{
		Output:       map[string]any{"gatherNodeId": gather, "hasMore": false},
		DynamicNodes: nodes,
		Gather:       gather,
	}, nil
}

// truthy is JavaScript's truthiness of a JSON value.
func truthy(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case float64:
		return v != 0 && !math.IsNaN(v)
	case string:
		return v != ""
	}
	return true
}

// batchGather ends a batch: its input is the workers' outputs in item
// order (see Advance), which it sets at context[params.outputKey] and
// outputs.
func batchGather(_ context.Context, in NodeInput) (NodeResult, error) {
	results, ok := in.Input.([]any)
	if !ok {
		return NodeResult{}, fmt.Errorf("batch-gather node '%s' got %s, not a batch's results: it must be the gatherNodeId of a batch-scatter before it", in.NodeID, jsonType(in.Input))
	}
	if key, _ := in.Params["outputKey"].(string); key != "" {
		in.Context.Set(key, results)
	}
	return NodeResult{Output: results}, nil
}

func checkScatterParams(p map[string]any) error {
	var errs []error
	for _, k := range []string{"workerUsesKey", "gatherNodeId"} {
		if s, _ := p[k].(string); s == "" {
			errs = append(errs, fmt.Errorf("%s: required", k))
		}
	}
	if v, present := p["outputKey"]; present && v != nil {
		if _, ok := v.(string); !ok {
			errs = append(errs, errors.New("outputKey: must be a string"))
		}
	}
	if v, present := p["chunkSize"]; present && v != nil {
		if n, ok := intParam(p, "chunkSize"); !ok || n < 1 {
			errs = append(errs, fmt.Errorf("chunkSize: must be a whole number of at least 1, got %v", v))
		}
	}
	return errors.Join(errs...)
}

func checkGatherParams(p map[string]any) error {
	if s, _ := p["outputKey"].(string); s == "" {
		return errors.New("outputKey: required (the context key that receives the batch's results)")
	}
	return nil
}

// checkBatches checks what a batch's params say about other nodes: the
// scatter's gather is one of its successors, its workers' node type is
// registered, and every batch-gather has a scatter.
func (w *Workflow) checkBatches(reg *Registry, index map[string]int, add func(path, format string, args ...any)) {
	gathered := map[string]bool{}
	for _, id := range w.order {
		n := w.nodes[id]
		if n.Uses != NodeBatchScatter {
			continue
		}
		path := fmt.Sprintf("nodes[%d].params", index[id])
		if g, _ := n.Params["gatherNodeId"].(string); g != "" {
			gathered[g] = true
			if !slices.Contains(w.Successors(id), g) {
				add(path+".gatherNodeId", "%q is not a successor of %q: add the edge %s → %s", g, id, id, g)
			}
		}
		if wk, _ := n.Params["workerUsesKey"].(string); wk != "" && reg != nil {
			if _, ok := reg.Lookup(wk); !ok {
				add(path+".workerUsesKey", "unknown node type %q", wk)
			}
		}
	}
	for _, id := range w.order {
		if w.nodes[id].Uses == NodeBatchGather && !gathered[id] {
			add(fmt.Sprintf("nodes[%d]", index[id]), "batch-gather %q is the gatherNodeId of no batch-scatter", id)
		}
	}
}
