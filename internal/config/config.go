// Package config reads mmconnect's settings from the environment once, at
// start, and refuses bad values with one line naming the variable.
package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mmconnect/mmconnect/internal/logging"
	"github.com/mmconnect/mmconnect/internal/secret"
	"github.com/mmconnect/mmconnect/internal/webhook"
)

// MinAPIKeyLength keeps API keys out of brute-force reach.
const MinAPIKeyLength = 32

// Config is the effective configuration.
type Config struct {
	Addr        string
	DataDir     string
	DatabaseURL string // as given, or the default sqlite path
	// SQLitePath is set when the database is SQLite; PostgresURL when it is
	// PostgreSQL (the scale-out mode: several replicas on one database).
	SQLitePath  string
	PostgresURL string
	// DBMaxConns and DBStatementTimeout bound what one replica asks of
	// PostgreSQL.
	DBMaxConns         int
	DBStatementTimeout time.Duration

	// APIKeys are the keys given in MMCONNECT_API_KEYS, each plain or
	// "name:key" (secret.ParseNamedKey); empty means a key
	// file in the data dir is used (APIKeyFile).
	APIKeys    []string
	APIKeyFile string

	// EncryptionKeys are the decoded MMCONNECT_ENCRYPTION_KEYS (or the one
	// MMCONNECT_ENCRYPTION_KEY): the first seals, every one opens. Empty
	// means a key file in the data dir is used (EncryptionKeyFile).
	EncryptionKeys    [][]byte
	EncryptionKeyFile string

	// PublicURL is where browsers reach mmconnect; PublicURLDefaulted says
	// it was derived from Addr (its port is filled in once listening).
	PublicURL          string
	PublicURLDefaulted bool
	// AllowedOrigins may embed the Connect page, receive its messages and
	// call the API from a browser.
	AllowedOrigins []string
	SessionTTL     time.Duration

	AllowHTTP bool
	// AllowedNetworks may be called although they are private or reserved
	// (self-hosted Mattermost servers on an internal network).
	AllowedNetworks []netip.Prefix
	UpstreamCAFile  string
	UpstreamTimeout time.Duration
	// UpstreamHostConcurrency bounds requests in flight to one host, across
	// every caller of the outside world in this replica.
	UpstreamHostConcurrency int

	// ReverifyInterval is how old a connection's last check may grow before
	// the background sweep checks it again; zero turns the sweep off.
	ReverifyInterval    time.Duration
	ReverifyConcurrency int

	// WebhookURL receives events, signed with WebhookSecrets (the decoded
	// keys of MMCONNECT_WEBHOOK_SECRET); empty turns webhooks off.
	WebhookURL     string
	WebhookSecrets [][]byte

	// RevokeUpstream makes a revoke also revoke the token in Mattermost.
	RevokeUpstream bool
	// RevokedRetention is how long a revoked connection is kept; zero
	// keeps it forever.
	RevokedRetention time.Duration

	// AppName names the app on the Connect page; HelpURL (https) links to
	// the app's own help there.
	AppName string
	HelpURL string

	// RateLimits says whether connects and verifies are rate-limited, and
	// how much per API key, per connect session and per client address.
	RateLimits                                     bool
	RatePerAPIKey, RatePerSession, RatePerClientIP Rate
	// TrustedProxies may set X-Forwarded-For.
	TrustedProxies []netip.Prefix
	// MaxConnectionsPerEndUser caps one end user's live connections.
	MaxConnectionsPerEndUser int
	// AuditRetention is how long audit events are kept; zero keeps them.
	AuditRetention time.Duration

	// LogLevel is the least level logged.
	LogLevel slog.Level
	// AccessLogFlushInterval is how long the access log's lines may be
	// held to be written out together; zero writes each at once.
	AccessLogFlushInterval time.Duration

	// MetricsToken, when set, guards GET /metrics instead of an API key;
	// MetricsAddr, when set, serves it on a listener of its own.
	MetricsToken string
	MetricsAddr  string

	// The proxy: whether paths that mint or reveal credentials pass, the
	// largest request body, and how long to wait for an answer's headers.
	ProxyAllowTokenPaths bool
	ProxyMaxBody         int64
	ProxyTimeout         time.Duration
}

// Rate is N requests per Period ("20/s", "10/m", "100/h").
type Rate struct {
	N      int
	Period time.Duration
}

func (r Rate) String() string { return fmt.Sprintf("%d per %s", r.N, r.Period) }

// parseRate reads "N/s", "N/m" or "N/h".
func parseRate(get func(name, def string) string, name, def string) (Rate, error) {
	v := get(name, def)
	n, unit, ok := strings.Cut(v, "/")
	periods := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}
	count, err := strconv.Atoi(n)
	if !ok || err != nil || count < 1 || count > 1_000_000 || periods[unit] == 0 {
		return Rate{}, &Error{name, fmt.Sprintf("%q is not a rate like 20/s, 10/m or 100/h", v)}
	}
	return Rate{N: count, Period: periods[unit]}, nil
}

// Error names the variable whose value is bad.
type Error struct {
	Var     string
	Problem string
}

func (e *Error) Error() string { return e.Var + ": " + e.Problem }

// Load reads the configuration through getenv and validates it.
func Load(getenv func(string) string) (Config, error) {
	get := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	c := Config{
		Addr:    get("MMCONNECT_ADDR", ":8080"),
		DataDir: get("MMCONNECT_DATA_DIR", "./data"),
	}
	if _, port, err := net.SplitHostPort(c.Addr); err != nil {
		return Config{}, &Error{"MMCONNECT_ADDR", fmt.Sprintf("%q is not host:port (e.g. :8080 or 127.0.0.1:8080)", c.Addr)}
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return Config{}, &Error{"MMCONNECT_ADDR", fmt.Sprintf("port %q is not a number from 0 to 65535", port)}
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return Config{}, &Error{"MMCONNECT_DATA_DIR", err.Error()}
	}
	c.DataDir = abs

	c.DatabaseURL = get("MMCONNECT_DATABASE_URL", "")
	switch {
	case c.DatabaseURL == "":
		c.SQLitePath = filepath.Join(c.DataDir, "mmconnect.db")
		c.DatabaseURL = "sqlite://" + c.SQLitePath
	case strings.HasPrefix(c.DatabaseURL, "sqlite://"):
		p := strings.TrimPrefix(c.DatabaseURL, "sqlite://")
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#") {
			return Config{}, &Error{"MMCONNECT_DATABASE_URL", "a sqlite URL must name an absolute file path: sqlite:///abs/path.db"}
		}
		c.SQLitePath = filepath.Clean(p)
	case strings.HasPrefix(c.DatabaseURL, "postgres://") || strings.HasPrefix(c.DatabaseURL, "postgresql://"):
		u, err := url.Parse(c.DatabaseURL)
		if err != nil || u.Host == "" {
			return Config{}, &Error{"MMCONNECT_DATABASE_URL", "not a valid postgres:// URL (e.g. postgres://user:pass@db:5432/mmconnect?sslmode=require)"}
		}
		c.PostgresURL = c.DatabaseURL
	default:
		scheme := c.DatabaseURL
		if u, err := url.Parse(c.DatabaseURL); err == nil && u.Scheme != "" {
			scheme = u.Scheme + "://"
		}
		return Config{}, &Error{"MMCONNECT_DATABASE_URL", fmt.Sprintf("unsupported database %q: use sqlite:///abs/path.db or postgres://…", scheme)}
	}
	if c.DBMaxConns, err = intVar(get, "MMCONNECT_DB_MAX_CONNS", 10, 1, 1000); err != nil {
		return Config{}, err
	}
	if c.DBStatementTimeout, err = durationVar(get, "MMCONNECT_DB_STATEMENT_TIMEOUT", "5s", 100*time.Millisecond, 10*time.Minute, ""); err != nil {
		return Config{}, err
	}

	if v := get("MMCONNECT_API_KEYS", ""); v != "" {
		names := map[string]bool{}
		for i, k := range strings.Split(v, ",") {
			k = strings.TrimSpace(k)
			name, key := secret.ParseNamedKey(k)
			if len(key) < MinAPIKeyLength {
				return Config{}, &Error{"MMCONNECT_API_KEYS", fmt.Sprintf("key %d is %d characters; each key needs at least %d", i+1, len(key), MinAPIKeyLength)}
			}
			if names[name] {
				return Config{}, &Error{"MMCONNECT_API_KEYS", fmt.Sprintf("key %d is named %q like an earlier one; names must differ", i+1, name)}
			}
			names[name] = true
			c.APIKeys = append(c.APIKeys, k)
		}
	} else if c.PostgresURL != "" {
		return Config{}, &Error{"MMCONNECT_API_KEYS", "must be set with a PostgreSQL database: every replica must accept the same keys"}
	} else {
		c.APIKeyFile = filepath.Join(c.DataDir, "api-key")
	}

	one, many := get("MMCONNECT_ENCRYPTION_KEY", ""), get("MMCONNECT_ENCRYPTION_KEYS", "")
	switch {
	case one != "" && many != "":
		return Config{}, &Error{"MMCONNECT_ENCRYPTION_KEYS", "set either MMCONNECT_ENCRYPTION_KEYS or MMCONNECT_ENCRYPTION_KEY, not both"}
	case one != "":
		k, err := secret.ParseKey(one)
		if err != nil {
			return Config{}, &Error{"MMCONNECT_ENCRYPTION_KEY", "must be base64 of 32 random bytes (e.g. openssl rand -base64 32): it " + err.Error()}
		}
		c.EncryptionKeys = [][]byte{k}
	case many != "":
		for i, part := range strings.Split(many, ",") {
			k, err := secret.ParseKey(part)
			if err != nil {
				return Config{}, &Error{"MMCONNECT_ENCRYPTION_KEYS", fmt.Sprintf("key %d must be base64 of 32 random bytes (e.g. openssl rand -base64 32): it %s", i+1, err)}
			}
			c.EncryptionKeys = append(c.EncryptionKeys, k)
		}
	case c.PostgresURL != "":
		return Config{}, &Error{"MMCONNECT_ENCRYPTION_KEY", "must be set with a PostgreSQL database: every replica must open the same tokens"}
	default:
		c.EncryptionKeyFile = filepath.Join(c.DataDir, "encryption-key")
	}

	if c.AllowHTTP, err = boolVar(get, "MMCONNECT_ALLOW_HTTP", false); err != nil {
		return Config{}, err
	}
	if v := get("MMCONNECT_PUBLIC_URL", ""); v != "" {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return Config{}, &Error{"MMCONNECT_PUBLIC_URL", fmt.Sprintf("%q is not an http(s) URL like https://connect.example.com", v)}
		}
		c.PublicURL = strings.TrimSuffix(u.String(), "/")
	} else {
		_, port, _ := net.SplitHostPort(c.Addr)
		c.PublicURL = "http://localhost:" + port
		c.PublicURLDefaulted = true
	}
	if v := get("MMCONNECT_ALLOWED_ORIGINS", ""); v != "" {
		for _, part := range strings.Split(v, ",") {
			o, err := ParseOrigin(strings.TrimSpace(part))
			if err != nil {
				return Config{}, &Error{"MMCONNECT_ALLOWED_ORIGINS", err.Error()}
			}
			c.AllowedOrigins = append(c.AllowedOrigins, o)
		}
	}
	if c.SessionTTL, err = durationVar(get, "MMCONNECT_SESSION_TTL", "30m", time.Minute, 24*time.Hour, ""); err != nil {
		return Config{}, err
	}
	if c.AllowedNetworks, err = prefixesVar(get, "MMCONNECT_ALLOWED_NETWORKS"); err != nil {
		return Config{}, err
	}
	if v := get("MMCONNECT_UPSTREAM_CA_FILE", ""); v != "" {
		if st, err := os.Stat(v); err != nil || st.IsDir() {
			return Config{}, &Error{"MMCONNECT_UPSTREAM_CA_FILE", fmt.Sprintf("%s is not a readable file", v)}
		}
		c.UpstreamCAFile = v
	}
	if c.UpstreamTimeout, err = durationVar(get, "MMCONNECT_UPSTREAM_TIMEOUT", "10s", 100*time.Millisecond, 5*time.Minute, ""); err != nil {
		return Config{}, err
	}
	if c.UpstreamHostConcurrency, err = intVar(get, "MMCONNECT_UPSTREAM_HOST_CONCURRENCY", 8, 1, 1024); err != nil {
		return Config{}, err
	}

	if c.ReverifyInterval, err = durationVar(get, "MMCONNECT_REVERIFY_INTERVAL", "6h", 10*time.Second, 30*24*time.Hour, "off"); err != nil {
		return Config{}, err
	}
	if c.ReverifyConcurrency, err = intVar(get, "MMCONNECT_REVERIFY_CONCURRENCY", 4, 1, 64); err != nil {
		return Config{}, err
	}

	if v := get("MMCONNECT_WEBHOOK_URL", ""); v != "" {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
			return Config{}, &Error{"MMCONNECT_WEBHOOK_URL", "must be an http(s) URL like https://app.example.com/hooks/mmconnect"}
		}
		c.WebhookURL = v
		secrets, err := webhook.Secrets(get("MMCONNECT_WEBHOOK_SECRET", ""))
		if err != nil {
			return Config{}, &Error{"MMCONNECT_WEBHOOK_SECRET", err.Error()}
		}
		c.WebhookSecrets = secrets
	} else if get("MMCONNECT_WEBHOOK_SECRET", "") != "" {
		return Config{}, &Error{"MMCONNECT_WEBHOOK_SECRET", "is set but MMCONNECT_WEBHOOK_URL is not; set both, or neither"}
	}

	if c.RevokeUpstream, err = boolVar(get, "MMCONNECT_REVOKE_UPSTREAM", true); err != nil {
		return Config{}, err
	}
	if c.RevokedRetention, err = durationVar(get, "MMCONNECT_REVOKED_RETENTION", "720h", 48*time.Hour, 0, "keep forever"); err != nil {
		return Config{}, err
	}

	c.AppName = get("MMCONNECT_APP_NAME", "this app")
	if utf8.RuneCountInString(c.AppName) > 80 || strings.ContainsFunc(c.AppName, unicode.IsControl) {
		return Config{}, &Error{"MMCONNECT_APP_NAME", "must be at most 80 characters without control characters"}
	}
	if v := get("MMCONNECT_HELP_URL", ""); v != "" {
		u, err := url.Parse(v)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
			return Config{}, &Error{"MMCONNECT_HELP_URL", fmt.Sprintf("%q is not an https:// URL like https://app.example.com/help/mattermost", v)}
		}
		c.HelpURL = u.String()
	}

	switch v := get("MMCONNECT_RATE_LIMITS", "on"); v {
	case "on":
		c.RateLimits = true
	case "off":
	default:
		return Config{}, &Error{"MMCONNECT_RATE_LIMITS", fmt.Sprintf("%q is not on or off", v)}
	}
	if c.RatePerAPIKey, err = parseRate(get, "MMCONNECT_RATE_LIMIT_PER_API_KEY", "20/s"); err != nil {
		return Config{}, err
	}
	if c.RatePerSession, err = parseRate(get, "MMCONNECT_RATE_LIMIT_PER_SESSION", "10/m"); err != nil {
		return Config{}, err
	}
	if c.RatePerClientIP, err = parseRate(get, "MMCONNECT_RATE_LIMIT_PER_IP", "30/m"); err != nil {
		return Config{}, err
	}
	if c.TrustedProxies, err = prefixesVar(get, "MMCONNECT_TRUSTED_PROXIES"); err != nil {
		return Config{}, err
	}
	if c.MaxConnectionsPerEndUser, err = intVar(get, "MMCONNECT_MAX_CONNECTIONS_PER_END_USER", 25, 1, 100_000); err != nil {
		return Config{}, err
	}
	if c.AuditRetention, err = durationVar(get, "MMCONNECT_AUDIT_RETENTION", "2160h", time.Hour, 0, "keep forever"); err != nil {
		return Config{}, err
	}

	if c.ProxyAllowTokenPaths, err = boolVar(get, "MMCONNECT_PROXY_ALLOW_TOKEN_PATHS", false); err != nil {
		return Config{}, err
	}
	if c.ProxyMaxBody, err = parseSize(get("MMCONNECT_PROXY_MAX_BODY", "100MiB")); err != nil || c.ProxyMaxBody < 1<<10 {
		return Config{}, &Error{"MMCONNECT_PROXY_MAX_BODY", "must be a size of at least 1KiB, e.g. 100MiB, 512KiB or 1048576"}
	}
	if c.ProxyTimeout, err = durationVar(get, "MMCONNECT_PROXY_TIMEOUT", "30s", 100*time.Millisecond, 10*time.Minute, ""); err != nil {
		return Config{}, err
	}

	if c.LogLevel, err = logging.ParseLevel(get("MMCONNECT_LOG_LEVEL", "info")); err != nil {
		return Config{}, &Error{"MMCONNECT_LOG_LEVEL", err.Error()}
	}
	if c.AccessLogFlushInterval, err = durationVar(get, "MMCONNECT_ACCESS_LOG_FLUSH_INTERVAL", "100ms", time.Millisecond, 10*time.Second, "each line at once"); err != nil {
		return Config{}, err
	}
	c.MetricsToken = get("MMCONNECT_METRICS_TOKEN", "")
	if c.MetricsToken != "" && len(c.MetricsToken) < 16 {
		return Config{}, &Error{"MMCONNECT_METRICS_TOKEN", "must be at least 16 characters"}
	}
	if v := get("MMCONNECT_METRICS_ADDR", ""); v != "" {
		if _, _, err := net.SplitHostPort(v); err != nil {
			return Config{}, &Error{"MMCONNECT_METRICS_ADDR", fmt.Sprintf("%q is not host:port (e.g. 127.0.0.1:9090)", v)}
		}
		c.MetricsAddr = v
	}
	return c, nil
}

// parseSize reads bytes, or a number with KiB, MiB or GiB.
func parseSize(v string) (int64, error) {
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if n, ok := strings.CutSuffix(v, suffix); ok {
			v, mult = strings.TrimSpace(n), m
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("bad size %q", v)
	}
	return n * mult, nil
}

// durationVar reads a duration from lo to hi (no upper bound when hi is
// 0). With zero set, 0 is allowed too and means zero ("off", "keep
// forever").
func durationVar(get func(name, def string) string, name, def string, lo, hi time.Duration, zero string) (time.Duration, error) {
	d, err := time.ParseDuration(get(name, def))
	ok := err == nil && d >= lo && (hi == 0 || d <= hi)
	if zero != "" && err == nil && d == 0 {
		ok = true
	}
	if ok {
		return d, nil
	}
	span := "from " + shortDuration(lo) + " to " + shortDuration(hi)
	if hi == 0 {
		span = "of at least " + shortDuration(lo)
	}
	msg := "must be a duration " + span + ", e.g. " + def
	if zero != "" {
		msg = "must be 0 (" + zero + ") or a duration " + span + ", e.g. " + def
	}
	return 0, &Error{name, msg}
}

// shortDuration writes 24h and 10m rather than 24h0m0s and 10m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// prefixesVar reads comma-separated CIDR ranges, masked; nil when unset.
func prefixesVar(get func(name, def string) string, name string) ([]netip.Prefix, error) {
	v := get(name, "")
	if v == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, part := range strings.Split(v, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(part))
		if err != nil {
			return nil, &Error{name, fmt.Sprintf("%q is not a CIDR range (e.g. 10.0.0.0/8 or fd00::/8)", strings.TrimSpace(part))}
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// intVar reads a whole number from lo to hi.
func intVar(get func(name, def string) string, name string, def, lo, hi int) (int, error) {
	n, err := strconv.Atoi(get(name, strconv.Itoa(def)))
	if err != nil || n < lo || n > hi {
		return 0, &Error{name, fmt.Sprintf("must be a whole number from %d to %d", lo, hi)}
	}
	return n, nil
}

// boolVar reads true or false.
func boolVar(get func(name, def string) string, name string, def bool) (bool, error) {
	v := get(name, strconv.FormatBool(def))
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, &Error{name, fmt.Sprintf("%q is not true or false", v)}
	}
	return b, nil
}

// ParseOrigin checks a web origin (scheme://host[:port], nothing else) and
// returns it normalised: lower case, no default port.
func ParseOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("%q is not an origin like https://app.example.com (scheme, host and optional port only)", s)
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q has an invalid port", s)
		}
		host += ":" + port
	}
	return strings.ToLower(u.Scheme) + "://" + host, nil
}

// PublicURLInClear reports whether browsers would send tokens over plain
// HTTP to a host that is not this machine.
func (c Config) PublicURLInClear() bool {
	u, err := url.Parse(c.PublicURL)
	if err != nil || u.Scheme != "http" {
		return false
	}
	return !isThisMachine(u.Hostname())
}

// MetricsOpenToOthers reports whether /metrics is served with no token on
// a listener of its own that other machines may reach (any address but
// loopback, all interfaces included).
func (c Config) MetricsOpenToOthers() bool {
	if c.MetricsAddr == "" || c.MetricsToken != "" {
		return false
	}
	host, _, err := net.SplitHostPort(c.MetricsAddr)
	return err != nil || !isThisMachine(host)
}

// isThisMachine reports whether host names this machine alone: localhost
// (and its subdomains) or a loopback address.
func isThisMachine(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// LogValue shows the configuration with every secret masked: the number of
// API keys and where key files live, never a key. Durations read as the
// variables are written ("30m0s"), not as slog's count of nanoseconds.
func (c Config) LogValue() slog.Value {
	apiKeys := fmt.Sprintf("%d key(s) from MMCONNECT_API_KEYS", len(c.APIKeys))
	if c.APIKeyFile != "" {
		apiKeys = "file " + c.APIKeyFile
	}
	ids := make([]string, len(c.EncryptionKeys))
	for i, k := range c.EncryptionKeys {
		ids[i] = secret.KeyID(k)
	}
	enc := "from the environment (key ids " + strings.Join(ids, ", ") + "; the first seals)"
	if c.EncryptionKeyFile != "" {
		enc = "file " + c.EncryptionKeyFile
	}
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.String("data_dir", c.DataDir),
		slog.String("database", maskURL(c.DatabaseURL)),
		slog.Int("db_max_conns", c.DBMaxConns),
		slog.String("db_statement_timeout", c.DBStatementTimeout.String()),
		slog.String("api_keys", apiKeys),
		slog.String("encryption_key", enc),
		slog.String("public_url", c.PublicURL),
		slog.Any("allowed_origins", c.AllowedOrigins),
		slog.String("session_ttl", c.SessionTTL.String()),
		slog.Bool("allow_http", c.AllowHTTP),
		slog.Any("allowed_networks", c.AllowedNetworks),
		slog.String("upstream_ca_file", c.UpstreamCAFile),
		slog.String("upstream_timeout", c.UpstreamTimeout.String()),
		slog.Int("upstream_host_concurrency", c.UpstreamHostConcurrency),
		slog.String("reverify_interval", c.ReverifyInterval.String()),
		slog.Int("reverify_concurrency", c.ReverifyConcurrency),
		slog.String("webhook_url", webhookTarget(c.WebhookURL)),
		slog.Int("webhook_secrets", len(c.WebhookSecrets)),
		slog.Bool("revoke_upstream", c.RevokeUpstream),
		slog.String("revoked_retention", c.RevokedRetention.String()),
		slog.String("app_name", c.AppName),
		slog.String("help_url", c.HelpURL),
		slog.Bool("rate_limits", c.RateLimits),
		slog.String("rate_per_api_key", c.RatePerAPIKey.String()),
		slog.String("rate_per_session", c.RatePerSession.String()),
		slog.String("rate_per_ip", c.RatePerClientIP.String()),
		slog.Any("trusted_proxies", c.TrustedProxies),
		slog.Int("max_connections_per_end_user", c.MaxConnectionsPerEndUser),
		slog.String("audit_retention", c.AuditRetention.String()),
		slog.Bool("proxy_allow_token_paths", c.ProxyAllowTokenPaths),
		slog.Int64("proxy_max_body", c.ProxyMaxBody),
		slog.String("proxy_timeout", c.ProxyTimeout.String()),
		slog.String("log_level", c.LogLevel.String()),
		slog.String("access_log_flush_interval", c.AccessLogFlushInterval.String()),
		slog.Bool("metrics_token_set", c.MetricsToken != ""),
		slog.String("metrics_addr", c.MetricsAddr),
	)
}

// webhookTarget shows where webhooks go without userinfo or query, which
// may hold the receiver's credentials.
func webhookTarget(s string) string {
	u, err := url.Parse(s)
	if err != nil || s == "" {
		return s
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// maskURL hides a password in a database URL.
func maskURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
