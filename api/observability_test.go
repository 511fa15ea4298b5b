package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// accessLine is the access log's line for the request with id, decoded;
// nil if there is none.
func (h *harness) accessLine(id string) map[string]any {
	h.t.Helper()
	for line := range strings.SplitSeq(h.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "request" && m["request_id"] == id {
			return m
		}
	}
	return nil
}

// A request is named by its route's template in the access log and in
// /metrics alike, and one no route matched by the same word in both:
// never by its path, which the client chose (an id in a label would grow
// the metrics by one series per id).
func TestRequestsNamedByRouteInLogsAndMetrics(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{publicURL: "https://connect.example.com", metrics: true})
	cases := []struct {
		name, path, route string
		status            int
	}{
		{"a route, with an id", "/connections/cn_route_named_1", "/connections/:id", 404},
		{"a route's subresource", "/connections/cn_route_named_2/credentials", "/connections/:id/credentials", 404},
		{"no route", "/no/such/path_route_named_3", "unknown", 404},
		{"no route below a route", "/connections/cn_route_named_4/nothing", "unknown", 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := h.do("GET", tc.path, nil)
			if res.Status != tc.status {
				t.Fatalf("GET %s: %d, want %d", tc.path, res.Status, tc.status)
			}
			line := h.accessLine(res.Header.Get("X-Request-Id"))
			if _, timed := line["duration_ms"].(float64); !timed || line["route"] != tc.route || line["status"] != float64(tc.status) {
				t.Errorf("access line for GET %s: %v, want route %q and status %d", tc.path, line, tc.route, tc.status)
			}
			metrics := string(h.do("GET", "/metrics", nil).Body)
			series := fmt.Sprintf(`mmconnect_http_request_duration_seconds_count{method="GET",route=%q,status="%d",upstream="false"}`, tc.route, tc.status)
			if !strings.Contains(metrics, series) {
				t.Errorf("/metrics lacks %s", series)
			}
		})
	}
	// Every path above holds "route_named"; no route does.
	if metrics := string(h.do("GET", "/metrics", nil).Body); strings.Contains(metrics, "route_named") {
		t.Error("/metrics holds a path's text")
	}
	if strings.Contains(h.logs.String(), `"route":"/connections/cn_route_named`) || strings.Contains(h.logs.String(), `"route":"/no/`) {
		t.Error("an access line names its route by the path")
	}
}

// A method that is not one of HTTP's is "_OTHER" in /metrics and in the
// span (named "HTTP <route>", with the method sent beside, as
// OpenTelemetry's conventions have it), so requests with made-up methods,
// which need no key to send, cannot add series to /metrics; the access
// line keeps the method as sent.
func TestMadeUpMethodsAddNoSeries(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{publicURL: "https://connect.example.com", metrics: true, traced: true})
	ids := map[string]string{}
	for _, m := range []string{"MADEUP1", "MADEUP2", "get", "GET"} {
		res := h.doWith(m, "/connections", nil, map[string]string{"Authorization": "Bearer " + h.key})
		ids[m] = res.Header.Get("X-Request-Id")
		if line := h.accessLine(ids[m]); line == nil || line["method"] != m {
			t.Errorf("%s: access line %v, want the method as sent", m, line)
		}
	}
	metrics := string(h.do("GET", "/metrics", nil).Body)
	if strings.Contains(metrics, "MADEUP") || strings.Contains(metrics, `method="get"`) {
		t.Errorf("/metrics holds a made-up method:\n%s", metrics)
	}
	for _, want := range []string{
		`mmconnect_http_request_duration_seconds_count{method="_OTHER",route="/connections",status="405",upstream="false"} 3`,
		`mmconnect_http_request_duration_seconds_count{method="GET",route="/connections",status="200",upstream="false"} 1`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	spans := map[string]tracetest.SpanStub{}
	for _, s := range h.spans.GetSpans() {
		for _, a := range s.Attributes {
			if a.Key == "mmconnect.request_id" {
				spans[a.Value.AsString()] = s
			}
		}
	}
	for m, id := range ids {
		s, ok := spans[id]
		attrs := map[string]string{}
		for _, a := range s.Attributes {
			attrs[string(a.Key)] = a.Value.Emit()
		}
		wantName, wantMethod, wantOriginal := "HTTP /connections", "_OTHER", m
		if m == "GET" {
			wantName, wantMethod, wantOriginal = "GET /connections", "GET", ""
		}
		if !ok || s.Name != wantName || attrs["http.request.method"] != wantMethod || attrs["http.request.method_original"] != wantOriginal {
			t.Errorf("%s: span %q with %v, want %q with method %q and original %q", m, s.Name, attrs, wantName, wantMethod, wantOriginal)
		}
	}
}

// A proxied answer that is Mattermost's own counts in /metrics with
// upstream="true" and is logged with "upstream": true, and the proxy's
// own answers, on the same route, with false in both: an alert on
// mmconnect's 5xx (the README's rules), or an operator reading the log,
// must not take Mattermost's for ours, nor miss the proxy's own.
func TestProxiedAnswersMarkedUpstream(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{publicURL: "https://connect.example.com", metrics: true})
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	recordUpstream(h, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	for path, want := range map[string]struct {
		status   int
		upstream bool
	}{
		"api/v4/posts":           {http.StatusServiceUnavailable, true}, // Mattermost's
		"api/v4/users/me/tokens": {http.StatusForbidden, false},         // ours: a credentials path
		"api/v4/../v4/posts":     {http.StatusBadRequest, false},        // ours: a dot segment
	} {
		res := h.do("GET", "/connections/"+id+"/proxy/"+path, nil)
		if res.Status != want.status {
			t.Fatalf("GET proxy/%s = %d, want %d", path, res.Status, want.status)
		}
		if line := h.accessLine(res.Header.Get("X-Request-Id")); line == nil || line["upstream"] != want.upstream {
			t.Errorf("GET proxy/%s: access line %v, want upstream %v", path, line, want.upstream)
		}
	}
	if line := h.accessLine(h.do("GET", "/connections/"+id, nil).Header.Get("X-Request-Id")); line == nil || line["upstream"] != false {
		t.Errorf("GET /connections/{id}: access line %v, want upstream false", line)
	}
	metrics := string(h.do("GET", "/metrics", nil).Body)
	for _, want := range []string{
		`{method="GET",route="/connections/:id/proxy/*",status="503",upstream="true"} 1`,
		`{method="GET",route="/connections/:id/proxy/*",status="403",upstream="false"} 1`,
		`{method="GET",route="/connections/:id/proxy/*",status="400",upstream="false"} 1`,
	} {
		if !strings.Contains(metrics, "mmconnect_http_request_duration_seconds_count"+want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, wrong := range []string{`status="503",upstream="false"`, `status="403",upstream="true"`, `status="400",upstream="true"`} {
		if strings.Contains(metrics, wrong) {
			t.Errorf("/metrics has %s", wrong)
		}
	}
}
