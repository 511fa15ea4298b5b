// Package tracing is mmconnect's optional OpenTelemetry tracing. With
// OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set,
// spans for each request, each store call and each upstream check and
// request go to that collector over OTLP/HTTP, and W3C trace context is
// propagated to Mattermost; without it nothing is built, and every caller
// skips its instrumentation, so tracing that is off costs nothing.
//
// The exporter reads the standard OTEL_EXPORTER_OTLP_* variables itself
// (headers, timeout, compression, TLS), the provider reads
// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, and the resource reads
// OTEL_SERVICE_NAME (default "mmconnect") and OTEL_RESOURCE_ATTRIBUTES.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// Instrumentation is the name mmconnect's tracers carry.
const Instrumentation = "github.com/mmconnect/mmconnect"

// Enabled reports whether getenv asks for traces: an OTLP endpoint is set
// and the SDK is not disabled (OTEL_SDK_DISABLED=true).
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	return strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")) != "" ||
		strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) != ""
}

// Tracing holds the provider and the propagator that every instrumented
// part of mmconnect is given (none is set globally).
type Tracing struct {
	Provider   trace.TracerProvider
	Propagator propagation.TextMapPropagator
	sdk        *sdktrace.TracerProvider
}

// Start builds the OTLP/HTTP exporter and a batching provider. client
// sends the spans (built by the outbound package like every client of
// mmconnect's). Errors: OTEL_EXPORTER_OTLP_PROTOCOL (or its _TRACES_
// form) names a protocol other than http/protobuf, or the exporter refuses
// its settings.
func Start(ctx context.Context, getenv func(string) string, version string, client *http.Client) (*Tracing, error) {
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := strings.TrimSpace(getenv(name)); p != "" && p != "http/protobuf" {
			return nil, fmt.Errorf("%s=%q: mmconnect exports traces over OTLP/HTTP only; set it to http/protobuf or unset it", name, p)
		}
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithHTTPClient(client))
	if err != nil {
		return nil, fmt.Errorf("OpenTelemetry exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("mmconnect"), semconv.ServiceVersion(version)),
		resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("OpenTelemetry resource: %w", err)
	}
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Tracing{Provider: sdk, sdk: sdk,
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}, nil
}

// Tracer is mmconnect's tracer, or nil when t is nil (tracing is off):
// callers skip their spans on a nil tracer.
func (t *Tracing) Tracer() trace.Tracer {
	if t == nil {
		return nil
	}
	return t.Provider.Tracer(Instrumentation)
}

// Shutdown sends the spans still buffered and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	return t.sdk.Shutdown(ctx)
}

// Verifier traces every check v makes: a span "mattermost.check" with its
// outcome, around the requests to Mattermost (whose own spans are its
// children). With t nil it returns v itself.
func (t *Tracing) Verifier(v connection.Verifier) connection.Verifier {
	if t == nil {
		return v
	}
	return &tracedVerifier{next: v, tracer: t.Tracer()}
}

type tracedVerifier struct {
	next   connection.Verifier
	tracer trace.Tracer
}

func (t *tracedVerifier) Verify(ctx context.Context, serverURL, token string) (connection.Identity, error) {
	ctx, span := t.tracer.Start(ctx, "mattermost.check", trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attribute.String("mmconnect.server_url", serverURL)))
	defer span.End()
	ident, err := t.next.Verify(ctx, serverURL, token)
	outcome := connection.CheckOutcome(err)
	if outcome == "error" {
		span.SetStatus(codes.Error, "check failed")
	}
	span.SetAttributes(attribute.String("mmconnect.outcome", outcome))
	return ident, err
}
