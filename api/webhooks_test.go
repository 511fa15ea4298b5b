package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
)

// DELETE revokes in Mattermost unless asked not to, and says what became
// of the token in upstream_revocation.
func TestRevokeUpstreamThroughTheAPI(t *testing.T) {
	h := newHarness(t)
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	if got := h.do("GET", "/connections/"+id, nil).json(t); got["last_checked_at"] == nil || got["upstream_revocation"] != nil {
		t.Fatalf("a new connection: last_checked_at %v, upstream_revocation %v", got["last_checked_at"], got["upstream_revocation"])
	}
	for _, q := range []string{"?revoke_upstream=maybe", "?revoke_upstream=true&revoke_upstream=false", "?force=1"} {
		expectProblem(t, h.do("DELETE", "/connections/"+id+q, nil), 400, "invalid_request")
	}
	if got := h.do("GET", "/connections/"+id, nil).json(t); got["status"] != "active" {
		t.Fatalf("a refused DELETE changed the connection: %v", got["status"])
	}
	if res := h.do("DELETE", "/connections/"+id, nil); res.Status != 204 {
		t.Fatalf("DELETE = %d", res.Status)
	}
	ur, _ := h.do("GET", "/connections/"+id, nil).json(t)["upstream_revocation"].(map[string]any)
	if ur["status"] != "revoked" || h.mm.HasToken(tokenA) {
		t.Fatalf("upstream_revocation = %v, token still works %v; want revoked", ur, h.mm.HasToken(tokenA))
	}

	id = h.connect(tokenB, strp("u2"))["id"].(string)
	if res := h.do("DELETE", "/connections/"+id+"?revoke_upstream=false", nil); res.Status != 204 {
		t.Fatalf("DELETE ?revoke_upstream=false = %d", res.Status)
	}
	ur, _ = h.do("GET", "/connections/"+id, nil).json(t)["upstream_revocation"].(map[string]any)
	if ur["status"] != "skipped" || !h.mm.HasToken(tokenB) {
		t.Fatalf("upstream_revocation = %v, token works %v; want skipped and still working", ur, h.mm.HasToken(tokenB))
	}
	if bytes.Contains(h.dataDirBytes(), []byte(mattermosttest.WebSessionCSRF)) {
		t.Fatal("another session's csrf secret from the sessions answer is in the data dir")
	}
}

func TestWebhookRoutes(t *testing.T) {
	h := newHarness(t)
	h.connect(tokenA, strp("u1"))

	ping := h.do("POST", "/webhooks/test", nil)
	if ping.Status != 202 {
		t.Fatalf("POST /webhooks/test = %d %s", ping.Status, ping.Body)
	}
	pingID := ping.json(t)["id"].(string)
	list := h.do("GET", "/webhooks/deliveries?status=pending&limit=1", nil).json(t)
	data := list["data"].([]any)
	if len(data) != 1 || list["next_cursor"] == nil {
		t.Fatalf("first page = %v; want 1 delivery and a cursor", list)
	}
	next := h.do("GET", "/webhooks/deliveries?status=pending&limit=1&cursor="+list["next_cursor"].(string), nil).json(t)
	types := []any{data[0].(map[string]any)["type"], next["data"].([]any)[0].(map[string]any)["type"]}
	if types[0] != "ping" || types[1] != "connection.created" {
		t.Fatalf("pending deliveries, newest first = %v", types)
	}
	expectProblem(t, h.do("POST", "/webhooks/deliveries/"+pingID+"/retry", nil), 409, "delivery_not_failed")
	expectProblem(t, h.do("POST", "/webhooks/deliveries/evt_unknown/retry", nil), 404, "not_found")
	expectProblem(t, h.do("GET", "/webhooks/deliveries?status=lost", nil), 400, "invalid_request")
	expectProblem(t, h.do("GET", "/webhooks/deliveries?cursor=bm9wZQ", nil), 400, "invalid_request")

	if n, err := h.hooks.DeliverDue(t.Context()); n != 2 || err != nil {
		t.Fatalf("DeliverDue = %d, %v", n, err)
	}
	done := h.do("GET", "/webhooks/deliveries?status=delivered", nil).json(t)["data"].([]any)
	if len(done) != 2 || done[0].(map[string]any)["last_response_status"] != float64(204) {
		t.Fatalf("delivered = %v", done)
	}

	// A connect session may not see deliveries.
	sess := h.do("POST", "/connect/sessions", map[string]any{"end_user_id": "u1"}).json(t)
	expectProblem(t, h.doWith("GET", "/webhooks/deliveries", nil, map[string]string{"Authorization": "Bearer " + sess["token"].(string)}), 403, "forbidden")
}

func TestWebhookRoutesWhenDisabled(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{publicURL: "https://connect.example.com", noWebhooks: true})
	expectProblem(t, h.do("POST", "/webhooks/test", nil), 409, "webhooks_disabled")
	expectProblem(t, h.do("GET", "/webhooks/deliveries", nil), 409, "webhooks_disabled")
}

// What receivers get is the contract's WebhookEvent, with the connection
// exactly as the API shows it, and no token.
func TestWebhookBodyMatchesContract(t *testing.T) {
	h := newHarness(t)
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	h.do("DELETE", "/connections/"+id, nil)
	var bodies [][]byte
	h.receiver.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		buf.ReadFrom(r.Body)
		bodies = append(bodies, buf.Bytes())
		w.WriteHeader(http.StatusOK)
	})
	for range 3 {
		if _, err := h.hooks.DeliverDue(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if len(bodies) != 2 {
		t.Fatalf("receiver got %d bodies, want created and revoked", len(bodies))
	}
	doc, _ := contract()
	got := h.do("GET", "/connections/"+id, nil).json(t)
	for i, b := range bodies {
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		if err := doc.Components.Schemas["WebhookEvent"].Value.VisitJSON(v); err != nil {
			t.Errorf("body %d breaks WebhookEvent: %v\n%s", i, err, b)
		}
		if strings.Contains(string(b), tokenA) {
			t.Errorf("body %d carries the token", i)
		}
	}
	var last map[string]any
	json.Unmarshal(bodies[1], &last)
	if d := last["data"].(map[string]any); d["status"] != "revoked" || d["updated_at"] != got["updated_at"] {
		t.Fatalf("revoked event data = %v; want the connection as GET shows it", d)
	}
}

// A token that worked and is refused at a re-check says so; the backend's
// credentials carry the status.
func TestRejectedAfterWorking(t *testing.T) {
	h := newHarness(t)
	id := h.connect(tokenA, strp("u1"))["id"].(string)
	h.mm.RevokeToken(tokenA)
	v := h.do("POST", "/connections/"+id+"/verify", nil).json(t)
	le, _ := v["last_error"].(map[string]any)
	if v["status"] != "invalid" || le == nil || !strings.Contains(le["message"].(string), "worked before") || v["invalid_since"] == nil {
		t.Fatalf("verify of a removed token = %v", v)
	}
	cred := h.do("GET", "/connections/"+id+"/credentials", nil).json(t)
	if cred["status"] != "invalid" || cred["last_verified_at"] == nil {
		t.Fatalf("credentials of an invalid connection = %v", cred)
	}
}
