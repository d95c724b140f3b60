package nodes

import "github.com/stepflow/stepflow/workflow"

// The `uses` keys of the example nodes.
const (
	Flaky      = "flaky"
	Slow       = "slow"
	Fail       = "fail"
	SetContext = "set-context"

	ValidateOrder  = "validate-order"
	ReserveStock   = "reserve-stock"
	ChargePayment  = "charge-payment"
	ShipOrder      = "ship-order"
	NotifyCustomer = "notify-customer"
	ManualReview   = "manual-review"

	ExtractText    = "extract-text"
	DetectLanguage = "detect-language"
	Summarize      = "summarize"
	TranslateStub  = "translate-stub"

	PriceLine = "price-line"
	Decrement = "decrement"
)

// Registry returns a registry with the built-in nodes and every example
// node.
func Registry() *workflow.Registry {
	r := workflow.NewRegistry()
	Register(r)
	return r
}

// Register adds every example node to r. Nodes with params are registered
// with a check, so a blueprint with wrong params fails to compile rather
// than at run time.
func Register(r *workflow.Registry) {
	r.RegisterValidated(Flaky, flaky, checkFlakyParams)
	r.RegisterValidated(Slow, slow, checkSlowParams)
	r.RegisterValidated(Fail, fail, checkFailParams)
	r.RegisterValidated(SetContext, setContext, checkSetContextParams)

	r.RegisterValidated(ValidateOrder, validateOrder, checkValidateOrderParams)
	r.RegisterValidated(ReserveStock, reserveStock, checkReserveStockParams)
	r.RegisterValidated(ChargePayment, chargePayment, checkChargePaymentParams)
	r.RegisterValidated(ShipOrder, shipOrder, checkShipOrderParams)
	r.RegisterValidated(NotifyCustomer, notifyCustomer, checkNotifyCustomerParams)
	r.Register(ManualReview, manualReview)

	r.Register(ExtractText, extractText)
	r.Register(DetectLanguage, detectLanguage)
	r.RegisterValidated(Summarize, summarize, checkSummarizeParams)
	r.RegisterValidated(TranslateStub, translateStub, checkTranslateStubParams)

	r.Register(PriceLine, priceLine)
	r.RegisterValidated(Decrement, decrement, checkDecrementParams)
}
