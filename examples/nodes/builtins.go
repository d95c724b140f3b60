package nodes

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/stepflow/stepflow/workflow"
)

// priceLine prices one order line, {sku, qty, price} → {sku, qty, amount}
// (amount = qty × price, rounded to cents): the worker of the batch
// example, run once per line.
func priceLine(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	line, ok := object(in.Input)
	if !ok {
		return workflow.NodeResult{}, fmt.Errorf("price-line: want an order line {sku, qty, price}, got %s", show(in.Input))
	}
	qty, ok := wholeNumber(line["qty"])
	if !ok || qty < 1 {
		return workflow.NodeResult{}, fmt.Errorf("price-line: qty must be a whole number >= 1, got %s", show(line["qty"]))
	}
	price, ok := number(line["price"])
	if !ok || price < 0 {
		return workflow.NodeResult{}, fmt.Errorf("price-line: price must be a number >= 0, got %s", show(line["price"]))
	}
	return workflow.NodeResult{Output: map[string]any{
		"sku":    line["sku"],
		"qty":    qty,
		"amount": math.Round(float64(qty)*price*100) / 100,
	}}, nil
}

// decrement subtracts 1 from the number at context key params.key and
// outputs the new value: the body of the loop example.
func decrement(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	key, _ := in.Params["key"].(string)
	v, _ := in.Context.Get(key)
	n, ok := number(v)
	if !ok {
		return workflow.NodeResult{}, fmt.Errorf("decrement: context key %q holds %s, not a number", key, show(v))
	}
	in.Context.Set(key, n-1)
	return workflow.NodeResult{Output: n - 1}, nil
}

func checkDecrementParams(p map[string]any) error {
	if key, _ := p["key"].(string); key == "" {
		return errors.New("key: required, the context key to count down")
	}
	return nil
}
