package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/workflow"
)

// call runs the node registered as uses with the given input and params.
func call(t *testing.T, ctx context.Context, uses string, in workflow.NodeInput) (workflow.NodeResult, error) {
	t.Helper()
	fn, ok := Registry().Lookup(uses)
	if !ok {
		t.Fatalf("%s is not registered", uses)
	}
	if in.RunID == "" {
		in.RunID = "run-1"
	}
	if in.NodeID == "" {
		in.NodeID = uses
	}
	if in.Attempt == 0 {
		in.Attempt = 1
	}
	if in.Context == nil {
		in.Context = workflow.NewMapContext(nil)
	}
	return workflow.Invoke(ctx, fn, in)
}

// nodeCase is one call of a node and what it must give: the exact result,
// or an error containing wantErr.
type nodeCase struct {
	name    string
	uses    string
	in      workflow.NodeInput
	want    workflow.NodeResult
	wantErr string
}

func runNodeCases(t *testing.T, cases []nodeCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := call(t, context.Background(), tt.uses, tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q (result %#v)", err, tt.wantErr, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("result = %#v\nwant     %#v", got, tt.want)
			}
		})
	}
}

// decoded returns v as JSON would decode it, the form node outputs take.
func decoded(v any) any { return workflow.Normalize(v) }

func TestFlaky(t *testing.T) {
	t.Parallel()
	input := map[string]any{"x": 1.0}
	two := map[string]any{"failures": 2.0}
	runNodeCases(t, []nodeCase{
		{name: "attempt 1 of 2 fails", uses: Flaky, in: workflow.NodeInput{Attempt: 1, Input: input, Params: two}, wantErr: "flaky: attempt 1 of 2 planned failures"},
		{name: "attempt 2 of 2 fails", uses: Flaky, in: workflow.NodeInput{Attempt: 2, Input: input, Params: two}, wantErr: "flaky: attempt 2 of 2 planned failures"},
		{name: "attempt 3 passes input through", uses: Flaky, in: workflow.NodeInput{Attempt: 3, Input: input, Params: two}, want: workflow.NodeResult{Output: input}},
		{name: "no planned failures", uses: Flaky, in: workflow.NodeInput{Attempt: 1, Input: "in", Params: map[string]any{"failures": 0}}, want: workflow.NodeResult{Output: "in"}},
		{name: "json.Number param", uses: Flaky, in: workflow.NodeInput{Attempt: 2, Input: "in", Params: map[string]any{"failures": jsonNumber("1")}}, want: workflow.NodeResult{Output: "in"}},
		{name: "missing failures", uses: Flaky, in: workflow.NodeInput{Input: "in"}, wantErr: "flaky: params.failures: required"},
		{name: "fractional failures", uses: Flaky, in: workflow.NodeInput{Params: map[string]any{"failures": 1.5}}, wantErr: "failures: must be a whole number between 0 and 1000, got 1.5"},
	})
}

func TestSlow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		ms      int
		ctx     func(t *testing.T) context.Context
		wantErr error
	}{
		{name: "zero wait passes through", ms: 0, ctx: func(*testing.T) context.Context { return context.Background() }},
		{name: "short wait passes through", ms: 1, ctx: func(*testing.T) context.Context { return context.Background() }},
		{name: "deadline interrupts a long wait", ms: MaxSlowMillis, wantErr: context.DeadlineExceeded, ctx: func(t *testing.T) context.Context {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			t.Cleanup(cancel)
			return ctx
		}},
		{name: "cancelled before it starts", ms: 0, wantErr: context.Canceled, ctx: func(*testing.T) context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			got, err := call(t, tt.ctx(t), Slow, workflow.NodeInput{Input: "in", Params: map[string]any{"ms": float64(tt.ms)}})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "slow: cancelled") {
					t.Errorf("error %q does not say the wait was cancelled", err)
				}
				if elapsed := time.Since(start); elapsed > 10*time.Second {
					t.Errorf("took %s to notice the cancellation", elapsed)
				}
				return
			}
			if err != nil || got.Output != "in" {
				t.Fatalf("got %#v, %v; want the input passed through", got, err)
			}
		})
	}
}

func TestFail(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		params map[string]any
		want   string
	}{
		{name: "default message", want: DefaultFailMessage},
		{name: "own message", params: map[string]any{"message": "card declined"}, want: "card declined"},
		{name: "bad message param", params: map[string]any{"message": 3.0}, want: "fail: params.message: must be a non-empty string, got 3"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for attempt := 1; attempt <= 3; attempt++ {
				_, err := call(t, context.Background(), Fail, workflow.NodeInput{Attempt: attempt, Params: tt.params})
				if err == nil || err.Error() != tt.want {
					t.Fatalf("attempt %d: error = %v, want %q", attempt, err, tt.want)
				}
			}
		})
	}
}

func TestSetContext(t *testing.T) {
	t.Parallel()
	mc := workflow.NewMapContext(map[string]any{"keep": "me"})
	values := map[string]any{"region": "eu", "limits": map[string]any{"max": 3.0}}
	got, err := call(t, context.Background(), SetContext, workflow.NodeInput{Input: "in", Params: map[string]any{"values": values}, Context: mc})
	if err != nil {
		t.Fatal(err)
	}
	if got.Output != "in" {
		t.Errorf("output = %#v, want the input", got.Output)
	}
	set, deleted := mc.Changes()
	if !reflect.DeepEqual(set, values) || len(deleted) != 0 {
		t.Errorf("changes = %v, deleted %v; want %v", set, deleted, values)
	}
	if v, _ := mc.Get("keep"); v != "me" {
		t.Errorf("untouched key changed to %v", v)
	}

	fn, _ := Registry().Lookup(SetContext)
	if _, err := fn(context.Background(), workflow.NodeInput{Params: map[string]any{"values": values}}); err == nil {
		t.Error("no error without a run context")
	}
	runNodeCases(t, []nodeCase{
		{name: "missing values", uses: SetContext, wantErr: "set-context: params.values: required"},
		{name: "values not an object", uses: SetContext, in: workflow.NodeInput{Params: map[string]any{"values": []any{"a"}}}, wantErr: "values: must be an object, got an array"},
		{name: "runtime key", uses: SetContext, in: workflow.NodeInput{Params: map[string]any{"values": map[string]any{"_outputs.charge": 1.0}}}, wantErr: `values._outputs.charge: keys starting with "_outputs." are the runtime's`},
	})
}

func order(items ...map[string]any) map[string]any {
	list := make([]any, len(items))
	for i, it := range items {
		list[i] = it
	}
	return map[string]any{"customer": "ada@example.com", "items": list}
}

func item(sku string, qty, price any) map[string]any {
	return map[string]any{"sku": sku, "qty": qty, "price": price}
}

func TestValidateOrder(t *testing.T) {
	t.Parallel()
	withID := order(item("KB-101", 1.0, 89.9), item("MS-202", 2.0, 24.5))
	withID["orderId"] = "A-1001"
	runNodeCases(t, []nodeCase{
		{
			name: "big order keeps its id",
			uses: ValidateOrder,
			in:   workflow.NodeInput{Input: withID},
			want: workflow.NodeResult{Action: ActionBig, Output: decoded(Order{
				OrderID: "A-1001", Total: 138.9, Customer: "ada@example.com",
				Items: []OrderItem{{SKU: "KB-101", Qty: 1, Price: 89.9}, {SKU: "MS-202", Qty: 2, Price: 24.5}},
			})},
		},
		{
			name: "small order gets an id from the run",
			uses: ValidateOrder,
			in:   workflow.NodeInput{RunID: "r-7", Input: order(item(" PEN-1 ", 3, 0.1))},
			want: workflow.NodeResult{Action: ActionSmall, Output: decoded(Order{
				OrderID: "ord-r-7", Total: 0.3, Customer: "ada@example.com",
				Items: []OrderItem{{SKU: "PEN-1", Qty: 3, Price: 0.1}},
			})},
		},
		{
			name: "exactly the threshold is small",
			uses: ValidateOrder,
			in:   workflow.NodeInput{Input: order(item("A", 4.0, 25.0))},
			want: workflow.NodeResult{Action: ActionSmall, Output: decoded(Order{
				OrderID: "ord-run-1", Total: 100, Customer: "ada@example.com", Items: []OrderItem{{SKU: "A", Qty: 4, Price: 25}},
			})},
		},
		{
			name: "params.bigOrder moves the threshold",
			uses: ValidateOrder,
			in:   workflow.NodeInput{Input: order(item("A", 1.0, 20.0)), Params: map[string]any{"bigOrder": 10.0}},
			want: workflow.NodeResult{Action: ActionBig, Output: decoded(Order{
				OrderID: "ord-run-1", Total: 20, Customer: "ada@example.com", Items: []OrderItem{{SKU: "A", Qty: 1, Price: 20}},
			})},
		},
		{name: "not an object", uses: ValidateOrder, in: workflow.NodeInput{Input: "order"}, wantErr: `input: must be an object with items and customer, got "order"`},
		{name: "missing customer", uses: ValidateOrder, in: workflow.NodeInput{Input: map[string]any{"items": []any{item("A", 1.0, 1.0)}}}, wantErr: "customer: required"},
		{name: "blank customer", uses: ValidateOrder, in: workflow.NodeInput{Input: map[string]any{"customer": "  ", "items": []any{item("A", 1.0, 1.0)}}}, wantErr: "customer: must not be empty"},
		{name: "missing items", uses: ValidateOrder, in: workflow.NodeInput{Input: map[string]any{"customer": "c"}}, wantErr: "items: required"},
		{name: "empty items", uses: ValidateOrder, in: workflow.NodeInput{Input: map[string]any{"customer": "c", "items": []any{}}}, wantErr: "items: must not be empty"},
		{name: "zero qty", uses: ValidateOrder, in: workflow.NodeInput{Input: order(item("A", 1.0, 1.0), item("B", 0.0, 1.0))}, wantErr: "items[1].qty: must be a whole number >= 1, got 0"},
		{name: "fractional qty", uses: ValidateOrder, in: workflow.NodeInput{Input: order(item("A", 1.5, 1.0))}, wantErr: "items[0].qty: must be a whole number >= 1, got 1.5"},
		{name: "negative price", uses: ValidateOrder, in: workflow.NodeInput{Input: order(item("A", 1.0, -2.0))}, wantErr: "items[0].price: must be a number >= 0, got -2"},
		{name: "price as text", uses: ValidateOrder, in: workflow.NodeInput{Input: order(item("A", 1.0, "9.99"))}, wantErr: `items[0].price: must be a number >= 0, got "9.99"`},
		{name: "missing sku", uses: ValidateOrder, in: workflow.NodeInput{Input: order(map[string]any{"qty": 1.0, "price": 1.0})}, wantErr: "items[0].sku: required"},
		{name: "item not an object", uses: ValidateOrder, in: workflow.NodeInput{Input: map[string]any{"customer": "c", "items": []any{"A"}}}, wantErr: `items[0]: must be an object, got "A"`},
		{name: "orderId not a string", uses: ValidateOrder, in: workflow.NodeInput{Input: map[string]any{"orderId": 7.0, "customer": "c", "items": []any{item("A", 1.0, 1.0)}}}, wantErr: "orderId: must be a string, got 7"},
		{name: "bad bigOrder", uses: ValidateOrder, in: workflow.NodeInput{Input: withID, Params: map[string]any{"bigOrder": -1.0}}, wantErr: "validate-order: params.bigOrder: must be a number >= 0, got -1"},
	})

	t.Run("every problem is named", func(t *testing.T) {
		t.Parallel()
		_, err := ParseOrder(map[string]any{"items": []any{item("", 0.0, nil)}}, "r")
		var inv *InvalidOrderError
		if !errors.As(err, &inv) {
			t.Fatalf("error %v is not an *InvalidOrderError", err)
		}
		want := []string{"customer: required, a string", `items[0].sku: required, a non-empty string, got ""`, "items[0].qty: must be a whole number >= 1, got 0", "items[0].price: must be a number >= 0, got null"}
		if !reflect.DeepEqual(inv.Problems, want) {
			t.Errorf("problems = %q\nwant       %q", inv.Problems, want)
		}
	})
}

func TestOrderSteps(t *testing.T) {
	t.Parallel()
	normalised := decoded(Order{OrderID: "A-1", Total: 138.9, Customer: "ada@example.com", Items: []OrderItem{{SKU: "KB-101", Qty: 1, Price: 89.9}, {SKU: "MS-202", Qty: 2, Price: 24.5}, {SKU: "KB-101", Qty: 1, Price: 89.9}}})
	runNodeCases(t, []nodeCase{
		{name: "reserve default warehouse, skus once", uses: ReserveStock, in: workflow.NodeInput{Input: normalised}, want: workflow.NodeResult{Output: map[string]any{"reserved": []any{"KB-101", "MS-202"}, "warehouse": "central"}}},
		{name: "reserve named warehouse", uses: ReserveStock, in: workflow.NodeInput{Input: normalised, Params: map[string]any{"warehouse": "north"}}, want: workflow.NodeResult{Output: map[string]any{"reserved": []any{"KB-101", "MS-202"}, "warehouse": "north"}}},
		{name: "reserve without items", uses: ReserveStock, in: workflow.NodeInput{Input: map[string]any{}}, wantErr: "reserve-stock: input.items: required"},
		{name: "reserve item without sku", uses: ReserveStock, in: workflow.NodeInput{Input: map[string]any{"items": []any{map[string]any{}}}}, wantErr: "reserve-stock: input.items[0].sku: required"},
		{name: "charge default currency", uses: ChargePayment, in: workflow.NodeInput{RunID: "r-9", Input: normalised}, want: workflow.NodeResult{Output: map[string]any{"chargeId": "ch-r-9", "amount": 138.9, "currency": "EUR"}}},
		{name: "charge in USD", uses: ChargePayment, in: workflow.NodeInput{RunID: "r-9", Attempt: 3, Input: normalised, Params: map[string]any{"currency": "USD"}}, want: workflow.NodeResult{Output: map[string]any{"chargeId": "ch-r-9", "amount": 138.9, "currency": "USD"}}},
		{name: "charge without total", uses: ChargePayment, in: workflow.NodeInput{Input: map[string]any{"items": []any{}}}, wantErr: "charge-payment: input.total: required"},
		{name: "charge bad currency", uses: ChargePayment, in: workflow.NodeInput{Input: normalised, Params: map[string]any{"currency": "euro"}}, wantErr: `currency: must be an ISO 4217 code such as "EUR", got "euro"`},
		{name: "ship", uses: ShipOrder, in: workflow.NodeInput{RunID: "r-9", Input: map[string]any{"reserve": nil, "charge": nil}}, want: workflow.NodeResult{Output: map[string]any{"trackingId": "trk-r-9", "carrier": "DHL"}}},
		{name: "ship with carrier", uses: ShipOrder, in: workflow.NodeInput{RunID: "r-9", Params: map[string]any{"carrier": "UPS"}}, want: workflow.NodeResult{Output: map[string]any{"trackingId": "trk-r-9", "carrier": "UPS"}}},
		{name: "notify by email", uses: NotifyCustomer, in: workflow.NodeInput{Input: map[string]any{"customer": "ada@example.com", "trackingId": "trk-1"}}, want: workflow.NodeResult{Output: map[string]any{"notified": "ada@example.com", "channel": "email"}}},
		{name: "notify by sms", uses: NotifyCustomer, in: workflow.NodeInput{Input: map[string]any{"customer": "ada"}, Params: map[string]any{"channel": "sms"}}, want: workflow.NodeResult{Output: map[string]any{"notified": "ada", "channel": "sms"}}},
		{name: "notify unknown channel", uses: NotifyCustomer, in: workflow.NodeInput{Input: map[string]any{"customer": "ada"}, Params: map[string]any{"channel": "fax"}}, wantErr: `channel: must be one of ["email" "sms" "push"], got "fax"`},
		{name: "notify without customer", uses: NotifyCustomer, in: workflow.NodeInput{Input: map[string]any{"trackingId": "t"}}, wantErr: "notify-customer: input.customer: required"},
		{name: "manual review", uses: ManualReview, in: workflow.NodeInput{Input: normalised}, want: workflow.NodeResult{Output: map[string]any{"reviewed": true}}},
	})
}

func TestDocumentSteps(t *testing.T) {
	t.Parallel()
	const german = "Der Hund und die Katze schlafen auf dem Sofa."
	runNodeCases(t, []nodeCase{
		{name: "extract normalises whitespace", uses: ExtractText, in: workflow.NodeInput{Input: map[string]any{"document": "  Hello,\n\n  world\tagain "}}, want: workflow.NodeResult{Output: map[string]any{"text": "Hello, world again", "words": 3.0}}},
		{name: "extract empty document", uses: ExtractText, in: workflow.NodeInput{Input: map[string]any{"document": ""}}, want: workflow.NodeResult{Output: map[string]any{"text": "", "words": 0.0}}},
		{name: "extract without document", uses: ExtractText, in: workflow.NodeInput{Input: map[string]any{"text": "x"}}, wantErr: "extract-text: input.document: required, a string, got null"},
		{name: "detect en", uses: DetectLanguage, in: workflow.NodeInput{Input: map[string]any{"text": "The cat is on the mat."}}, want: workflow.NodeResult{Action: "en", Output: map[string]any{"text": "The cat is on the mat.", "language": "en"}}},
		{name: "detect de", uses: DetectLanguage, in: workflow.NodeInput{Input: map[string]any{"text": german}}, want: workflow.NodeResult{Action: "de", Output: map[string]any{"text": german, "language": "de"}}},
		{name: "detect fr", uses: DetectLanguage, in: workflow.NodeInput{Input: map[string]any{"text": "Le chat est sur la table et il dort."}}, want: workflow.NodeResult{Action: "fr", Output: map[string]any{"text": "Le chat est sur la table et il dort.", "language": "fr"}}},
		{name: "detect without stop words defaults to en", uses: DetectLanguage, in: workflow.NodeInput{Input: map[string]any{"text": "Zxq 42"}}, want: workflow.NodeResult{Action: "en", Output: map[string]any{"text": "Zxq 42", "language": "en"}}},
		{name: "detect without text", uses: DetectLanguage, in: workflow.NodeInput{Input: "plain"}, wantErr: "detect-language: input.text: required"},
		{name: "summarize cuts to 12 words", uses: Summarize, in: workflow.NodeInput{Input: map[string]any{"text": "one two three four five six seven eight nine ten eleven twelve thirteen", "language": "en"}}, want: workflow.NodeResult{Output: map[string]any{"summary": "one two three four five six seven eight nine ten eleven twelve …", "truncated": true, "language": "en"}}},
		{name: "summarize short text whole", uses: Summarize, in: workflow.NodeInput{Input: map[string]any{"text": "short text"}}, want: workflow.NodeResult{Output: map[string]any{"summary": "short text", "truncated": false}}},
		{name: "summarize params.words", uses: Summarize, in: workflow.NodeInput{Input: map[string]any{"text": "a b c"}, Params: map[string]any{"words": 2.0}}, want: workflow.NodeResult{Output: map[string]any{"summary": "a b …", "truncated": true}}},
		{name: "summarize words 0", uses: Summarize, in: workflow.NodeInput{Input: map[string]any{"text": "a"}, Params: map[string]any{"words": 0.0}}, wantErr: "summarize: params.words: must be a whole number between 1 and 10000, got 0"},
		{name: "translate de to en", uses: TranslateStub, in: workflow.NodeInput{Input: map[string]any{"text": german, "language": "de"}}, want: workflow.NodeResult{Output: map[string]any{"text": "[de→en] " + german, "language": "en", "translatedFrom": "de"}}},
		{name: "translate fr to de", uses: TranslateStub, in: workflow.NodeInput{Input: map[string]any{"text": "Bonjour", "language": "fr"}, Params: map[string]any{"target": "de"}}, want: workflow.NodeResult{Output: map[string]any{"text": "[fr→de] Bonjour", "language": "de", "translatedFrom": "fr"}}},
		{name: "translate same language", uses: TranslateStub, in: workflow.NodeInput{Input: map[string]any{"text": "Hi", "language": "en"}}, want: workflow.NodeResult{Output: map[string]any{"text": "Hi", "language": "en"}}},
		{name: "translate without language", uses: TranslateStub, in: workflow.NodeInput{Input: map[string]any{"text": "Hi"}}, wantErr: "translate-stub: input.language: required"},
	})
}

// TestParamChecks compiles one-node blueprints: wrong params are a
// compile error naming the node and the param.
func TestParamChecks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		uses    string
		params  map[string]any
		wantErr string // "" for valid
	}{
		{Flaky, map[string]any{"failures": 1.0}, ""},
		{Flaky, nil, "nodes[0].params: failures: required"},
		{Flaky, map[string]any{"failures": -1.0}, "failures: must be a whole number between 0 and 1000, got -1"},
		{Slow, map[string]any{"ms": 10.0}, ""},
		{Slow, map[string]any{"ms": "10"}, `ms: must be a whole number between 0 and 3600000, got "10"`},
		{Fail, nil, ""},
		{Fail, map[string]any{"message": ""}, "message: must be a non-empty string"},
		{SetContext, map[string]any{"values": map[string]any{"a": 1.0}}, ""},
		{SetContext, map[string]any{"values": map[string]any{"_inputs.x": 1.0}}, `keys starting with "_inputs." are the runtime's`},
		{ValidateOrder, map[string]any{"bigOrder": 250.0}, ""},
		{ValidateOrder, map[string]any{"bigOrder": "lots"}, "bigOrder: must be a number >= 0"},
		{ReserveStock, map[string]any{"warehouse": 1.0}, "warehouse: must be a non-empty string, got 1"},
		{ChargePayment, map[string]any{"currency": "GBP"}, ""},
		{ChargePayment, map[string]any{"currency": "gbp"}, "currency: must be an ISO 4217 code"},
		{ShipOrder, map[string]any{"carrier": ""}, "carrier: must be a non-empty string"},
		{NotifyCustomer, map[string]any{"channel": "push"}, ""},
		{NotifyCustomer, map[string]any{"channel": "pigeon"}, "channel: must be one of"},
		{ManualReview, nil, ""},
		{ExtractText, nil, ""},
		{DetectLanguage, nil, ""},
		{Summarize, map[string]any{"words": 12.5}, "words: must be a whole number between 1 and 10000, got 12.5"},
		{TranslateStub, map[string]any{"target": "it"}, `target: must be one of ["en" "de" "fr"], got "it"`},
	}
	for _, tt := range tests {
		name := tt.uses + "/valid"
		if tt.wantErr != "" {
			name = tt.uses + "/" + tt.wantErr
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bp := &workflow.Blueprint{ID: "p", Nodes: []workflow.Node{{ID: "n", Uses: tt.uses, Params: tt.params}}}
			_, err := workflow.Compile(bp, Registry())
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("valid params rejected: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	want := []string{
		workflow.NodeSubflowClass, workflow.NodeWebhookClass, workflow.NodeBatchGather, workflow.NodeBatchScatter,
		ChargePayment, Decrement, DetectLanguage, ExtractText, Fail, Flaky, workflow.NodeLoopController, ManualReview, workflow.NodeNoop,
		NotifyCustomer, PriceLine, ReserveStock, SetContext, ShipOrder, workflow.NodeSleep, Slow, workflow.NodeSubflow, Summarize,
		workflow.NodeTransform, TranslateStub, ValidateOrder, workflow.NodeWait, workflow.NodeWebhook,
	}
	if got := Registry().Names(); !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %q\nwant      %q", got, want)
	}
	r := workflow.NewRegistry()
	Register(r)
	if !reflect.DeepEqual(r.Names(), want) {
		t.Errorf("Register added %q, want %q", r.Names(), want)
	}
}

// exampleFiles returns the blueprint and input files of examples/.
func exampleFiles(t *testing.T) (blueprints, inputs []string) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("..", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if strings.HasSuffix(p, ".input.json") {
			inputs = append(inputs, p)
		} else {
			blueprints = append(blueprints, p)
		}
	}
	return blueprints, inputs
}

func loadExample(t *testing.T, name string) *workflow.Workflow {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	bp, err := workflow.Decode(data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	w, err := workflow.Compile(bp, Registry())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return w
}

func TestExampleBlueprintsCompile(t *testing.T) {
	t.Parallel()
	blueprints, inputs := exampleFiles(t)
	want := []string{"approval", "batch", "chain10", "documents", "fallback", "fanout", "loop", "order", "payment", "retry", "sleep", "subflow"}
	var got []string
	for _, p := range blueprints {
		got = append(got, strings.TrimSuffix(filepath.Base(p), ".json"))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("example blueprints %q, want %q", got, want)
	}
	for _, name := range got {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w := loadExample(t, name)
			if w.Blueprint.ID != name {
				t.Errorf("id %q, want the file name %q", w.Blueprint.ID, name)
			}
			if w.Blueprint.Version() == "" {
				t.Error("no metadata.version")
			}
		})
	}
	for _, p := range inputs {
		bp := strings.TrimSuffix(p, ".input.json") + ".json"
		if _, err := os.Stat(bp); err != nil {
			t.Errorf("%s has no blueprint %s", p, bp)
		}
	}
}

func jsonNumber(s string) any { return json.Number(s) }
