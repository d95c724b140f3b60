package faults

// Resumes through the API process while it, RabbitMQ and the function
// fail: a resume commits once, its downstream nodes run once, and a
// resume whose publish was lost is repaired by the reconciler.

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

// startAPI starts `stepflow api` on the case's proxies, like the other
// processes.
func (b *bundle) startAPI() (*proc, string) {
	addr := freeAddr(b.t)
	p := newProc(b.t, "api", b.dir, "http://"+addr+"/health/readiness", b.fn.env, "api", "--api-address", addr)
	b.t.Cleanup(func() { p.signal(9, 10*time.Second) })
	p.Start()
	return p, "http://" + addr
}

// resumeOutcome is how one resume request ended.
type resumeOutcome struct {
	code    int
	warning string // the API's Warning: a job not published
	body    string
}

// resume POSTs a resume of run at gate, retrying while the API does not
// answer (killed, restarting), until it answers 200 (resumed) or 409
// (resumed already: by an earlier request whose answer the kill lost).
func (b *bundle) resume(base, run string, tries *int) resumeOutcome {
	var out resumeOutcome
	hc := &http.Client{Timeout: 5 * time.Second}
	body := fmt.Sprintf(`{"node": "gate", "output": {"run": %q}}`, run)
	err := testenv.Poll(b.ctx, runsDeadline, 50*time.Millisecond, func() (bool, error) {
		*tries++
		resp, err := hc.Post(base+"/api/v1/runs/"+run+"/resume", "application/json", strings.NewReader(body))
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		text, _ := io.ReadAll(resp.Body)
		out = resumeOutcome{code: resp.StatusCode, warning: resp.Header.Get("Warning"), body: string(text)}
		return out.code == http.StatusOK || out.code == http.StatusConflict, nil
	})
	if err != nil {
		b.t.Errorf("resume %s: %v (last answer %+v)", run, err, out)
	}
	return out
}

func TestResumesAroundKill9(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{})
	bp := loadBlueprint(t, "pause.json")
	api, base := b.startAPI()
	const perPhase = 10
	var ids []string
	for i := range 3 * perPhase {
		id, err := b.client.Start(b.ctx, bp, nil, client.StartOptions{RunID: fmt.Sprintf("pause-%02d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	q := b.tables.Quoted()
	countStatus := func(status workflow.RunStatus) int {
		var n int
		if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM `+q.Statuses+` WHERE run_id = ANY($1) AND status = $2`, ids, string(status)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	testenv.Eventually(t, runsDeadline, "every run to await at gate", func() bool { return countStatus(workflow.RunAwaiting) == len(ids) })
	answers := map[string]resumeOutcome{}
	var mu sync.Mutex
	// resumeAll resumes runs concurrently; after the first answer, fault
	// runs (and the resumers retry through it).
	resumeAll := func(runs []string, fault func()) {
		var wg sync.WaitGroup
		first := make(chan struct{})
		var once sync.Once
		for _, id := range runs {
			wg.Go(func() {
				tries := 0
				out := b.resume(base, id, &tries)
				once.Do(func() { close(first) })
				mu.Lock()
				answers[id] = out
				mu.Unlock()
			})
		}
		<-first
		fault()
		wg.Wait()
	}

	// 1. The API is killed with resumes in flight, and comes back.
	resumeAll(ids[:perPhase], func() {
		t.Log("kill -9 api")
		api.Kill9()
		hold(500 * time.Millisecond)
		api.Restart()
	})

	// 2. RabbitMQ is cut: resumes commit but their jobs cannot be
	// published; the API is killed before it could ever publish them. The
	// reconciler republishes them once the runs count as stalled.
	cut := make(chan struct{})
	go func() { b.rabbit.Cut(6 * time.Second); close(cut) }()
	testenv.Eventually(t, 5*time.Second, "the RabbitMQ proxy to be cut", func() bool { n, _ := b.rabbit.Stats(); return n == 1 })
	for _, id := range ids[perPhase : 2*perPhase] {
		tries := 0
		out := b.resume(base, id, &tries)
		answers[id] = out
		if out.code != http.StatusOK || !strings.Contains(out.warning, "not published") {
			t.Errorf("resume %s with RabbitMQ cut: %+v; want 200 with a Warning that its job was not published", id, out)
		}
	}
	t.Log("kill -9 api (its resumes' jobs unpublished)")
	api.Kill9()
	<-cut
	api.Restart()

	// 3. The function is killed as the resumed runs' next steps reach it.
	resumeAll(ids[2*perPhase:], func() {
		t.Log("kill -9 function")
		b.fn.Kill9()
		hold(time.Second)
		b.fn.Restart()
	})

	// Every run completes; every resume was answered 200 or (after a lost
	// answer) 409.
	testenv.Eventually(t, runsDeadline, "every run to complete", func() bool { return countStatus(workflow.RunCompleted) == len(ids) })
	conflicts := 0
	for _, id := range ids {
		switch a := answers[id]; a.code {
		case http.StatusOK:
		case http.StatusConflict:
			conflicts++
			if !strings.Contains(a.body, "resumed already") && !strings.Contains(a.body, "is completed") {
				t.Errorf("%s: 409 %s", id, a.body)
			}
		default:
			t.Errorf("%s: answered %+v", id, a)
		}
	}
	t.Logf("resumes answered 409 after their first request's answer was lost: %d", conflicts)
	b.waitQuiet()
	b.br.Stop()
	b.rec.Stop()
	b.fn.Stop()
	api.Stop()

	// Each step committed once, with the resume's output; the nodes after
	// the wait ran once where the function was not killed.
	lg, err := readLogs(b.fn, b.rec)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		rows, err := b.pool.Query(b.ctx, `SELECT node_id, state, attempts, coalesce(output::text, '') FROM `+q.Steps+` WHERE run_id = $1`, id)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for rows.Next() {
			var node, state, output string
			var attempts int
			if err := rows.Scan(&node, &state, &attempts, &output); err != nil {
				t.Fatal(err)
			}
			got[node] = fmt.Sprintf("%s/%d", state, attempts)
			if node == "after" && output != fmt.Sprintf(`{"run": %q, "resumed": true}`, id) {
				t.Errorf("%s: after's output %s", id, output)
			}
		}
		rows.Close()
		want := map[string]string{"start": "succeeded/1", "gate": "succeeded/1", "after": "succeeded/1", "end": "succeeded/1"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: steps %v, want %v", id, got, want)
		}
		if i < 2*perPhase {
			for _, node := range []string{"after", "end"} {
				if n := len(lg.attempts[stepKey{id, node}]); n != 1 {
					t.Errorf("%s: %s ran %d attempts, want 1", id, node, n)
				}
			}
		}
	}
	if n := lg.count["reconciler republished a missing job"]; n < perPhase {
		t.Errorf("the reconciler republished %d jobs, want at least the %d whose publish was lost", n, perPhase)
	}
}
