package api_test

import (
	"bytes"
	"strings"
	"testing"
)

// Every action leaves one audit row naming who, from where, with which
// request, and no row holds a secret; with webhooks off too, where a
// change records no events (a reconnect's row was lost that way once).
func TestAuditTrail(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts harnessOptions
	}{
		{"webhooks on", harnessOptions{}},
		{"webhooks off", harnessOptions{noWebhooks: true}},
	} {
		t.Run(tc.name, func(t *testing.T) { testAuditTrail(t, newHarnessWith(t, tc.opts)) })
	}
}

func testAuditTrail(t *testing.T, h *harness) {
	sessID, sessTok := h.openSession("u1")
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	h.connect(tokenA2, strp("u1")) // a reconnect
	h.doWith("POST", "/connections/"+id+"/verify", nil, map[string]string{"Authorization": "Bearer " + sessTok, "X-Test-Remote-Addr": "203.0.113.7:4444"})
	cred := h.do("GET", "/connections/"+id+"/credentials", nil)
	h.do("DELETE", "/connections/"+id, nil)
	h.do("DELETE", "/connect/sessions/"+sessID, nil)

	res := h.do("GET", "/audit-events?limit=200", nil)
	events := res.json(t)["data"].([]any)
	var actions []string
	for i := len(events) - 1; i >= 0; i-- {
		e := events[i].(map[string]any)
		actions = append(actions, e["action"].(string))
		if e["request_id"] == "" || e["actor"] == "" || e["client_ip"] == "" {
			t.Errorf("event without who or where: %v", e)
		}
	}
	want := "session.open,connection.create,connection.reconnect,connection.verify,connection.credentials,connection.revoke,session.end"
	if strings.Join(actions, ",") != want {
		t.Fatalf("actions = %v, want %s", actions, want)
	}
	verify := h.do("GET", "/audit-events?action=connection.verify", nil).json(t)["data"].([]any)[0].(map[string]any)
	if verify["actor"] != "session:u1" || verify["client_ip"] != "203.0.113.7" || verify["connection_id"] != id {
		t.Fatalf("verify event = %v", verify)
	}
	credEvent := h.do("GET", "/audit-events?connection_id="+id+"&action=connection.credentials", nil).json(t)["data"].([]any)[0].(map[string]any)
	if !strings.HasPrefix(credEvent["actor"].(string), "key-") || credEvent["request_id"] != cred.Header.Get("X-Request-Id") {
		t.Fatalf("credentials event = %v", credEvent)
	}
	for _, secret := range []string{tokenA, tokenA2, sessTok, h.key} {
		if bytes.Contains(res.Body, []byte(secret)) || bytes.Contains(h.dataDirBytes(), []byte(secret)) {
			t.Fatalf("a secret (…%s) is in the audit trail or the data dir", secret[len(secret)-4:])
		}
	}
	// Paging and filters.
	first := h.do("GET", "/audit-events?limit=3", nil).json(t)
	next := h.do("GET", "/audit-events?limit=3&cursor="+first["next_cursor"].(string), nil).json(t)
	if len(first["data"].([]any)) != 3 || len(next["data"].([]any)) != 3 {
		t.Fatalf("pages of 3: %d and %d", len(first["data"].([]any)), len(next["data"].([]any)))
	}
	if got := h.do("GET", "/audit-events?since=2100-01-01T00:00:00Z", nil).json(t)["data"].([]any); len(got) != 0 {
		t.Fatalf("events in the future: %v", got)
	}
	expectProblem(t, h.do("GET", "/audit-events?since=yesterday", nil), 400, "invalid_request")
	expectProblem(t, h.doWith("GET", "/audit-events", nil, map[string]string{"Authorization": "Bearer " + h.openSessionToken("u2")}), 403, "forbidden")
}

func (h *harness) openSessionToken(endUser string) string {
	_, tok := h.openSession(endUser)
	return tok
}
