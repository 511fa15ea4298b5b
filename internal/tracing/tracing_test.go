package tracing

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "TRUE"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "false"}, true},
	} {
		if got := Enabled(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("Enabled(%v) = %v, want %v", tc.env, got, tc.want)
		}
	}
}

// Only OTLP/HTTP is built in: another protocol stops the start with a
// line that says what to set, rather than sending nothing silently.
func TestStartRefusesOtherProtocols(t *testing.T) {
	for _, name := range []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", name: "grpc"}
		_, err := Start(context.Background(), func(k string) string { return env[k] }, "test", http.DefaultClient)
		if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "http/protobuf") {
			t.Errorf("%s=grpc: %v", name, err)
		}
	}
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
	tr, err := Start(context.Background(), func(k string) string { return env[k] }, "test", http.DefaultClient)
	if err != nil {
		t.Fatalf("http/protobuf: %v", err)
	}
	tr.Shutdown(context.Background())
}

// A nil Tracing (tracing off) is safe to use and builds nothing.
func TestNilTracingIsOff(t *testing.T) {
	var tr *Tracing
	if tr.Tracer() != nil {
		t.Error("a tracer while off")
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}
