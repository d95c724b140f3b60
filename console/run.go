package console

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/workflow"
)

// runPage is the data of a run's page.
type runPage struct {
	chrome
	Run         client.RunSummary
	Detail      *client.RunDetail
	Graph       *graphView
	Steps       *steps
	Context     string
	Output      string
	HasOutput   bool
	Live        bool   // the run may still change: the page polls
	LiveURL     string // the fragment it polls
	CancelURL   string // the API's cancel of the run
	Resume      []resumeForm
	ResumeURL   string
	DeadLetters int    // the run's dead letters not yet replayed
	ReplayBody  string // the API's replay request for them
}

// resumeForm is a form that resumes the run at one awaiting step. Node is
// "" when the run awaits but no step says where: the form asks.
type resumeForm struct {
	Node    string
	Actions []string // the actions of the node's outgoing edges
}

func (c *Console) run(r *http.Request) (view, error) {
	id := r.PathValue("id")
	d, err := c.client.Inspect(r.Context(), id)
	if err != nil {
		return view{}, err
	}
	dls, err := c.client.DeadLetters(r.Context(), client.DeadLetterFilter{RunID: id, Limit: 1000})
	if err != nil {
		return view{}, err
	}
	return view{page: "run", data: c.runPage(d, len(dls))}, nil
}

func (c *Console) runPage(d *client.RunDetail, deadLetters int) *runPage {
	id := d.Run.RunID
	st := groupSteps(d.Blueprint, d.Steps)
	p := &runPage{
		chrome: c.chrome("Run "+id, "runs"),
		Run:    d.Run, Detail: d, Steps: st,
		Graph:     buildGraph(d.Blueprint, st, d.FailedNode),
		Context:   prettyJSON(d.Context),
		Live:      live(d.Run.Status),
		LiveURL:   "/fragments/runs/" + url.PathEscape(id),
		CancelURL: "/api/v1/runs/" + url.PathEscape(id) + "/cancel",
		ResumeURL: "/api/v1/runs/" + url.PathEscape(id) + "/resume",
	}
	if d.Output != nil {
		p.Output, p.HasOutput = prettyJSON(d.Output), true
	}
	if deadLetters > 0 {
		p.DeadLetters = deadLetters
		b, _ := json.Marshal(map[string]string{"runId": id})
		p.ReplayBody = string(b)
	}
	if d.Run.Status == workflow.RunAwaiting {
		p.Resume = resumeForms(d.Blueprint, st)
	}
	return p
}

// resumeForms offers a form per awaiting step, with the actions of its
// node's outgoing edges; one asking for the node when no step awaits.
func resumeForms(bp *workflow.Blueprint, st *steps) []resumeForm {
	var out []resumeForm
	for _, g := range st.Groups {
		for _, s := range g.Steps {
			if s.State != workflow.StepAwaiting {
				continue
			}
			out = append(out, resumeForm{Node: s.NodeID, Actions: actionsOf(bp, g.Node)})
		}
	}
	if len(out) == 0 {
		out = append(out, resumeForm{})
	}
	return out
}

func actionsOf(bp *workflow.Blueprint, node string) []string {
	var out []string
	if bp == nil {
		return out
	}
	for _, e := range bp.Edges {
		if e.Source == node && e.Action != "" && !slices.Contains(out, e.Action) {
			out = append(out, e.Action)
		}
	}
	return out
}
