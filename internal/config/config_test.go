package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("./data")
	if c.Addr != ":8080" || c.DataDir != abs || c.SQLitePath != filepath.Join(abs, "mmconnect.db") ||
		c.APIKeyFile != filepath.Join(abs, "api-key") || c.EncryptionKeyFile != filepath.Join(abs, "encryption-key") ||
		c.AllowHTTP || c.UpstreamTimeout != 10*time.Second || c.PublicURL != "http://localhost:8080" || !c.PublicURLDefaulted ||
		c.AllowedOrigins != nil || c.SessionTTL != 30*time.Minute || c.AccessLogFlushInterval != 100*time.Millisecond {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestLoadValues(t *testing.T) {
	key := strings.Repeat("k", 32)
	c, err := Load(env(map[string]string{
		"MMCONNECT_ADDR":                      "127.0.0.1:0",
		"MMCONNECT_DATABASE_URL":              "sqlite:///tmp/x/mm.db",
		"MMCONNECT_API_KEYS":                  key + ", " + key + "2",
		"MMCONNECT_ENCRYPTION_KEY":            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
		"MMCONNECT_ALLOW_HTTP":                "true",
		"MMCONNECT_UPSTREAM_TIMEOUT":          "3s",
		"MMCONNECT_ALLOWED_NETWORKS":          "10.1.2.3/8, fd00::/8",
		"MMCONNECT_PUBLIC_URL":                "https://connect.example.com/",
		"MMCONNECT_ALLOWED_ORIGINS":           "https://App.Example.com:443, http://localhost:3000",
		"MMCONNECT_SESSION_TTL":               "10m",
		"MMCONNECT_ACCESS_LOG_FLUSH_INTERVAL": "0",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.SQLitePath != "/tmp/x/mm.db" || len(c.APIKeys) != 2 || c.APIKeys[1] != key+"2" || c.APIKeyFile != "" ||
		len(c.EncryptionKeys) != 1 || len(c.EncryptionKeys[0]) != 32 || c.EncryptionKeyFile != "" || !c.AllowHTTP || c.UpstreamTimeout != 3*time.Second ||
		fmt.Sprint(c.AllowedNetworks) != "[10.0.0.0/8 fd00::/8]" || c.PublicURL != "https://connect.example.com" ||
		c.PublicURLDefaulted || fmt.Sprint(c.AllowedOrigins) != "[https://app.example.com http://localhost:3000]" ||
		c.SessionTTL != 10*time.Minute || c.AccessLogFlushInterval != 0 {
		t.Fatalf("loaded = %+v", c)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "config", c)
	if strings.Contains(buf.String(), key) || strings.Contains(buf.String(), "AQEBAQEB") {
		t.Fatalf("config log shows a secret: %s", buf.String())
	}
	// Durations read as an operator writes them, in the JSON lines the
	// service writes too, where slog would give nanoseconds.
	buf.Reset()
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
	for _, want := range []string{`"session_ttl":"10m0s"`, `"upstream_timeout":"3s"`, `"access_log_flush_interval":"0s"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("config log lacks %s: %s", want, buf.String())
		}
	}
}

func TestLoadRejects(t *testing.T) {
	for _, tc := range []struct {
		name, value string
	}{
		{"MMCONNECT_ADDR", "8080"},
		{"MMCONNECT_ADDR", ":99999"},
		{"MMCONNECT_DATABASE_URL", "mysql://x"},
		{"MMCONNECT_DATABASE_URL", "sqlite://relative.db"},
		{"MMCONNECT_API_KEYS", "short"},
		{"MMCONNECT_API_KEYS", strings.Repeat("k", 32) + ",short"},
		{"MMCONNECT_ENCRYPTION_KEY", "not-base64!"},
		{"MMCONNECT_ENCRYPTION_KEY", "c2hvcnQ="},
		{"MMCONNECT_ALLOW_HTTP", "sometimes"},
		{"MMCONNECT_UPSTREAM_CA_FILE", "/nonexistent/ca.pem"},
		{"MMCONNECT_ALLOWED_NETWORKS", "10.0.0.0"},
		{"MMCONNECT_PUBLIC_URL", "connect.example.com"},
		{"MMCONNECT_PUBLIC_URL", "ftp://connect.example.com"},
		{"MMCONNECT_PUBLIC_URL", "https://connect.example.com/?x=1"},
		{"MMCONNECT_ALLOWED_ORIGINS", "https://app.example.com/path"},
		{"MMCONNECT_ALLOWED_ORIGINS", "app.example.com"},
		{"MMCONNECT_ALLOWED_ORIGINS", "*"},
		{"MMCONNECT_ALLOWED_ORIGINS", "https://a.example.com,https://user@b.example.com"},
		{"MMCONNECT_SESSION_TTL", "forever"},
		{"MMCONNECT_SESSION_TTL", "48h"},
		{"MMCONNECT_ALLOWED_NETWORKS", "10.0.0.0/8,banana"},
		{"MMCONNECT_UPSTREAM_TIMEOUT", "ten seconds"},
		{"MMCONNECT_UPSTREAM_TIMEOUT", "1ns"},
		{"MMCONNECT_UPSTREAM_HOST_CONCURRENCY", "0"},
		{"MMCONNECT_UPSTREAM_HOST_CONCURRENCY", "many"},
		{"MMCONNECT_REVERIFY_INTERVAL", "5s"},
		{"MMCONNECT_REVERIFY_INTERVAL", "-1h"},
		{"MMCONNECT_REVERIFY_INTERVAL", "often"},
		{"MMCONNECT_REVERIFY_CONCURRENCY", "0"},
		{"MMCONNECT_WEBHOOK_URL", "hooks.example.com"},
		{"MMCONNECT_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, // without a URL
		{"MMCONNECT_REVOKE_UPSTREAM", "maybe"},
		{"MMCONNECT_REVOKED_RETENTION", "24h"},
		{"MMCONNECT_REVOKED_RETENTION", "a month"},
		{"MMCONNECT_RATE_LIMITS", "sometimes"},
		{"MMCONNECT_RATE_LIMIT_PER_API_KEY", "20"},
		{"MMCONNECT_RATE_LIMIT_PER_SESSION", "0/m"},
		{"MMCONNECT_RATE_LIMIT_PER_IP", "5/d"},
		{"MMCONNECT_TRUSTED_PROXIES", "10.0.0.1"},
		{"MMCONNECT_MAX_CONNECTIONS_PER_END_USER", "0"},
		{"MMCONNECT_ENCRYPTION_KEYS", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=,short"},
		{"MMCONNECT_API_KEYS", "a:" + strings.Repeat("k", 32) + ",a:" + strings.Repeat("j", 32)},
		{"MMCONNECT_PROXY_MAX_BODY", "lots"},
		{"MMCONNECT_PROXY_MAX_BODY", "10"},
		{"MMCONNECT_PROXY_TIMEOUT", "forever"},
		{"MMCONNECT_PROXY_ALLOW_TOKEN_PATHS", "maybe"},
		{"MMCONNECT_LOG_LEVEL", "verbose"},
		{"MMCONNECT_ACCESS_LOG_FLUSH_INTERVAL", "1m"},
		{"MMCONNECT_ACCESS_LOG_FLUSH_INTERVAL", "soon"},
	} {
		_, err := Load(env(map[string]string{tc.name: tc.value}))
		var ce *Error
		if !errors.As(err, &ce) || ce.Var != tc.name {
			t.Errorf("%s=%q: err = %v, want an error naming %s", tc.name, tc.value, err, tc.name)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", tc.name, err)
		}
		if tc.name == "MMCONNECT_API_KEYS" && strings.Contains(err.Error(), tc.value) {
			t.Errorf("error repeats the key: %q", err)
		}
	}
}

func TestLoadBackgroundAndWebhooks(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.ReverifyInterval != 6*time.Hour || c.ReverifyConcurrency != 4 || c.UpstreamHostConcurrency != 8 ||
		c.WebhookURL != "" || !c.RevokeUpstream || c.RevokedRetention != 720*time.Hour {
		t.Fatalf("defaults = %+v", c)
	}
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	c, err = Load(env(map[string]string{
		"MMCONNECT_REVERIFY_INTERVAL":         "0",
		"MMCONNECT_REVERIFY_CONCURRENCY":      "2",
		"MMCONNECT_UPSTREAM_HOST_CONCURRENCY": "64",
		"MMCONNECT_WEBHOOK_URL":               "https://hooks.example.com/mm?sig=hidden",
		"MMCONNECT_WEBHOOK_SECRET":            secret + " whsec_AgICAgICAgICAgICAgICAgICAgICAgIC",
		"MMCONNECT_REVOKE_UPSTREAM":           "false",
		"MMCONNECT_REVOKED_RETENTION":         "0",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ReverifyInterval != 0 || c.ReverifyConcurrency != 2 || c.UpstreamHostConcurrency != 64 ||
		len(c.WebhookSecrets) != 2 || c.RevokeUpstream || c.RevokedRetention != 0 {
		t.Fatalf("loaded = %+v", c)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "config", c)
	if strings.Contains(buf.String(), "MfKQ9r8G") || strings.Contains(buf.String(), "hidden") {
		t.Fatalf("config log shows a webhook secret: %s", buf.String())
	}
	// A malformed secret among good ones is named by position, not shown.
	_, err = Load(env(map[string]string{"MMCONNECT_WEBHOOK_URL": "https://hooks.example.com", "MMCONNECT_WEBHOOK_SECRET": secret + " whsec_bad"}))
	if err == nil || !strings.Contains(err.Error(), "secret 2") || strings.Contains(err.Error(), "MfKQ") {
		t.Fatalf("malformed second secret: %v", err)
	}
}

func TestLoadAbuseLimits(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !c.RateLimits || c.RatePerAPIKey != (Rate{20, time.Second}) || c.RatePerSession != (Rate{10, time.Minute}) ||
		c.RatePerClientIP != (Rate{30, time.Minute}) || c.MaxConnectionsPerEndUser != 25 || c.TrustedProxies != nil {
		t.Fatalf("defaults = %+v", c)
	}
	c, err = Load(env(map[string]string{"MMCONNECT_RATE_LIMITS": "off", "MMCONNECT_RATE_LIMIT_PER_IP": "100/h",
		"MMCONNECT_TRUSTED_PROXIES": "10.1.2.3/8, fd00::/8", "MMCONNECT_MAX_CONNECTIONS_PER_END_USER": "3"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.RateLimits || c.RatePerClientIP != (Rate{100, time.Hour}) || fmt.Sprint(c.TrustedProxies) != "[10.0.0.0/8 fd00::/8]" || c.MaxConnectionsPerEndUser != 3 {
		t.Fatalf("loaded = %+v", c)
	}
	if c.ProxyMaxBody != 100<<20 || c.ProxyTimeout != 30*time.Second || c.ProxyAllowTokenPaths {
		t.Fatalf("proxy settings = %d %s %v", c.ProxyMaxBody, c.ProxyTimeout, c.ProxyAllowTokenPaths)
	}
	if c, err := Load(env(map[string]string{"MMCONNECT_PROXY_MAX_BODY": "512KiB"})); err != nil || c.ProxyMaxBody != 512<<10 {
		t.Fatalf("512KiB = %d %v", c.ProxyMaxBody, err)
	}
	// Named keys; a plain key is named from its hash, stably.
	key := strings.Repeat("k", 32)
	c, err = Load(env(map[string]string{"MMCONNECT_API_KEYS": "billing:" + key + "1, " + key + "2"}))
	if err != nil || len(c.APIKeys) != 2 {
		t.Fatalf("named keys: %v %v", c.APIKeys, err)
	}
	if _, err := Load(env(map[string]string{"MMCONNECT_API_KEYS": "billing:short"})); err == nil {
		t.Fatal("a named key shorter than 32 characters was accepted")
	}
}

func TestPublicURLInClear(t *testing.T) {
	for u, want := range map[string]bool{
		"http://localhost:8080":       false,
		"http://127.0.0.1:8080":       false,
		"http://[::1]:8080":           false,
		"https://connect.example.com": false,
		"http://connect.example.com":  true,
		"http://10.0.0.5:8080":        true,
	} {
		if got := (Config{PublicURL: u}).PublicURLInClear(); got != want {
			t.Errorf("PublicURLInClear(%s) = %v, want %v", u, got, want)
		}
	}
}

func TestMetricsOpenToOthers(t *testing.T) {
	const token = "metrics-token-0123456789"
	for _, tc := range []struct {
		addr, token string
		want        bool
	}{
		{"", "", false},               // on the API's listener, behind an API key
		{"127.0.0.1:9090", "", false}, // this machine only
		{"[::1]:9090", "", false},
		{"localhost:9090", "", false},
		{":9090", "", true}, // every interface
		{"0.0.0.0:9090", "", true},
		{"10.0.0.5:9090", "", true},
		{"metrics.internal:9090", "", true},
		{":9090", token, false}, // behind the token
	} {
		if got := (Config{MetricsAddr: tc.addr, MetricsToken: tc.token}).MetricsOpenToOthers(); got != tc.want {
			t.Errorf("MetricsOpenToOthers(%q, token %v) = %v, want %v", tc.addr, tc.token != "", got, tc.want)
		}
	}
}

func TestLoadPostgres(t *testing.T) {
	key := strings.Repeat("k", 32)
	base := map[string]string{
		"MMCONNECT_DATABASE_URL":         "postgres://mm:s3cret@db:5432/mmconnect?sslmode=require",
		"MMCONNECT_API_KEYS":             key,
		"MMCONNECT_ENCRYPTION_KEY":       "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
		"MMCONNECT_DB_MAX_CONNS":         "25",
		"MMCONNECT_DB_STATEMENT_TIMEOUT": "3s",
	}
	c, err := Load(env(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.PostgresURL == "" || c.SQLitePath != "" || c.DBMaxConns != 25 || c.DBStatementTimeout != 3*time.Second {
		t.Fatalf("loaded = %+v", c)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "config", c)
	if strings.Contains(buf.String(), "s3cret") {
		t.Fatalf("the database password is logged: %s", buf.String())
	}
	// Replicas must share keys: none may be generated per replica.
	for _, missing := range []string{"MMCONNECT_API_KEYS", "MMCONNECT_ENCRYPTION_KEY"} {
		e := map[string]string{}
		for k, v := range base {
			e[k] = v
		}
		delete(e, missing)
		_, err := Load(env(e))
		var ce *Error
		if !errors.As(err, &ce) || ce.Var != missing || !strings.Contains(err.Error(), "replica") {
			t.Errorf("without %s: err = %v", missing, err)
		}
	}
	for name, bad := range map[string]string{"MMCONNECT_DB_MAX_CONNS": "0", "MMCONNECT_DB_STATEMENT_TIMEOUT": "forever"} {
		e := map[string]string{}
		for k, v := range base {
			e[k] = v
		}
		e[name] = bad
		var ce *Error
		if _, err := Load(env(e)); !errors.As(err, &ce) || ce.Var != name {
			t.Errorf("%s=%s: err = %v", name, bad, err)
		}
	}
}

// Every duration setting says its bounds the same way.
func TestDurationMessages(t *testing.T) {
	for name, want := range map[string]string{
		"MMCONNECT_SESSION_TTL":               "must be a duration from 1m to 24h, e.g. 30m",
		"MMCONNECT_UPSTREAM_TIMEOUT":          "must be a duration from 100ms to 5m, e.g. 10s",
		"MMCONNECT_REVERIFY_INTERVAL":         "must be 0 (off) or a duration from 10s to 720h, e.g. 6h",
		"MMCONNECT_REVOKED_RETENTION":         "must be 0 (keep forever) or a duration of at least 48h, e.g. 720h",
		"MMCONNECT_DB_STATEMENT_TIMEOUT":      "must be a duration from 100ms to 10m, e.g. 5s",
		"MMCONNECT_ACCESS_LOG_FLUSH_INTERVAL": "must be 0 (each line at once) or a duration from 1ms to 10s, e.g. 100ms",
	} {
		_, err := Load(env(map[string]string{name: "1ns"}))
		if err == nil || err.Error() != name+": "+want {
			t.Errorf("%s=1ns: %v; want %q", name, err, want)
		}
	}
}
