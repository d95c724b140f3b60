package console

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/workflow"
)

// DefaultRunsPage is how many runs a page of the runs list shows.
const DefaultRunsPage = 50

// runsPage is the data of the runs list.
type runsPage struct {
	chrome
	Status    string // the filter, as given
	Blueprint string
	Search    string
	Statuses  []workflow.RunStatus
	Runs      []runRow
	Live      bool   // a shown run is running: the page polls
	LiveURL   string // the fragment it polls
	Next      string // the next page's URL; "" on the last
	First     bool   // this is the newest page
	FirstURL  string // the newest page with the same filter
}

type runRow struct {
	client.RunSummary
	URL      string
	Finished int
	Total    int
}

func (c *Console) runs(r *http.Request) (view, error) {
	q := r.URL.Query()
	p := &runsPage{
		chrome: c.chrome("Runs", "runs"),
		Status: q.Get("status"), Blueprint: strings.TrimSpace(q.Get("blueprint")), Search: strings.TrimSpace(q.Get("q")),
		Statuses: client.RunStatuses(), First: q.Get("continue") == "",
	}
	limit := DefaultRunsPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > client.MaxRunsLimit {
			return view{}, &pageError{code: http.StatusBadRequest, msg: "limit " + strconv.Quote(v) + ": want a number from 1 to " + strconv.Itoa(client.MaxRunsLimit)}
		}
		limit = n
	}
	list, err := c.client.Runs(r.Context(), client.RunFilter{
		Status: workflow.RunStatus(p.Status), BlueprintID: p.Blueprint, RunIDPrefix: p.Search,
		Limit: limit, Continue: q.Get("continue"), Progress: true,
	})
	if err != nil {
		return view{}, err
	}
	// A search that names one run opens it.
	if p.Search != "" && p.First && len(list.Runs) == 1 && list.Runs[0].RunID == p.Search && r.URL.Path == "/" {
		return view{}, redirect(runPath(p.Search))
	}
	filter := url.Values{}
	for k, v := range map[string]string{"status": p.Status, "blueprint": p.Blueprint, "q": p.Search} {
		if v != "" {
			filter.Set(k, v)
		}
	}
	if q.Get("limit") != "" {
		filter.Set("limit", q.Get("limit"))
	}
	p.FirstURL = "/?" + filter.Encode()
	this := url.Values{}
	for k, v := range filter {
		this[k] = v
	}
	if t := q.Get("continue"); t != "" {
		this.Set("continue", t)
	}
	p.LiveURL = "/fragments/runs?" + this.Encode()
	if list.Continue != "" {
		filter.Set("continue", list.Continue)
		p.Next = "/?" + filter.Encode()
	}
	for _, s := range list.Runs {
		row := runRow{RunSummary: s, URL: runPath(s.RunID)}
		if s.Steps != nil {
			row.Finished, row.Total = s.Steps.Finished, s.Steps.Total
		}
		p.Runs = append(p.Runs, row)
		p.Live = p.Live || live(s.Status)
	}
	return view{page: "runs", data: p}, nil
}
