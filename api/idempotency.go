package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/mmconnect/mmconnect/internal/idempotency"
)

// Idempotency is what the API needs to make creates safe to retry.
type Idempotency interface {
	Begin(ctx context.Context, key, requestHash string) (*idempotency.Replay, error)
	Finish(ctx context.Context, key string, status int, body []byte) error
	Release(ctx context.Context, key string) error
}

// storedAnswer is what is kept of a first answer, sealed: enough to send
// it again as it was.
type storedAnswer struct {
	ContentType string `json:"content_type"`
	Location    string `json:"location,omitempty"`
	Body        []byte `json:"body"`
}

// captureWriter keeps a copy of what a handler writes.
type captureWriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (w *captureWriter) Write(b []byte) (int, error) {
	w.buf.Write(b)
	return w.ResponseWriter.Write(b)
}

// idempotent answers a request carrying an Idempotency-Key the way it
// answered the first request with that key and body (within a day), and
// keeps the first final answer (see idempotency.Final). Keys are scoped to
// the caller: an API key's name, or the connect session's end user.
func (s *Server) idempotent(next echo.HandlerFunc) echo.HandlerFunc {
	if s.deps.Idempotency == nil {
		return next
	}
	return func(c echo.Context) error {
		req := c.Request()
		key := req.Header.Get("Idempotency-Key")
		if key == "" {
			return next(c)
		}
		if len(key) > 255 || !printable(key) {
			return invalidRequest("Idempotency-Key must be 1 to 255 printable ASCII characters, e.g. a UUID.")
		}
		body, err := readBody(c)
		if err != nil {
			return err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		scoped := idempotency.Hash(actorOf(c), key)
		ctx := req.Context()
		replay, err := s.deps.Idempotency.Begin(ctx, scoped, idempotency.RequestHash(req.Method, c.Path(), body))
		if err != nil {
			return err
		}
		if replay != nil {
			var a storedAnswer
			if err := json.Unmarshal(replay.Body, &a); err != nil {
				return err
			}
			h := c.Response().Header()
			h.Set("Idempotent-Replayed", "true")
			if a.Location != "" {
				h.Set(echo.HeaderLocation, a.Location)
			}
			return c.Blob(replay.Status, a.ContentType, a.Body)
		}
		done := false
		defer func() {
			if !done { // a panic: free the key for a retry
				_ = s.deps.Idempotency.Release(context.WithoutCancel(ctx), scoped)
			}
		}()
		capture := &captureWriter{ResponseWriter: c.Response().Writer}
		c.Response().Writer = capture
		if err := next(c); err != nil {
			c.Error(err)
		}
		done = true
		h := c.Response().Header()
		answer, err := json.Marshal(storedAnswer{ContentType: h.Get(echo.HeaderContentType), Location: h.Get(echo.HeaderLocation), Body: capture.buf.Bytes()})
		if err == nil {
			err = s.deps.Idempotency.Finish(context.WithoutCancel(ctx), scoped, c.Response().Status, answer)
		}
		if err != nil {
			// The answer went out; a retry with the key finds it in flight
			// until idempotency.Abandoned, then does the work again.
			s.deps.Logger.Error("keep an idempotent answer", "request_id", requestID(c), "err", err)
		}
		return nil
	}
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return s != ""
}
