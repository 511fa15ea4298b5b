package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestRequestIDOnEveryLineOfARequest(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, slog.LevelInfo)
	ctx := WithRequestID(context.Background(), "req-1")
	log.InfoContext(ctx, "in a request", "n", 1)
	log.With("part", "store").WarnContext(ctx, "still in it")
	log.InfoContext(ctx, "already named", "request_id", "req-1")
	log.Info("not in a request")
	log.DebugContext(ctx, "below the level")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4 (debug is below info):\n%s", len(lines), buf.String())
	}
	for i, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		want := i < 3
		if got := m["request_id"] == "req-1"; got != want {
			t.Errorf("line %d %s: request id present %v, want %v", i, line, got, want)
		}
		if strings.Count(line, `"request_id"`) > 1 {
			t.Errorf("line %d names the request id twice: %s", i, line)
		}
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError} {
		if got, err := ParseLevel(in); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseLevel("verbose"); err == nil {
		t.Error("verbose accepted")
	}
}
