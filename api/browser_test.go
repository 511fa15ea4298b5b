package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The Connect page in a real headless Chromium (Debian's chromium), in an
// iframe of an app page on another origin, as an app would embed it.

// chromiumPath finds the browser; CI installs it and must not skip.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("MMCONNECT_CHROMIUM"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (CI must install it: apt-get install chromium)")
	}
	t.Skip("chromium is not installed")
	return ""
}

type browserEnv struct {
	h        *harness
	api      *httptest.Server
	parent   *httptest.Server
	origin   string // the app's origin, embedding the page
	posts    atomic.Int64
	ctx      context.Context
	t        *testing.T
	shotName string
}

const parentPage = `<!doctype html><html><body>
<h1>The app</h1>
<iframe id="mm" width="420" height="760" src="%s"></iframe>
<script>
window.__msgs = [];
window.addEventListener("message", function (e) {
  if (e.origin === %q) { window.__msgs.push(e.data); }
});
</script></body></html>`

func newBrowserEnv(t *testing.T) *browserEnv {
	t.Helper()
	path := chromiumPath(t)
	apiLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	parentLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &browserEnv{t: t}
	apiURL := "http://" + apiLn.Addr().String()
	// "localhost" and "127.0.0.1" are different origins (and sites).
	b.origin = "http://localhost:" + fmt.Sprint(parentLn.Addr().(*net.TCPAddr).Port)
	b.h = newHarnessWith(t, harnessOptions{publicURL: apiURL, origins: []string{b.origin}})

	b.api = &httptest.Server{Listener: apiLn, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/connections" {
			b.posts.Add(1)
		}
		b.h.handler.ServeHTTP(w, r)
	})}}
	b.api.Start()
	t.Cleanup(b.api.Close)

	b.parent = &httptest.Server{Listener: parentLn, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, parentPage, r.URL.Query().Get("connect_url"), "http://"+apiLn.Addr().String())
	})}}
	b.parent.Start()
	t.Cleanup(b.parent.Close)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("headless", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1024, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	b.ctx = ctx
	return b
}

// fail saves a screenshot of the app page and names its path.
func (b *browserEnv) fail(format string, args ...any) {
	b.t.Helper()
	shot := filepath.Join(os.TempDir(), "mmconnect-"+regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(b.t.Name(), "-")+".png")
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil && os.WriteFile(shot, png, 0o644) == nil {
		b.t.Fatalf(format+"\nscreenshot: %s", append(args, shot)...)
	}
	b.t.Fatalf(format+"\n(no screenshot could be taken)", args...)
}

// openEmbedded loads the app page embedding connectURL and returns a
// context driving the Connect page's frame.
func (b *browserEnv) openEmbedded(connectURL string) context.Context {
	b.t.Helper()
	page := strings.Replace(b.parent.URL, "127.0.0.1", "localhost", 1) + "/?connect_url=" + url.QueryEscape(connectURL)
	if err := chromedp.Do(b.ctx, chromedp.Navigate(page)); err != nil {
		b.fail("open the app page: %v", err)
	}
	// The frame is on another site, so Chromium runs it as its own target.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		targets, err := chromedp.Targets(b.ctx)
		if err != nil {
			b.fail("list targets: %v", err)
		}
		for _, ti := range targets {
			if ti.Type == "iframe" && strings.HasPrefix(ti.URL, b.api.URL+"/connect") {
				frame, cancel := chromedp.NewContext(b.ctx, chromedp.WithTargetID(ti.TargetID))
				b.t.Cleanup(cancel)
				return frame
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.fail("the Connect page frame never appeared")
	return nil
}

// messages are what the app page received from the Connect page.
func (b *browserEnv) messages() []map[string]any {
	b.t.Helper()
	raw, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`JSON.stringify(window.__msgs || [])`))
	if err != nil {
		b.fail("read messages: %v", err)
	}
	var out []map[string]any
	json.Unmarshal([]byte(raw), &out)
	return out
}

func (b *browserEnv) waitMessage(kind string) map[string]any {
	b.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range b.messages() {
			if m["type"] == kind {
				return m
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.fail("no %s message; got %v", kind, b.messages())
	return nil
}

func do(b *browserEnv, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail("%s: %v", what, err)
	}
}

func get[T any](b *browserEnv, ctx context.Context, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fail("%s: %v", what, err)
	}
	return v
}

func text(b *browserEnv, ctx context.Context, css string) string {
	b.t.Helper()
	return get(b, ctx, "read "+css, chromedp.Text(chromedp.CSS(css)))
}

func attr(b *browserEnv, ctx context.Context, css, name string) string {
	b.t.Helper()
	return get(b, ctx, "read "+css+"["+name+"]", chromedp.AttributeValue(chromedp.CSS(css), name)).Value
}

func (b *browserEnv) fill(frame context.Context, serverURL, token string) {
	b.t.Helper()
	do(b, frame, "fill the form",
		chromedp.WaitVisible(chromedp.CSS("#server_url")),
		chromedp.SendKeys(chromedp.CSS("#server_url"), serverURL),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#connect")),
	)
}

func TestBrowserConnectsInAnIframe(t *testing.T) {
	b := newBrowserEnv(t)
	_, tok := b.h.openSession("browser-user")
	frame := b.openEmbedded(b.h.lastConnectURL)
	b.waitMessage("mmconnect:ready")

	do(b, frame, "wait for the form", chromedp.WaitVisible(chromedp.CSS("#server_url")))
	title := text(b, frame, "#title")
	href := get(b, frame, "read location", chromedp.Evaluate[string](`location.href`))
	if tokenType := attr(b, frame, "#token", "type"); title != "Connect your Mattermost account" || tokenType != "password" {
		b.fail("title %q, token input type %q", title, tokenType)
	}
	if strings.Contains(href, "session=") || strings.Contains(href, tok) {
		b.fail("the session stays in the address bar: %s", href)
	}
	for _, want := range []string{"Server URL", "Personal Access Token", "Profile → Security → Personal Access Tokens", "System Admin"} {
		if body := text(b, frame, "#form"); !strings.Contains(body, want) {
			b.fail("the form does not say %q", want)
		}
	}
	if ph := attr(b, frame, "#server_url", "placeholder"); ph != "mattermost.example.com" {
		b.fail("placeholder %q", ph)
	}
	do(b, frame, "show the token", chromedp.Click(chromedp.CSS("#toggle")))
	if tokenType := attr(b, frame, "#token", "type"); tokenType != "text" {
		b.fail("show toggle left the token %q", tokenType)
	}

	b.fill(frame, b.h.mm.URL, tokenA)
	do(b, frame, "wait for success", chromedp.WaitVisible(chromedp.CSS("#done-text")))
	if done, want := text(b, frame, "#done-text"), "You are now connected to Mattermost as @alice on "+b.h.mm.URL; done != want {
		b.fail("success text %q, want %q", done, want)
	}
	msg := b.waitMessage("mmconnect:connected")
	conn, _ := msg["connection"].(map[string]any)
	if conn == nil || conn["end_user_id"] != "browser-user" || conn["status"] != "active" {
		b.fail("connected message = %v", msg)
	}
	raw, _ := json.Marshal(b.messages())
	if strings.Contains(string(raw), tokenA) || strings.Contains(string(raw), tok) {
		b.fail("a message carries a token: %s", raw)
	}
	if got := b.h.do("GET", "/connections/"+conn["id"].(string), nil).json(t); got["end_user_id"] != "browser-user" {
		t.Fatalf("stored connection = %v", got)
	}
}

func TestBrowserShowsRejectedTokenAtTheField(t *testing.T) {
	b := newBrowserEnv(t)
	b.h.openSession("browser-user")
	frame := b.openEmbedded(b.h.lastConnectURL)
	b.waitMessage("mmconnect:ready")
	b.fill(frame, b.h.mm.URL, unknownT)
	do(b, frame, "wait for the token error", chromedp.WaitVisible(chromedp.CSS("#token-error")))
	msgText := text(b, frame, "#token-error")
	invalid := attr(b, frame, "#token", "aria-invalid")
	describedBy := attr(b, frame, "#token", "aria-describedby")
	if !strings.Contains(msgText, "did not accept this token") || invalid != "true" || !strings.Contains(describedBy, "token-error") {
		b.fail("token error %q, aria-invalid %q, aria-describedby %q", msgText, invalid, describedBy)
	}
	if msg := b.waitMessage("mmconnect:error"); msg["code"] != "token_rejected" {
		b.fail("error message = %v", msg)
	}
	if get(b, frame, "read #connect[disabled]", chromedp.AttributeValue(chromedp.CSS("#connect"), "disabled")).Exists {
		b.fail("Connect stays disabled after the answer")
	}
	do(b, frame, "press Cancel", chromedp.Click(chromedp.CSS("#cancel")))
	b.waitMessage("mmconnect:closed")
}

func TestBrowserFlagsMalformedServerURLWithoutARequest(t *testing.T) {
	b := newBrowserEnv(t)
	b.h.openSession("browser-user")
	frame := b.openEmbedded(b.h.lastConnectURL)
	b.waitMessage("mmconnect:ready")
	before := b.h.mm.Requests()
	b.fill(frame, "https://mattermost.example.com/?team=x", tokenA)
	do(b, frame, "wait for the server URL error", chromedp.WaitVisible(chromedp.CSS("#server_url-error")))
	msgText := text(b, frame, "#server_url-error")
	invalid := attr(b, frame, "#server_url", "aria-invalid")
	focused := get(b, frame, "read focus", chromedp.Evaluate[string](`document.activeElement.id`))
	if !strings.Contains(msgText, "query") || invalid != "true" || focused != "server_url" {
		b.fail("server URL error %q, aria-invalid %q, focus on %q", msgText, invalid, focused)
	}
	if n := b.posts.Load(); n != 0 {
		b.fail("%d POST /connections sent for a malformed URL", n)
	}
	if b.h.mm.Requests() != before {
		b.fail("Mattermost was called")
	}
}

func TestBrowserExpiredSession(t *testing.T) {
	b := newBrowserEnv(t)
	b.h.openSession("browser-user")
	b.h.advance(31 * time.Minute)
	frame := b.openEmbedded(b.h.lastConnectURL)
	do(b, frame, "wait for the expiry page", chromedp.WaitVisible(chromedp.CSS("#stop-text")))
	title := text(b, frame, "#title")
	forms := get(b, frame, "count form elements", chromedp.Evaluate[int](`document.querySelectorAll("form, input").length`))
	if !strings.Contains(title, "expired") || forms != 0 {
		b.fail("title %q with %d form elements, want the expiry page without a form", title, forms)
	}
}

// The page stays readable at 360 px: nothing scrolls sideways.
func TestBrowserNarrowScreen(t *testing.T) {
	b := newBrowserEnv(t)
	b.h.openSession("browser-user")
	b.h.connect(tokenA, strp("browser-user")) // a long "already connected" note
	do(b, b.ctx, "open the page at 360 px",
		chromedp.EmulateViewport(360, 740),
		chromedp.Navigate(b.h.lastConnectURL),
		chromedp.WaitVisible(chromedp.CSS("#existing-text")),
	)
	scrollWidth := get(b, b.ctx, "scroll width", chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
	clientWidth := get(b, b.ctx, "client width", chromedp.Evaluate[int](`document.documentElement.clientWidth`))
	if scrollWidth > clientWidth {
		b.fail("page is %d px wide in a %d px viewport", scrollWidth, clientWidth)
	}
}
