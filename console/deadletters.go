package console

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/stepflow/stepflow/client"
)

// DefaultDeadLettersPage is how many dead letters a page shows.
const DefaultDeadLettersPage = 100

type deadLettersPage struct {
	chrome
	Run      string // the filter: one run's
	All      bool   // the replayed ones too
	Letters  []deadLetterRow
	Runs     int    // runs among the shown letters not replayed
	Next     string // the next page's URL; "" on the last
	First    bool
	FirstURL string
	AllBody  string // the API's replay request of every dead letter
}

type deadLetterRow struct {
	client.DeadLetter
	RunURL     string
	ReplayBody string // the API's replay request of its run's dead letters
}

func (c *Console) deadLetters(r *http.Request) (view, error) {
	q := r.URL.Query()
	p := &deadLettersPage{chrome: c.chrome("Dead letters", "dead-letters"), Run: strings.TrimSpace(q.Get("run")), All: q.Get("all") != "", AllBody: `{"all":true}`}
	var after int64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return view{}, &pageError{code: http.StatusBadRequest, msg: "after " + strconv.Quote(v) + ": want the id of a dead letter"}
		}
		after = n
	}
	p.First = after == 0
	dls, err := c.client.DeadLetters(r.Context(), client.DeadLetterFilter{RunID: p.Run, Replayed: p.All, Limit: DefaultDeadLettersPage + 1, AfterID: after})
	if err != nil {
		return view{}, err
	}
	filter := url.Values{}
	if p.Run != "" {
		filter.Set("run", p.Run)
	}
	if p.All {
		filter.Set("all", "1")
	}
	p.FirstURL = "/dead-letters?" + filter.Encode()
	if len(dls) > DefaultDeadLettersPage {
		dls = dls[:DefaultDeadLettersPage]
		filter.Set("after", strconv.FormatInt(dls[len(dls)-1].ID, 10))
		p.Next = "/dead-letters?" + filter.Encode()
	}
	runs := map[string]bool{}
	for _, dl := range dls {
		row := deadLetterRow{DeadLetter: dl}
		if dl.RunID != "" {
			row.RunURL = runPath(dl.RunID)
			b, _ := json.Marshal(map[string]string{"runId": dl.RunID})
			row.ReplayBody = string(b)
			if dl.ReplayedAt == nil {
				runs[dl.RunID] = true
			}
		}
		p.Letters = append(p.Letters, row)
	}
	p.Runs = len(runs)
	return view{page: "deadletters", data: p}, nil
}
