// Package logging builds mmconnect's structured logs: JSON lines at the
// configured level, each line of a request carrying its request id, which
// the HTTP layer puts in the request's context.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Millis is a measured duration as a log field: key with "_ms" after it,
// in milliseconds to the microsecond ("duration_ms":0.425), so every line
// that times something says its unit in the key and reads in the same
// unit, where slog writes a time.Duration as a bare count of nanoseconds.
func Millis(key string, d time.Duration) slog.Attr {
	return slog.Float64(key+"_ms", float64(d.Microseconds())/1000)
}

type requestIDKey struct{}

// WithRequestID returns ctx carrying the request id for every log line
// written with it.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID is the request id in ctx ("" if none).
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// ParseLevel reads debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
}

// New returns a JSON logger at level whose lines, when written with a
// request's context, carry its request id.
func New(out io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(&requestIDHandler{Handler: slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level})})
}

// requestIDHandler adds the request id of the record's context, and its
// trace and span ids when the request is traced (OpenTelemetry), so a log
// line leads to its trace.
type requestIDHandler struct {
	slog.Handler
}

func (h *requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	if id := RequestID(ctx); id != "" {
		has := false
		r.Attrs(func(a slog.Attr) bool {
			has = a.Key == "request_id"
			return !has
		})
		if !has {
			r.AddAttrs(slog.String("request_id", id))
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h *requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &requestIDHandler{Handler: h.Handler.WithAttrs(attrs)}
}

func (h *requestIDHandler) WithGroup(name string) slog.Handler {
	return &requestIDHandler{Handler: h.Handler.WithGroup(name)}
}
