package workflow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Pausing: the wait node, whose step awaits until someone resumes it with
// an output (and an action), the webhook node, which makes the endpoint
// whose request does that, and the awaiting status of a run with nothing
// else left to run.

// Node types that pause a run. NodeWebhookClass is the name Flowcraft's
// builder gives a webhook node (.node(id, WebhookNode)); it means the same
// as NodeWebhook.
const (
	NodeWait         = "wait"
	NodeWebhook      = "webhook"
	NodeWebhookClass = "WebhookNode"
)

// StepAwaiting is the state of a step that waits for an external event (a
// wait node's): it holds no worker and no message, and ends when the run
// is resumed there (Workflow.ResumeStep), with the resume's output and
// action as its result.
const StepAwaiting StepState = "awaiting"

// RunAwaiting is the status of a run whose only unfinished steps await:
// nothing runs until it is resumed. It is not final.
const RunAwaiting RunStatus = "awaiting"

// AwaitStatus is the status of a run that a decision leaves with status,
// pending steps still to finish, awaiting of which await a resume: a
// running run whose pending steps all await is awaiting.
func AwaitStatus(status RunStatus, pending, awaiting int) RunStatus {
	if status == RunRunning && pending > 0 && awaiting >= pending {
		return RunAwaiting
	}
	return status
}

// AwaitingAfter is the number of a run's steps that await once the
// applied steps are stored, from before, the number before: each applied
// step that started awaiting adds one. (A resume takes its step out
// itself.)
func AwaitingAfter(before int, applied []AppliedStep) int {
	for _, a := range applied {
		if a.State == StepAwaiting {
			before++
		}
	}
	return before
}

// awaitError is what Await returns; CompiledNode.Outcome recognises it.
type awaitError struct{}

func (*awaitError) Error() string { return "awaiting an external event" }

// Await returns the error a node returns to pause its step until the run
// is resumed there: the step awaits, holding no worker, and its result is
// the output and action the resume gives (the node is not called again).
// The wait node uses it.
func Await() error { return &awaitError{} }

// awaitOutcome is the outcome of an attempt that returned Await's error.
func awaitOutcome(attempt int, err error) (AttemptOutcome, bool) {
	var a *awaitError
	if !errors.As(err, &a) {
		return AttemptOutcome{}, false
	}
	return AttemptOutcome{State: StepAwaiting, Attempt: attempt}, true
}

// waitNode pauses its step until the run is resumed there.
func waitNode(context.Context, NodeInput) (NodeResult, error) { return NodeResult{}, Await() }

func isWebhook(uses string) bool { return uses == NodeWebhook || uses == NodeWebhookClass }

// Resume is what resumes a run at an awaiting step: the step's output,
// and an action that routes its edges like any node's action.
type Resume struct {
	Node   string `json:"node"` // the awaiting step's key (for a node outside loops, its id)
	Output any    `json:"output,omitempty"`
	Action string `json:"action,omitempty"`
}

// ErrNotAwaiting is wrapped by the errors of a resume that finds its step
// not awaiting: not reached yet, resumed already, or no wait node at all.
var ErrNotAwaiting = errors.New("not awaiting")

// ErrUnknownStep is wrapped by the error of a resume naming a step the
// blueprint has not.
var ErrUnknownStep = errors.New("no such node")

// refusal is an error that is its sentinel without repeating its text.
type refusal struct {
	is  error
	msg string
}

func (e *refusal) Error() string        { return e.msg }
func (e *refusal) Is(target error) bool { return target == e.is }

func refuse(is error, format string, args ...any) error {
	return &refusal{is: is, msg: fmt.Sprintf(format, args...)}
}

// CheckResume says whether the step key, found with status st (found is
// false when it has no step yet), may be resumed: it must be a wait
// node's step and await.
func (w *Workflow) CheckResume(key string, st StepStatus, found bool) error {
	s, ok := w.Step(key)
	if !ok {
		return refuse(ErrUnknownStep, "blueprint %q has no node %q (its wait nodes: %s)", w.Blueprint.ID, key, w.waitList())
	}
	if s.Node.Uses != NodeWait {
		return refuse(ErrNotAwaiting, "node %q is a %s node, not a wait node (its wait nodes: %s)", key, s.Node.Uses, w.waitList())
	}
	switch {
	case !found:
		return refuse(ErrNotAwaiting, "node %q does not await: it has not been reached yet", key)
	case st.State == StepSucceeded:
		return refuse(ErrNotAwaiting, "node %q does not await: it was resumed already", key)
	case st.State != StepAwaiting:
		return refuse(ErrNotAwaiting, "node %q does not await: it is %s", key, st.State)
	}
	return nil
}

// ResumeStep decides a resume of the step r.Node, found with status st:
// CheckResume, then the routing of its result (r.Output and r.Action), as
// Route decides a node's. A runtime stores the step as succeeded with
// that result and routing and decides the rest like any commit
// (DecideRun), with the step's awaiting no longer counted.
func (w *Workflow) ResumeStep(st StepStatus, found bool, r Resume, env Env) (NodeResult, Routing, error) {
	if err := w.CheckResume(r.Node, st, found); err != nil {
		return NodeResult{}, Routing{}, err
	}
	res := NodeResult{Output: normalize(r.Output), Action: r.Action}
	routing, err := w.Route(r.Node, res, env)
	if err != nil {
		return NodeResult{}, Routing{}, fmt.Errorf("resume %s: %w", r.Node, err)
	}
	return res, routing, nil
}

// waitList names the blueprint's wait nodes, for errors.
func (w *Workflow) waitList() string {
	var ids []string
	for _, id := range w.order {
		if w.nodes[id].Uses == NodeWait {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

// Webhook is what a webhook node outputs (Flowcraft's shape): the URL
// whose request resumes the run, and the event's name.
type Webhook struct {
	URL   string `json:"url"`
	Event string `json:"event"`
}

// WebhookEndpoints make the endpoints of webhook steps: a runtime that
// serves webhooks gives one to the node through the attempt's context
// (WithWebhookEndpoints).
type WebhookEndpoints interface {
	// Register makes the endpoint of the webhook step in is an attempt of.
	// A request to it resumes the run at the step's wait node
	// (Workflow.WebhookWait).
	Register(ctx context.Context, in NodeInput) (Webhook, error)
}

type webhookEndpointsKey struct{}

// WithWebhookEndpoints returns ctx carrying e, for the webhook nodes
// called with it.
func WithWebhookEndpoints(ctx context.Context, e WebhookEndpoints) context.Context {
	return context.WithValue(ctx, webhookEndpointsKey{}, e)
}

// webhookNode registers its endpoint and outputs {url, event}. It does not
// pause: the wait node after it does.
func webhookNode(ctx context.Context, in NodeInput) (NodeResult, error) {
	e, _ := ctx.Value(webhookEndpointsKey{}).(WebhookEndpoints)
	if e == nil {
		return NodeResult{}, fmt.Errorf("webhook %q: this runtime serves no webhooks (the API server of the stack does: run the blueprint with stepflow start)", in.NodeID)
	}
	h, err := e.Register(ctx, in)
	if err != nil {
		return NodeResult{}, fmt.Errorf("webhook %q: %w", in.NodeID, err)
	}
	return NodeResult{Output: map[string]any{"url": h.URL, "event": h.Event}}, nil
}

// WebhookEvent is the event name of a webhook node's endpoint, as
// Flowcraft names it.
func WebhookEvent(nodeID string) string { return "webhook:" + nodeID }

// WebhookWait returns the key of the wait step that a request to the
// endpoint of webhook step key resumes: the wait node nearest after the
// webhook node (see checkWebhooks), in the same loop iteration.
func (w *Workflow) WebhookWait(key string) (string, bool) {
	s, ok := w.Step(key)
	if !ok || !isWebhook(s.Node.Uses) {
		return "", false
	}
	waits := w.nearestWaits(s.Node.ID)
	if len(waits) != 1 {
		return "", false
	}
	return w.stepIn(waits[0], s), true
}

// nearestWaits returns the wait nodes nearest after node id along edges,
// breadth first, within id's loop scope and not through a loop-controller.
func (w *Workflow) nearestWaits(id string) []string {
	scope := w.loopOf[id]
	seen := map[string]bool{id: true}
	frontier := []string{id}
	for len(frontier) > 0 {
		var next, found []string
		for _, n := range frontier {
			for _, e := range w.out[n] {
				t := e.Target
				if seen[t] || w.loopOf[t] != scope {
					continue
				}
				seen[t] = true
				switch tn := w.nodes[t]; {
				case tn.Uses == NodeWait:
					found = append(found, t)
				case tn.Uses != NodeLoopController:
					next = append(next, t)
				}
			}
		}
		if len(found) > 0 {
			slices.Sort(found)
			return found
		}
		frontier = next
	}
	return nil
}

// checkWebhooks reports a webhook node without a wait node after it to
// resume, or with two equally near.
func (w *Workflow) checkWebhooks(index map[string]int, add func(path, format string, args ...any)) {
	for _, id := range w.order {
		if !isWebhook(w.nodes[id].Uses) {
			continue
		}
		path := fmt.Sprintf("nodes[%d].uses", index[id])
		switch waits := w.nearestWaits(id); len(waits) {
		case 0:
			add(path, "webhook %q has no wait node after it: a request to its URL resumes the run at the nearest wait node its edges lead to", id)
		case 1:
		default:
			add(path, "webhook %q has wait nodes %s equally near after it: its request can resume only one", id, strings.Join(waits, " and "))
		}
	}
}

// awaiting reports whether a step of the local run awaits.
func (r *localRun) awaiting() bool {
	for _, st := range r.steps {
		if st.status.State == StepAwaiting {
			return true
		}
	}
	return len(r.parked) > 0
}

// nextResume asks opts.OnAwait how to resume a local run that has nothing
// left to run but steps that await; false ends the run awaiting.
func (r *localRun) nextResume(opts RunOptions, result *RunResult, elapsedMs float64) (Resume, bool) {
	if opts.OnAwait == nil || result.Status != RunRunning || !r.awaiting() {
		return Resume{}, false
	}
	snap := *result
	snap.Status = RunAwaiting
	snap.Context = make(map[string]any, len(r.context))
	for k, v := range r.context {
		snap.Context[k] = v
	}
	snap.Steps = r.records()
	snap.DurationMs = elapsedMs
	return opts.OnAwait(&snap)
}
