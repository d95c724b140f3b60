package nodes

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/stepflow/stepflow/workflow"
)

// Order pipeline defaults.
const (
	DefaultBigOrder  = 100.0
	DefaultWarehouse = "central"
	DefaultCurrency  = "EUR"
	DefaultCarrier   = "DHL"
	DefaultChannel   = "email"
)

// Actions of validate-order.
const (
	ActionBig   = "big"
	ActionSmall = "small"
)

// Id prefixes. Ids are the prefix plus the run id: a retried or
// redelivered step computes the same id, so the id doubles as the
// idempotency key a real payment or shipping API would be given.
const (
	OrderIDPrefix    = "ord-"
	ChargeIDPrefix   = "ch-"
	TrackingIDPrefix = "trk-"
)

// OrderItem is one line of an order.
type OrderItem struct {
	SKU   string  `json:"sku"`
	Qty   int     `json:"qty"`
	Price float64 `json:"price"`
}

// Order is the normalised order validate-order outputs.
type Order struct {
	OrderID  string      `json:"orderId"`
	Total    float64     `json:"total"`
	Items    []OrderItem `json:"items"`
	Customer string      `json:"customer"`
}

// InvalidOrderError lists what is wrong with an order, one entry per field
// ("items[1].qty: must be a whole number >= 1, got 0").
type InvalidOrderError struct{ Problems []string }

func (e *InvalidOrderError) Error() string {
	return "validate-order: invalid order: " + strings.Join(e.Problems, "; ")
}

// ParseOrder checks an order document and returns it normalised: orderId
// defaults to OrderIDPrefix + runID, total is the sum of qty × price
// rounded to cents.
func ParseOrder(input any, runID string) (Order, error) {
	in, ok := object(workflow.Normalize(input))
	if !ok {
		return Order{}, &InvalidOrderError{Problems: []string{"input: must be an object with items and customer, got " + show(input)}}
	}
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }

	o := Order{OrderID: OrderIDPrefix + runID}
	switch id := in["orderId"].(type) {
	case nil:
	case string:
		if id == "" {
			bad("orderId: must not be empty")
		}
		o.OrderID = id
	default:
		bad("orderId: must be a string, got %s", show(id))
	}

	switch c := in["customer"].(type) {
	case string:
		if strings.TrimSpace(c) == "" {
			bad("customer: must not be empty")
		}
		o.Customer = strings.TrimSpace(c)
	case nil:
		bad("customer: required, a string")
	default:
		bad("customer: must be a string, got %s", show(c))
	}

	items, ok := in["items"].([]any)
	switch {
	case in["items"] == nil:
		bad("items: required, an array of {sku, qty, price}")
	case !ok:
		bad("items: must be an array, got %s", show(in["items"]))
	case len(items) == 0:
		bad("items: must not be empty")
	}
	cents := 0.0
	for i, raw := range items {
		path := fmt.Sprintf("items[%d]", i)
		item, ok := object(raw)
		if !ok {
			bad("%s: must be an object, got %s", path, show(raw))
			continue
		}
		var it OrderItem
		if sku, ok := item["sku"].(string); ok && strings.TrimSpace(sku) != "" {
			it.SKU = strings.TrimSpace(sku)
		} else {
			bad("%s.sku: required, a non-empty string, got %s", path, show(item["sku"]))
		}
		if q, ok := wholeNumber(item["qty"]); ok && q >= 1 {
			it.Qty = q
		} else {
			bad("%s.qty: must be a whole number >= 1, got %s", path, show(item["qty"]))
		}
		if p, ok := number(item["price"]); ok && p >= 0 {
			it.Price = p
		} else {
			bad("%s.price: must be a number >= 0, got %s", path, show(item["price"]))
		}
		o.Items = append(o.Items, it)
		cents += math.Round(it.Price*100) * float64(it.Qty)
	}
	if len(probs) > 0 {
		return Order{}, &InvalidOrderError{Problems: probs}
	}
	o.Total = cents / 100
	return o, nil
}

// validateOrder checks and normalises an order; its action is "big" when
// the total exceeds params.bigOrder (default 100), else "small".
func validateOrder(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	big, err := optionalNumber(in.Params, "bigOrder", DefaultBigOrder, 0)
	if err != nil {
		return workflow.NodeResult{}, fmt.Errorf("validate-order: params.%w", err)
	}
	o, err := ParseOrder(in.Input, in.RunID)
	if err != nil {
		return workflow.NodeResult{}, err
	}
	action := ActionSmall
	if o.Total > big {
		action = ActionBig
	}
	return workflow.NodeResult{Output: workflow.Normalize(o), Action: action}, nil
}

func checkValidateOrderParams(p map[string]any) error {
	_, err := optionalNumber(p, "bigOrder", DefaultBigOrder, 0)
	return err
}

// reserveStock reserves the skus of an order (its input) in
// params.warehouse (default "central"): {reserved: [sku…], warehouse}.
func reserveStock(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	wh, err := optionalString(in.Params, "warehouse", DefaultWarehouse)
	if err != nil {
		return workflow.NodeResult{}, fmt.Errorf("reserve-stock: params.%w", err)
	}
	order, _ := object(workflow.Normalize(in.Input))
	items, ok := order["items"].([]any)
	if !ok || len(items) == 0 {
		return workflow.NodeResult{}, errors.New("reserve-stock: input.items: required, a non-empty array (the output of validate-order)")
	}
	reserved := []any{}
	seen := map[string]bool{}
	for i, raw := range items {
		item, _ := object(raw)
		sku, ok := item["sku"].(string)
		if !ok || sku == "" {
			return workflow.NodeResult{}, fmt.Errorf("reserve-stock: input.items[%d].sku: required, a non-empty string", i)
		}
		if !seen[sku] {
			seen[sku] = true
			reserved = append(reserved, sku)
		}
	}
	return workflow.NodeResult{Output: map[string]any{"reserved": reserved, "warehouse": wh}}, nil
}

func checkReserveStockParams(p map[string]any) error {
	_, err := optionalString(p, "warehouse", DefaultWarehouse)
	return err
}

// chargePayment charges an order's total (its input):
// {chargeId, amount, currency}; currency is params.currency (default EUR).
func chargePayment(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	cur, err := currency(in.Params)
	if err != nil {
		return workflow.NodeResult{}, fmt.Errorf("charge-payment: params.%w", err)
	}
	order, _ := object(workflow.Normalize(in.Input))
	amount, ok := number(order["total"])
	if !ok || amount < 0 {
		return workflow.NodeResult{}, fmt.Errorf("charge-payment: input.total: required, a number >= 0 (the output of validate-order), got %s", show(order["total"]))
	}
	return workflow.NodeResult{Output: map[string]any{
		"chargeId": ChargeIDPrefix + in.RunID,
		"amount":   amount,
		"currency": cur,
	}}, nil
}

func currency(p map[string]any) (string, error) {
	c, err := optionalString(p, "currency", DefaultCurrency)
	if err != nil {
		return "", err
	}
	if len(c) != 3 || strings.ToUpper(c) != c || strings.IndexFunc(c, func(r rune) bool { return r < 'A' || r > 'Z' }) >= 0 {
		return "", fmt.Errorf("currency: must be an ISO 4217 code such as %q, got %q", DefaultCurrency, c)
	}
	return c, nil
}

func checkChargePaymentParams(p map[string]any) error {
	_, err := currency(p)
	return err
}

// shipOrder ships a reserved and paid order: {trackingId, carrier};
// carrier is params.carrier (default DHL). Its input (the join of the
// reservation and the charge) does not change the result.
func shipOrder(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	carrier, err := optionalString(in.Params, "carrier", DefaultCarrier)
	if err != nil {
		return workflow.NodeResult{}, fmt.Errorf("ship-order: params.%w", err)
	}
	return workflow.NodeResult{Output: map[string]any{
		"trackingId": TrackingIDPrefix + in.RunID,
		"carrier":    carrier,
	}}, nil
}

func checkShipOrderParams(p map[string]any) error {
	_, err := optionalString(p, "carrier", DefaultCarrier)
	return err
}

// Channels notify-customer knows.
var channels = []string{"email", "sms", "push"}

// notifyCustomer tells input.customer: {notified: customer, channel};
// channel is params.channel (email, the default, sms or push).
func notifyCustomer(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	ch, err := oneOf(in.Params, "channel", DefaultChannel, channels...)
	if err != nil {
		return workflow.NodeResult{}, fmt.Errorf("notify-customer: params.%w", err)
	}
	m, _ := object(workflow.Normalize(in.Input))
	customer, ok := m["customer"].(string)
	if !ok || customer == "" {
		return workflow.NodeResult{}, fmt.Errorf("notify-customer: input.customer: required, a non-empty string, got %s", show(m["customer"]))
	}
	return workflow.NodeResult{Output: map[string]any{"notified": customer, "channel": ch}}, nil
}

func checkNotifyCustomerParams(p map[string]any) error {
	_, err := oneOf(p, "channel", DefaultChannel, channels...)
	return err
}

// manualReview stands for a person approving a big order: {reviewed: true}.
func manualReview(_ context.Context, _ workflow.NodeInput) (workflow.NodeResult, error) {
	return workflow.NodeResult{Output: map[string]any{"reviewed": true}}, nil
}
