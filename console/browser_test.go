package console_test

// The pages in a real browser: Debian's headless Chromium, driven by
// chromedp. One browser serves every test of the package, each test in a
// tab of its own; waits are on selectors, never on the clock.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/stepflow/stepflow/api"
	"github.com/stepflow/stepflow/bridge"
	"github.com/stepflow/stepflow/workflow"
)

var screenshotDir = flag.String("screenshots", "", "also write the browser tests' screenshots (PNG) to this directory; ../docs/console updates docs/console.md's")

var browserState struct {
	once    sync.Once
	ctx     context.Context // the browser's; tabs are its children
	cancel  func()
	profile string
	err     error
}

// chromiumPath finds Debian's chromium (or another Chrome) on PATH.
func chromiumPath() (string, error) {
	var err error
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		var p string
		if p, err = exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", err
}

// tab opens a new tab of the shared browser, closed when the test ends.
// JavaScript dialogs (the buttons' confirm) are accepted.
func tab(t *testing.T) context.Context {
	t.Helper()
	b := &browserState
	b.once.Do(func() {
		path, err := chromiumPath()
		if err != nil {
			b.err = err
			return
		}
		if b.profile, b.err = os.MkdirTemp("", "stepflow-console-chromium-"); b.err != nil {
			return
		}
		opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
			chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(b.profile),
			chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
			chromedp.WindowSize(1360, 900))
		actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		bctx, cancelBrowser := chromedp.NewContext(actx)
		b.ctx, b.cancel = bctx, func() { cancelBrowser(); cancelAlloc() }
		b.err = chromedp.Do(bctx) // starts the browser, for as long as bctx lives
	})
	if b.err != nil {
		t.Fatalf("no headless Chromium: %v. The browser tests need Debian's chromium package; .ci/run installs it (apt-get install -y chromium)", b.err)
	}
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // opens the tab, for as long as ctx lives
		t.Fatalf("open a tab: %v", err)
	}
	dialogs := chromedp.Events(ctx, cdppage.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			_, _ = chromedp.Call(ctx, cdppage.HandleJavaScriptDialog, cdppage.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancelT)
	return ctx
}

func closeBrowser() {
	b := &browserState
	if b.cancel != nil {
		b.cancel()
	}
	if b.profile != "" {
		_ = os.RemoveAll(b.profile)
	}
}

// run runs the actions in the tab, failing the test (with the page as it
// is then) at the first that fails.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v\npage now:\n%.3000s", what, err, bodyHTML(ctx))
	}
}

// value runs one action that gives a value.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v\npage now:\n%.3000s", what, err, bodyHTML(ctx))
	}
	return v
}

func bodyHTML(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("body")))
	return html
}

func css(sel string) chromedp.CSS { return chromedp.CSS(sel) }

// screenshot captures the whole page as a PNG, checks that it is one, and
// writes it under -screenshots when that is set.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	buf := value(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	img, err := png.Decode(bytes.NewReader(buf))
	if err != nil || img.Bounds().Dx() < 800 || img.Bounds().Dy() < 300 {
		t.Fatalf("screenshot %s: %v, %v", name, err, img.Bounds())
	}
	dir := t.TempDir()
	if *screenshotDir != "" {
		dir = *screenshotDir
	}
	if err := os.WriteFile(filepath.Join(dir, name), buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBrowserRunsList(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{})
	order, input := orderBlueprint(t)
	tb.wait(tb.start(greet, map[string]any{"name": "Ada"}, "greet-ada"))
	tb.wait(tb.start(order, input, "order-A-1001"))
	tb.wait(tb.start(`{"id": "doomed", "nodes": [{"id": "boom", "uses": "fail", "params": {"message": "the card was declined"}}]}`, nil, "doomed-1"))
	tb.start(nap, nil, "napping")
	ctx := tab(t)
	run(t, ctx, "the runs list",
		chromedp.Navigate(tb.url+"/"),
		chromedp.WaitVisible(css(`tr[data-run="greet-ada"]`)),
		chromedp.WaitVisible(css(`tr[data-run="napping"] .status.st-running`)),
		chromedp.WaitVisible(css(`tr[data-run="doomed-1"] .status.st-failed`)),
	)
	status := value(t, ctx, "greet-ada's status", chromedp.Text(css(`tr[data-run="greet-ada"] .status`)))
	steps := value(t, ctx, "order-A-1001's steps", chromedp.Text(css(`tr[data-run="order-A-1001"] td.steps`)))
	if status != "completed" || strings.TrimSpace(steps) != "7/7" {
		t.Errorf("greet-ada shows %q, order-A-1001's steps %q; want completed and 7/7", status, steps)
	}
	screenshot(t, ctx, "runs.png")
	// Filtering is a plain form.
	run(t, ctx, "filter by status",
		chromedp.SetValue(css(`select[name=status]`), "failed"),
		chromedp.Click(css(`.filters button[type=submit]`)),
		chromedp.WaitVisible(css(`tr[data-run="doomed-1"]`)),
		chromedp.WaitNotPresent(css(`tr[data-run="greet-ada"]`)),
	)
}

func orderBlueprint(t *testing.T) (string, map[string]any) {
	t.Helper()
	input := map[string]any{}
	mustJSON(t, readFile(t, "../examples/order.input.json"), &input)
	return readFile(t, "../examples/order.json"), input
}

func TestBrowserRunPage(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{})
	order, input := orderBlueprint(t)
	id := tb.start(order, input, "order-A-1001")
	if res := tb.wait(id); res.Status != workflow.RunCompleted {
		t.Fatalf("%s: %s", id, res.Status)
	}
	ctx := tab(t)
	run(t, ctx, "the run page", chromedp.Navigate(tb.url+"/runs/"+id), chromedp.WaitVisible(css(`svg.graph`)))
	nodes := value(t, ctx, "the graph's nodes", chromedp.Evaluate[[]string](`[...document.querySelectorAll('svg.graph a.node')].map(n => n.dataset.node + ':' + n.dataset.state)`))
	attempts := value(t, ctx, "payment-gateway's attempts", chromedp.Text(css(`tr[data-step="payment-gateway"] td.attempts`)))
	// Its input and output show on a click.
	run(t, ctx, "open payment-gateway's input and output",
		chromedp.Click(css(`tr[data-step="payment-gateway"] td.io summary`)),
		chromedp.WaitVisible(css(`tr[data-step="payment-gateway"] td.io pre`)))
	inputText := value(t, ctx, "payment-gateway's input", chromedp.Text(css(`tr[data-step="payment-gateway"] td.io pre`)))
	want := "validate:succeeded review:succeeded reserve:succeeded payment-gateway:succeeded charge:succeeded ship:succeeded notify:succeeded"
	if strings.Join(nodes, " ") != want {
		t.Errorf("the graph's nodes: %v, want %s", nodes, want)
	}
	if !strings.HasPrefix(strings.TrimSpace(attempts), "2") {
		t.Errorf("payment-gateway's attempts %q, want its retry: 2", attempts)
	}
	if !strings.Contains(inputText, `"orderId": "A-1001"`) {
		t.Errorf("payment-gateway's input %q, want the order", inputText)
	}
	// Clicking a node of the graph goes to its row.
	run(t, ctx, "a node's link", chromedp.Click(css(`svg.graph a.node[data-node="ship"]`)))
	hash := value(t, ctx, "the location's hash", chromedp.Evaluate[string](`location.hash`))
	if !strings.HasPrefix(hash, "#step-") {
		t.Errorf("after clicking ship the location's hash is %q, want its row", hash)
	}
	run(t, ctx, "back to the top", chromedp.Navigate(tb.url+"/runs/"+id), chromedp.WaitVisible(css(`svg.graph`)))
	screenshot(t, ctx, "run.png")
}

// A run's page follows the run as it runs, and its cancel button stops it.
func TestBrowserLiveRunAndCancel(t *testing.T) {
	t.Parallel()
	// The function holds the jobs of gated-1 until the test opens the gate.
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open)
	var o setupOptions
	o.stack.Handler = func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("ce-subject") == "gated-1" {
				<-gate
			}
			next.ServeHTTP(w, r)
		})
	}
	o.stack.Bridge = func(c *bridge.Config) { c.BatchSize = 1 }
	tb := setup(t, o)
	const gated = `{"id": "gated", "nodes": [{"id": "first", "uses": "noop"}, {"id": "after", "uses": "noop"}],
	  "edges": [{"source": "first", "target": "after"}]}`
	tb.start(gated, nil, "gated-1")
	tb.start(nap, nil, "napping")
	ctx := tab(t)
	// Opened while its first job is held; it shows the run completing
	// without a reload.
	run(t, ctx, "a running run",
		chromedp.Navigate(tb.url+"/runs/gated-1"),
		chromedp.WaitVisible(css(`.run-head .status.st-running`)),
		chromedp.WaitVisible(css(`svg.graph a.node[data-node="first"][data-state="ready"]`)),
		chromedp.WaitVisible(css(`svg.graph a.node[data-node="after"][data-state="pending"]`)),
	)
	open()
	run(t, ctx, "the run completing",
		chromedp.WaitVisible(css(`.run-head .status.st-completed`)),
		chromedp.WaitVisible(css(`svg.graph a.node[data-node="after"][data-state="succeeded"]`)),
		chromedp.WaitNotPresent(css(`button[data-post$="/cancel"]`)),
	)
	tb.sleeping("napping")
	run(t, ctx, "cancel",
		chromedp.Navigate(tb.url+"/runs/napping"),
		chromedp.WaitVisible(css(`svg.graph a.node[data-node="nap"][data-state="awaiting"]`)),
		chromedp.Click(css(`button[data-post="/api/v1/runs/napping/cancel"]`)),
		chromedp.WaitVisible(css(`.run-head .status.st-cancelled`)),
		chromedp.WaitVisible(css(`.flash`)),
	)
	if res, err := tb.client.Result(tb.ctx, "napping"); err != nil || res.Status != workflow.RunCancelled {
		t.Errorf("napping after the button: %v %v, want cancelled", res, err)
	}
}

// With STEPFLOW_API_TOKEN set, a write asks for the token once per tab
// and sends it as a bearer token.
func TestBrowserAsksForTheToken(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{api: func(o *api.Options) { o.Token = testToken }})
	tb.start(nap, nil, "nap-1")
	tb.start(nap, nil, "nap-2")
	tb.sleeping("nap-1")
	tb.sleeping("nap-2")
	ctx := tab(t)
	run(t, ctx, "cancel with the token",
		chromedp.Navigate(tb.url+"/runs/nap-1"),
		chromedp.Click(css(`button[data-post="/api/v1/runs/nap-1/cancel"]`)),
		chromedp.WaitVisible(css(`#token-dialog[open] input[name=token]`)),
		chromedp.SendKeys(css(`#token-dialog input[name=token]`), testToken),
		chromedp.Click(css(`#token-dialog button[value=ok]`)),
		chromedp.WaitVisible(css(`.run-head .status.st-cancelled`)))
	stored := value(t, ctx, "the stored token", chromedp.Evaluate[string](`sessionStorage.getItem("stepflow.apiToken")`))
	run(t, ctx, "cancel again",
		// The second write of the tab does not ask again.
		chromedp.Navigate(tb.url+"/runs/nap-2"),
		chromedp.Click(css(`button[data-post="/api/v1/runs/nap-2/cancel"]`)),
		chromedp.WaitVisible(css(`.run-head .status.st-cancelled`)),
	)
	if stored != testToken {
		t.Errorf("the tab keeps %q, want the token", stored)
	}
	if value(t, ctx, "the dialog", chromedp.Evaluate[bool](`document.getElementById("token-dialog").open`)) {
		t.Error("the token dialog opened for the second write")
	}
}

func TestBrowserReplaysADeadLetter(t *testing.T) {
	t.Parallel()
	r := &refuser{}
	tb := setup(t, setupOptions{stack: stackRefusing(r)})
	tb.startRefused(r, "refused-1")
	tb.startRefused(r, "refused-2")
	ctx := tab(t)
	run(t, ctx, "the dead letters",
		chromedp.Navigate(tb.url+"/dead-letters"),
		chromedp.WaitVisible(css(`tr[data-dead-letter] button[data-post]`)),
	)
	screenshot(t, ctx, "dead-letters.png")
	run(t, ctx, "replay one run's",
		chromedp.Click(chromedp.Search(`//tr[td/a[text()="refused-1"]]//button`)),
		chromedp.WaitVisible(css(`.flash`)),
		chromedp.WaitNotPresent(chromedp.Search(`//tr[td/a[text()="refused-1"]]`)),
		chromedp.WaitVisible(chromedp.Search(`//tr[td/a[text()="refused-2"]]`)),
	)
	if flash := value(t, ctx, "the message", chromedp.Text(css(`.flash`))); flash != "Replayed 1 job of 1 run." {
		t.Errorf("after the replay the page says %q", flash)
	}
	if res := tb.wait("refused-1"); res.Status != workflow.RunCompleted || res.Output != "HELLO, REFUSED-1" {
		t.Errorf("refused-1 after its replay: %s %v, want completed", res.Status, res.Output)
	}
}

// The resume form sends {"node", "output", "action"} to the API (the test
// watches the request pass), and the page follows the run resumed to its
// end.
func TestBrowserResumesAnAwaitingRun(t *testing.T) {
	t.Parallel()
	sent := make(chan map[string]any, 1)
	tb := setup(t, setupOptions{wrap: func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/resume") {
				b, _ := io.ReadAll(r.Body)
				var body map[string]any
				_ = json.Unmarshal(b, &body)
				sent <- body
				r.Body = io.NopCloser(bytes.NewReader(b))
			}
			next.ServeHTTP(w, r)
		})
	}})
	tb.startAwaiting("approval-1")
	ctx := tab(t)
	run(t, ctx, "the awaiting run",
		chromedp.Navigate(tb.url+"/runs/approval-1"),
		chromedp.WaitVisible(css(`form.resume-form textarea[name=output]`)),
		chromedp.SendKeys(css(`form.resume-form textarea[name=output]`), `{"reviewer": "grace"}`),
		chromedp.SetValue(css(`form.resume-form select[name=action]`), "approve"),
	)
	screenshot(t, ctx, "awaiting.png")
	run(t, ctx, "resume",
		chromedp.Click(css(`form.resume-form button[type=submit]`)),
		chromedp.WaitVisible(css(`.run-head .status.st-completed`)),
		chromedp.WaitVisible(css(`svg.graph a.node[data-node="publish"][data-state="succeeded"]`)),
		chromedp.WaitVisible(css(`svg.graph a.node[data-node="return-to-author"][data-state="skipped"]`)),
		chromedp.WaitNotPresent(css(`form.resume-form`)),
	)
	if flash := value(t, ctx, "the message", chromedp.Text(css(`.flash`))); flash != "Resumed." {
		t.Errorf("after the resume the page says %q", flash)
	}
	body := <-sent
	if out, _ := body["output"].(map[string]any); body["node"] != "approve" || body["action"] != "approve" || out["reviewer"] != "grace" {
		t.Errorf("the form sent %v, want node approve, action approve and the output typed", body)
	}
	res := tb.wait("approval-1")
	if out, _ := res.Output.(map[string]any); res.Status != workflow.RunCompleted || out["approvedBy"] != "grace" {
		t.Errorf("approval-1 after the resume: %s %v, want completed, approved by grace", res.Status, res.Output)
	}
}
