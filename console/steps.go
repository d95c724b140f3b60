package console

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/workflow"
)

// The states a step is drawn in. The store's states are finer (a retrying
// step is "running", a recovered one "succeeded"); the table shows those.
// A "ready" step's job is queued or running: an attempt is recorded when it
// ends, and whether a worker holds it now is only in its Redis lease.
const (
	statePending   = "pending" // no step yet: the run has not reached the node
	stateReady     = "ready"
	stateRunning   = "running"
	stateAwaiting  = "awaiting"
	stateSucceeded = "succeeded"
	stateFailed    = "failed"
	stateSkipped   = "skipped"
)

// displayState is how a stored step state is drawn.
func displayState(s workflow.StepState) string {
	switch s {
	case workflow.StepReady:
		return stateReady
	case workflow.StepRetrying, workflow.StepAwaitingFallback:
		return stateRunning
	case workflow.StepSleeping, workflow.StepAwaiting, workflow.StepAwaitingChild:
		return stateAwaiting
	case workflow.StepSucceeded, workflow.StepRecovered:
		return stateSucceeded
	case workflow.StepFailed:
		return stateFailed
	case workflow.StepSkipped:
		return stateSkipped
	}
	return stateReady // a state of a newer server: in flight, most likely
}

// statePriority orders states for a node with several steps (iterations,
// workers): the one drawn is the most urgent.
var statePriority = []string{stateFailed, stateRunning, stateAwaiting, stateReady, stateSucceeded, stateSkipped, statePending}

func aggregate(states []string) string {
	best := len(statePriority) - 1
	for _, s := range states {
		if i := slices.Index(statePriority, s); i >= 0 && i < best {
			best = i
		}
	}
	return statePriority[best]
}

// stepRow is a row of the steps table.
type stepRow struct {
	client.StepDetail
	Anchor        string // the row's element id
	Class         string // the state as drawn
	Input, Output string // indented JSON; "" for none
}

// Kinds of step groups.
const (
	groupSingle     = ""           // one step of one node
	groupIterations = "iterations" // a loop body's node: node#1, node#2, ...
	groupWorkers    = "workers"    // a batch's dynamic workers, by their scatter node
	groupDynamic    = "dynamic"    // other steps of no blueprint node
)

// stepGroup is the steps the table shows as one row: one step, or the
// iterations of one node, or the workers of one scatter.
type stepGroup struct {
	Key     string // unique among the run's groups
	Node    string // the blueprint node the steps belong to ("" for dynamic ones)
	Kind    string
	Uses    string
	State   string // the most urgent of its steps'
	Anchor  string
	Steps   []stepRow
	Counts  string // "198 succeeded, 2 failed"
	Done    int    // steps finished
	Retried bool   // a step took more than one attempt
}

// Summary is the group's row title: "×200 workers, 198 done".
func (g *stepGroup) Summary() string {
	switch g.Kind {
	case groupIterations:
		return fmt.Sprintf("×%d iterations, %d done", len(g.Steps), g.Done)
	case groupWorkers:
		return fmt.Sprintf("×%d workers, %d done", len(g.Steps), g.Done)
	case groupDynamic:
		return fmt.Sprintf("×%d dynamic steps, %d done", len(g.Steps), g.Done)
	}
	return ""
}

// Many reports whether the group is shown as a summary row.
func (g *stepGroup) Many() bool { return len(g.Steps) > 1 || g.Kind == groupWorkers }

// steps groups a run's steps: each blueprint node's occurrences together,
// each scatter's workers together, in the order their first step became
// ready.
type steps struct {
	Groups []*stepGroup
	byKey  map[string]*stepGroup // by group key
}

func groupSteps(bp *workflow.Blueprint, details []client.StepDetail) *steps {
	nodes := map[string]*workflow.Node{}
	var scatters []workflow.Node // batch-scatter nodes, by their workers' uses
	if bp != nil {
		for i := range bp.Nodes {
			n := &bp.Nodes[i]
			nodes[n.ID] = n
			if n.Uses == "batch-scatter" {
				if _, ok := n.Params["workerUsesKey"].(string); ok {
					scatters = append(scatters, *n)
				}
			}
		}
	}
	out := &steps{byKey: map[string]*stepGroup{}}
	for i, d := range details {
		node, kind, uses := stepOwner(nodes, scatters, d.NodeID)
		key := node
		switch kind {
		case groupWorkers:
			key = workersKey(node)
		case groupDynamic:
			node = ""
		}
		if d.Uses == "" {
			d.Uses = uses
		}
		row := stepRow{StepDetail: d, Anchor: "step-" + strconv.Itoa(i), Class: displayState(d.State)}
		if d.Input != nil {
			row.Input = prettyJSON(d.Input)
		}
		if d.Output != nil {
			row.Output = prettyJSON(d.Output)
		}
		g := out.byKey[key]
		if g == nil {
			g = &stepGroup{Key: key, Node: node, Kind: kind, Uses: uses, Anchor: "group-" + strconv.Itoa(len(out.Groups))}
			out.byKey[key] = g
			out.Groups = append(out.Groups, g)
		}
		if kind == groupIterations || (g.Kind == groupSingle && len(g.Steps) > 0) {
			g.Kind = groupIterations // node and node#2, or a node met twice
		}
		g.Steps = append(g.Steps, row)
	}
	for _, g := range out.Groups {
		states := make([]string, 0, len(g.Steps))
		count := map[string]int{}
		for _, s := range g.Steps {
			states = append(states, s.Class)
			count[s.Class]++
			if s.State.Terminal() {
				g.Done++
			}
			g.Retried = g.Retried || s.Attempts > 1
		}
		g.State = aggregate(states)
		var parts []string
		for _, st := range statePriority {
			if count[st] > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", count[st], st))
			}
		}
		g.Counts = strings.Join(parts, ", ")
		if g.Kind == groupSingle {
			g.Anchor = g.Steps[0].Anchor
		}
	}
	return out
}

// workersKey is the group key of a scatter's workers.
func workersKey(scatter string) string { return "workers\x00" + scatter }

// stepOwner finds what a step key is an occurrence of: a blueprint node
// (its own id, or id#N for a loop iteration), a scatter's worker
// (<workerUsesKey>_<batch>_<i>), or else nothing known (grouped by the
// key without its trailing _<n>).
func stepOwner(nodes map[string]*workflow.Node, scatters []workflow.Node, key string) (owner, kind, uses string) {
	if n, ok := nodes[key]; ok {
		return key, groupSingle, n.Uses
	}
	if i := strings.LastIndexByte(key, '#'); i > 0 && digits(key[i+1:]) {
		if n, ok := nodes[key[:i]]; ok {
			return key[:i], groupIterations, n.Uses
		}
	}
	for _, s := range scatters {
		w := s.Params["workerUsesKey"].(string)
		if strings.HasPrefix(key, w+"_") {
			return s.ID, groupWorkers, w
		}
	}
	if i := strings.LastIndexByte(key, '_'); i > 0 && digits(key[i+1:]) {
		return key[:i], groupDynamic, ""
	}
	return key, groupDynamic, ""
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
