package main

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
)

// collector is an OTLP/HTTP receiver that keeps the spans sent to it, and
// the raw bodies (to look for secrets in).
type collector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	raw   bytes.Buffer
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		body = zr
	}
	b, _ := io.ReadAll(body)
	var req coltrace.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(b, &req) != nil {
		http.Error(w, "bad export", 400)
		return
	}
	c.mu.Lock()
	c.raw.Write(b)
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Write(out)
}

// inTrace returns the spans of trace id (hex), waiting up to 10 s until one
// is named want.
func (c *collector) inTrace(t *testing.T, traceID, want string) map[string]*tracepb.Span {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := map[string]*tracepb.Span{}
		c.mu.Lock()
		for _, s := range c.spans {
			if hex.EncodeToString(s.TraceId) == traceID {
				got[s.Name] = s
			}
		}
		c.mu.Unlock()
		if got[want] != nil {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("no span %q in trace %s; spans: %v", want, traceID, keys(got))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func keys(m map[string]*tracepb.Span) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, a create is one trace: the
// request's server span continues the caller's traceparent, with the
// store call, the upstream check and its requests to Mattermost inside it,
// and Mattermost receives the trace context. No secret is in any span.
// Without the variable, Mattermost sees no trace context.
func TestTracing(t *testing.T) {
	col := &collector{}
	otlp := httptest.NewServer(col)
	defer otlp.Close()
	mm := newMattermost(t)

	env := newEnv(t, mm)
	// The OpenTelemetry SDK reads its settings from the process environment.
	for k, v := range map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.URL, "OTEL_BSP_SCHEDULE_DELAY": "50"} {
		t.Setenv(k, v)
		env[k] = v
	}
	in := start(t, env)

	const traceID, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	body, _ := json.Marshal(map[string]any{"server_url": mm.URL, "token": tokenA, "end_user_id": "u1"})
	req, _ := http.NewRequest("POST", in.base+"/connections", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+in.key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", "00-"+traceID+"-"+parent+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("create = %d", resp.StatusCode)
	}

	spans := col.inTrace(t, traceID, "POST /connections")
	server := spans["POST /connections"]
	if hex.EncodeToString(server.ParentSpanId) != parent || server.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("server span: parent %x kind %v, want the caller's %s", server.ParentSpanId, server.Kind, parent)
	}
	spans = col.inTrace(t, traceID, "store.Create")
	check := spans["mattermost.check"]
	if check == nil || !bytes.Equal(check.ParentSpanId, server.SpanId) {
		t.Fatalf("no upstream check span under the request; spans: %v", keys(spans))
	}
	var client *tracepb.Span
	col.mu.Lock()
	for _, s := range col.spans {
		if s.Kind == tracepb.Span_SPAN_KIND_CLIENT && bytes.Equal(s.ParentSpanId, check.SpanId) {
			client = s
		}
	}
	col.mu.Unlock()
	if client == nil {
		t.Fatalf("no request to Mattermost under the check; spans: %v", keys(spans))
	}
	// Mattermost received the trace context of that request.
	propagated := false
	for _, tp := range mm.TraceParents() {
		propagated = propagated || strings.HasPrefix(tp, "00-"+traceID+"-")
	}
	if !propagated {
		t.Errorf("Mattermost got no traceparent of the trace: %v", mm.TraceParents())
	}
	col.mu.Lock()
	raw := col.raw.String()
	col.mu.Unlock()
	for _, secret := range []string{tokenA, in.key} {
		if strings.Contains(raw, secret) {
			t.Fatal("a secret was exported in a span")
		}
	}
	in.stop()
	// The log lines of the request lead to the trace (its access line is
	// out once the server has stopped).
	if !strings.Contains(in.logs.String(), `"trace_id":"`+traceID+`"`) {
		t.Error("the request's log lines carry no trace_id")
	}

	// Off: nothing is traced and Mattermost gets no trace context.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	mm2 := mattermosttest.NewServer(t)
	mm2.AddToken(tokenA, alice())
	off := start(t, newEnv(t, mm2))
	if status, _, _ := off.call("POST", "/connections", map[string]any{"server_url": mm2.URL, "token": tokenA}); status != 201 {
		t.Fatalf("create without tracing = %d", status)
	}
	if tps := mm2.TraceParents(); len(tps) != 0 {
		t.Errorf("tracing off, yet Mattermost got trace context: %v", tps)
	}
	if strings.Contains(off.logs.String(), "trace_id") {
		t.Error("tracing off, yet log lines carry a trace_id")
	}
}
