package api_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mmconnect/mmconnect"
	"github.com/mmconnect/mmconnect/api"
	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/secret"
)

// fakeConnections answers with its function fields; unset ones panic.
type fakeConnections struct {
	get   func(ctx context.Context, id string) (connection.Connection, error)
	ready func(ctx context.Context) error
}

var _ api.Connections = (*fakeConnections)(nil)

func (f *fakeConnections) Connect(context.Context, connection.ConnectInput) (connection.Connection, bool, error) {
	panic("not used")
}
func (f *fakeConnections) Get(ctx context.Context, id string) (connection.Connection, error) {
	return f.get(ctx, id)
}
func (f *fakeConnections) List(context.Context, connection.ListQuery) (connection.Page, error) {
	panic("not used")
}
func (f *fakeConnections) Verify(context.Context, string) (connection.Connection, error) {
	panic("not used")
}
func (f *fakeConnections) Credentials(context.Context, string) (connection.Credentials, error) {
	panic("not used")
}
func (f *fakeConnections) Revoke(context.Context, string, bool) (connection.Connection, error) {
	panic("not used")
}
func (f *fakeConnections) Live(context.Context, string) ([]connection.Connection, error) {
	panic("not used")
}
func (f *fakeConnections) Ready(ctx context.Context) error { return f.ready(ctx) }

func TestInternalFailuresAreHidden(t *testing.T) {
	key := secret.NewAPIKey()
	var logs bytes.Buffer
	fake := &fakeConnections{}
	srv := api.NewServer(api.Deps{Connections: fake, APIKeys: secret.NewKeySet([]string{key}),
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), OpenAPI: mmconnect.OpenAPI()})
	call := func(path string) (*httptest.ResponseRecorder, string) {
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec, rec.Header().Get("X-Request-Id")
	}
	tests := []struct {
		name   string
		get    func(context.Context, string) (connection.Connection, error)
		status int
		code   string
		logged bool
	}{
		{"panic", func(context.Context, string) (connection.Connection, error) { panic("secret detail xyzzy") }, 500, "internal", true},
		{"unknown error", func(context.Context, string) (connection.Connection, error) {
			return connection.Connection{}, errors.New("secret detail xyzzy")
		}, 500, "internal", true},
		{"database busy", func(context.Context, string) (connection.Connection, error) {
			return connection.Connection{}, fmt.Errorf("get: %w: database is locked", connection.ErrUnavailable)
		}, 503, "database_unavailable", false},
		{"sealing key missing", func(context.Context, string) (connection.Connection, error) {
			return connection.Connection{}, fmt.Errorf("open token of conn_x: key 0badc0de: %w", connection.ErrSealingKeyMissing)
		}, 500, "sealing_key_missing", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			fake.get = tc.get
			rec, id := call("/connections/conn_x")
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), `"code":"`+tc.code+`"`) {
				t.Fatalf("got %d %s, want %d %s", rec.Code, rec.Body, tc.status, tc.code)
			}
			if strings.Contains(rec.Body.String(), "xyzzy") || strings.Contains(rec.Body.String(), "locked") {
				t.Fatalf("problem leaks the cause: %s", rec.Body)
			}
			gotLogged := strings.Contains(logs.String(), `"request_id":"`+id+`"`) && strings.Contains(logs.String(), "internal error")
			for line := range strings.SplitSeq(logs.String(), "\n") {
				if strings.Contains(line, `"msg":"internal error"`) && !strings.Contains(line, `"route":"/connections/:id"`) {
					t.Errorf("the internal error's line does not name its route as the access line does: %s", line)
				}
			}
			if gotLogged != tc.logged {
				t.Fatalf("internal error logged with request id = %v, want %v; logs %s", gotLogged, tc.logged, logs.String())
			}
			if tc.code == "sealing_key_missing" && (!strings.Contains(logs.String(), "0badc0de") || strings.Contains(rec.Body.String(), "0badc0de")) {
				t.Fatalf("the key id must be in the log line and not in the answer: log %s, answer %s", logs.String(), rec.Body)
			}
		})
	}

	fake.ready = func(context.Context) error { return fmt.Errorf("ping: %w", connection.ErrUnavailable) }
	rec, _ := call("/readyz")
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "database_unavailable") {
		t.Fatalf("/readyz with the database down = %d %s", rec.Code, rec.Body)
	}
}
