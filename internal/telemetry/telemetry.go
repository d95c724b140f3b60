// Package telemetry sets up OpenTelemetry tracing for stepflow's processes
// and carries W3C trace context through AMQP headers and CloudEvents, so
// that one run is one trace: client → queue → bridge → function → next
// jobs.
//
// Exporting is configured by the standard OTEL_* environment variables and
// is off when none is set; propagation is always on, so a trace started
// upstream keeps flowing through a stepflow that exports nothing itself.
package telemetry

import (
	"context"
	"os"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// TracerName is the instrumentation scope of stepflow's spans.
const TracerName = "github.com/stepflow/stepflow"

// Tracer returns stepflow's tracer from the global provider.
func Tracer() trace.Tracer { return otel.Tracer(TracerName) }

func init() {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
}

// Enabled reports whether the environment asks for trace export: an OTLP
// endpoint is set or OTEL_TRACES_EXPORTER names otlp, and the SDK is not
// disabled.
func Enabled() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch strings.ToLower(os.Getenv("OTEL_TRACES_EXPORTER")) {
	case "none":
		return false
	case "otlp":
		return true
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup installs an OTLP/HTTP trace exporter configured by the OTEL_*
// variables when Enabled, naming the service (unless OTEL_SERVICE_NAME
// does). It returns a shutdown that flushes pending spans.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	if !Enabled() {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		return nil, err
	}
	if os.Getenv("OTEL_SERVICE_NAME") != "" {
		res = resource.Default()
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// AMQPCarrier adapts AMQP message headers to a propagation carrier.
type AMQPCarrier amqp.Table

func (c AMQPCarrier) Get(key string) string {
	if s, ok := c[key].(string); ok {
		return s
	}
	return ""
}

func (c AMQPCarrier) Set(key, value string) { c[key] = value }

func (c AMQPCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

// Extract returns ctx carrying the trace context found in carrier.
func Extract(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	return otel.GetTextMapPropagator().Extract(ctx, carrier)
}

// Inject writes ctx's trace context into carrier.
func Inject(ctx context.Context, carrier propagation.TextMapCarrier) {
	otel.GetTextMapPropagator().Inject(ctx, carrier)
}

// Traceparent returns ctx's W3C traceparent ("" when ctx has no span).
func Traceparent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	Inject(ctx, c)
	return c["traceparent"]
}
