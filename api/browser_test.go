package api_test

import (
	"context"
	"encoding/json"
	"errors"
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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/mmconnect/mmconnect/internal/connection"
	"github.com/mmconnect/mmconnect/internal/mattermost/mattermosttest"
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
	// console collects what any page or frame printed to the console or
	// threw: the page must print nothing in any state.
	consoleMu sync.Mutex
	console   []string
	// expectProblems: the test provokes problem answers to POST
	// /connections, which Chromium logs as failed loads.
	expectProblems atomic.Bool
}

// parentPage is the app's page: it embeds connect_url in an iframe, or
// (with ?sdk=1) imports mmconnect's sdk.js and waits for a click.
const parentPage = `<!doctype html><html><head><link rel="icon" href="data:,"></head><body>
<h1>The app</h1>
<iframe id="mm" width="420" height="760" src="%s"></iframe>
<script>
window.__msgs = [];
window.addEventListener("message", function (e) {
  if (e.origin === %q) { window.__msgs.push(e.data); }
});
</script></body></html>`

const sdkPage = `<!doctype html><html><head><link rel="icon" href="data:,"></head><body>
<h1>The app</h1>
<button id="popup">Connect (popup)</button> <button id="iframe">Connect (iframe)</button>
<div id="container"></div>
<script type="module">
import { openConnect } from %q;
window.__events = [];
function start(mode) {
  window.__result = null;
  openConnect(%q, { mode: mode, container: document.getElementById("container"),
    onEvent: function (e) { window.__events.push(e); } })
    .then(function (c) { window.__result = { ok: c }; }, function (e) { window.__result = { err: e }; });
}
document.getElementById("popup").addEventListener("click", function () { start("popup"); });
document.getElementById("iframe").addEventListener("click", function () { start("iframe"); });
document.body.dataset.ready = "1";
</script></body></html>`

func newBrowserEnv(t *testing.T) *browserEnv {
	return newBrowserEnvWith(t, harnessOptions{})
}

func newBrowserEnvWith(t *testing.T, opts harnessOptions) *browserEnv {
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
	opts.publicURL, opts.origins = apiURL, []string{b.origin}
	b.h = newHarnessWith(t, opts)

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
		if r.URL.Query().Get("sdk") != "" {
			fmt.Fprintf(w, sdkPage, apiURL+"/connect/sdk.js", r.URL.Query().Get("connect_url"))
			return
		}
		fmt.Fprintf(w, parentPage, r.URL.Query().Get("connect_url"), apiURL)
	})}}
	b.parent.Start()
	t.Cleanup(b.parent.Close)

	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:],
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
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), allocOpts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	b.ctx = ctx
	b.listen(ctx)
	t.Cleanup(b.assertQuietConsole)
	return b
}

// listen records console output, exceptions and browser log entries
// (a failed load, a CSP violation) of one target.
func (b *browserEnv) listen(ctx context.Context) {
	record := func(s string) {
		b.consoleMu.Lock()
		b.console = append(b.console, s)
		b.consoleMu.Unlock()
	}
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			record(fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(parts, " ")))
		case *runtime.EventExceptionThrown:
			record(fmt.Sprintf("exception: %s %s", ev.ExceptionDetails.Text, exceptionDescription(ev.ExceptionDetails)))
		case *cdplog.EventEntryAdded:
			// Chromium logs every answer of 400 or more to fetch() itself;
			// a problem answer of the API that the test provoked is the
			// API doing its job, not the page printing anything.
			if ev.Entry.Source == "network" && strings.HasSuffix(ev.Entry.URL, "/connections") &&
				strings.Contains(ev.Entry.Text, "the server responded with a status of") && b.expectProblems.Load() {
				return
			}
			record(fmt.Sprintf("log %s %s: %s %s", ev.Entry.Level, ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
		}
	})
	if err != nil {
		b.t.Fatalf("listen to the browser: %v", err)
	}
}

func (b *browserEnv) assertQuietConsole() {
	b.consoleMu.Lock()
	defer b.consoleMu.Unlock()
	if len(b.console) > 0 {
		b.t.Errorf("the browser printed %d console messages, want none:\n%s", len(b.console), strings.Join(b.console, "\n"))
	}
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

// openApp loads the app page (embedding connectURL, or the SDK page) and
// returns once it has loaded.
func (b *browserEnv) openApp(query string) {
	b.t.Helper()
	page := strings.Replace(b.parent.URL, "127.0.0.1", "localhost", 1) + "/?" + query
	if err := chromedp.Do(b.ctx, chromedp.Navigate(page)); err != nil {
		b.fail("open the app page: %v", err)
	}
}

// target waits for a target of the kind whose URL starts with the Connect
// page's, and returns a context driving it.
func (b *browserEnv) target(kind string) context.Context {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		targets, err := chromedp.Targets(b.ctx)
		if err != nil {
			b.fail("list targets: %v", err)
		}
		for _, ti := range targets {
			if ti.Type == kind && strings.HasPrefix(ti.URL, b.api.URL+"/connect") {
				tctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithTargetID(ti.TargetID))
				b.t.Cleanup(cancel)
				b.listen(tctx)
				return tctx
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.fail("no %s target with the Connect page appeared", kind)
	return nil
}

// openEmbedded loads the app page embedding connectURL and returns a
// context driving the Connect page's frame (another site, so Chromium runs
// it as its own target).
func (b *browserEnv) openEmbedded(connectURL string) context.Context {
	b.t.Helper()
	b.openApp("connect_url=" + url.QueryEscape(connectURL))
	return b.target("iframe")
}

// waitState waits until the page says it is in state (html[data-state]).
func (b *browserEnv) waitState(ctx context.Context, state string) {
	b.t.Helper()
	expr := fmt.Sprintf(`document.documentElement.dataset.state === %q`, state)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.dataset.state`))
		b.fail("the page never reached state %q (it is %q): %v", state, got, err)
	}
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

// fill types into an empty form and submits it.
func (b *browserEnv) fill(frame context.Context, serverURL, token string) {
	b.t.Helper()
	b.waitState(frame, "form")
	b.clear(frame, "server_url")
	b.clear(frame, "token")
	do(b, frame, "fill the form",
		chromedp.SendKeys(chromedp.CSS("#server_url"), serverURL),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#connect")),
	)
}

// clear empties an input, as a person selecting all and deleting would.
func (b *browserEnv) clear(frame context.Context, id string) {
	b.t.Helper()
	get(b, frame, "clear #"+id, chromedp.Evaluate[bool](fmt.Sprintf(`(document.getElementById(%q).value = "") === ""`, id)))
}

func TestBrowserConnectsInAnIframe(t *testing.T) {
	b := newBrowserEnv(t)
	_, tok := b.h.openSession("browser-user")
	frame := b.openEmbedded(b.h.lastConnectURL)
	b.waitMessage("mmconnect:ready")
	b.waitState(frame, "form")

	title := text(b, frame, "#title")
	href := get(b, frame, "read location", chromedp.Evaluate[string](`location.href`))
	if tokenType := attr(b, frame, "#token", "type"); title != "Connect your Mattermost account" || tokenType != "password" {
		b.fail("title %q, token input type %q", title, tokenType)
	}
	if strings.Contains(href, "session=") || strings.Contains(href, tok) {
		b.fail("the session stays in the address bar: %s", href)
	}
	for _, want := range []string{"Server URL", "Personal Access Token", "whole address bar"} {
		if body := text(b, frame, "#form"); !strings.Contains(body, want) {
			b.fail("the form does not say %q", want)
		}
	}
	if purpose := text(b, frame, "#purpose"); !strings.Contains(purpose, "this app act as you in Mattermost") || !strings.Contains(purpose, "Profile → Security") {
		b.fail("the page does not say what the token grants: %q", purpose)
	}
	// The toggle's state is on the page (aria-pressed): wait for it, never
	// for time.
	do(b, frame, "show the token",
		chromedp.Click(chromedp.CSS("#toggle")),
		chromedp.WaitVisible(chromedp.CSS(`#toggle[aria-pressed="true"]`)))
	if tokenType := attr(b, frame, "#token", "type"); tokenType != "text" {
		b.fail("show toggle left the token %q", tokenType)
	}
	do(b, frame, "hide the token",
		chromedp.Click(chromedp.CSS("#toggle")),
		chromedp.WaitVisible(chromedp.CSS(`#toggle[aria-pressed="false"]`)))
	if tokenType := attr(b, frame, "#token", "type"); tokenType != "password" {
		b.fail("hide toggle left the token %q", tokenType)
	}

	// The whole address bar of a channel is fine.
	b.fill(frame, b.h.mm.URL+"/myteam/channels/town-square", tokenA)
	b.waitState(frame, "done")
	host := strings.TrimPrefix(b.h.mm.URL, "https://")
	if done, want := text(b, frame, "#done-text"), "Connected as @alice on "+host+"."; done != want {
		b.fail("success text %q, want %q", done, want)
	}
	if status := text(b, frame, "#status"); status != "" {
		b.fail("a second success message: %q", status)
	}
	if focused := get(b, frame, "read focus", chromedp.Evaluate[string](`document.activeElement.id`)); focused != "close" {
		b.fail("focus is on %q after connecting, want the Close button", focused)
	}
	msg := b.waitMessage("mmconnect:connected")
	conn, _ := msg["connection"].(map[string]any)
	if conn == nil || conn["end_user_id"] != "browser-user" || conn["status"] != "active" || conn["server_url"] != b.h.mm.URL {
		b.fail("connected message = %v", msg)
	}
	raw, _ := json.Marshal(b.messages())
	if strings.Contains(string(raw), tokenA) || strings.Contains(string(raw), tok) {
		b.fail("a message carries a token: %s", raw)
	}
	if got := b.h.do("GET", "/connections/"+conn["id"].(string), nil).json(t); got["end_user_id"] != "browser-user" {
		t.Fatalf("stored connection = %v", got)
	}
	do(b, frame, "press Close", chromedp.Click(chromedp.CSS("#close")))
	b.waitMessage("mmconnect:closed")
}

// The page shows the server's own message for each failure.
func TestBrowserShowsTheServersMessages(t *testing.T) {
	b := newBrowserEnv(t)
	b.expectProblems.Store(true)
	b.h.openSession("browser-user")
	frame := b.openEmbedded(b.h.lastConnectURL)
	b.waitMessage("mmconnect:ready")

	// A rejected token: at the token field, in the server's words, which
	// name the permission blocker.
	want := expectProblem(t, b.h.do("POST", "/connections", map[string]any{"server_url": b.h.mm.URL, "token": unknownT}), 422, "token_rejected")["detail"].(string)
	b.fill(frame, b.h.mm.URL, unknownT)
	do(b, frame, "wait for the token error", chromedp.WaitVisible(chromedp.CSS("#token-error")))
	b.waitState(frame, "form")
	msgText := text(b, frame, "#token-error")
	invalid := attr(b, frame, "#token", "aria-invalid")
	describedBy := attr(b, frame, "#token", "aria-describedby")
	if msgText != want || !strings.Contains(msgText, "Allow this account to generate personal access tokens") || invalid != "true" || !strings.Contains(describedBy, "token-error") {
		b.fail("token error %q (want the server's %q), aria-invalid %q, aria-describedby %q", msgText, want, invalid, describedBy)
	}
	if msg := b.waitMessage("mmconnect:error"); msg["code"] != "token_rejected" || msg["final"] != false || msg["message"] != want {
		b.fail("error message = %v", msg)
	}
	if get(b, frame, "read #connect[disabled]", chromedp.AttributeValue(chromedp.CSS("#connect"), "disabled")).Exists {
		b.fail("Connect stays disabled after the answer")
	}

	// A server that fails: in the alert, in the server's words.
	b.h.mm.Override(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	b.fill(frame, b.h.mm.URL, tokenA)
	do(b, frame, "wait for the alert", chromedp.WaitVisible(chromedp.CSS("#alert")))
	b.waitState(frame, "form")
	b.h.mm.Override(nil)
	if alert := text(b, frame, "#alert"); !strings.Contains(alert, "answered with a server error") || !strings.Contains(alert, "127.0.0.1") {
		b.fail("alert %q, want the server's message", alert)
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
	_, fe := connection.ParseServerURL("https://mattermost.example.com/?team=x", false)
	if msgText != fe.Message || invalid != "true" || focused != "server_url" {
		b.fail("server URL error %q (want the server's %q), aria-invalid %q, focus on %q", msgText, fe.Message, invalid, focused)
	}
	if n := b.posts.Load(); n != 0 {
		b.fail("%d POST /connections sent for a malformed URL", n)
	}
	if b.h.mm.Requests() != before {
		b.fail("Mattermost was called")
	}
}

// Stop pages (an expired session, no session) end the flow: the app is
// told, a Close button tells it the window is done, and no focus frame
// is drawn where nothing can be typed.
func TestBrowserStopPages(t *testing.T) {
	for _, tc := range []struct {
		name, title, code string
		connectURL        func(b *browserEnv) string
	}{
		{"expired session", "expired", "session_expired", func(b *browserEnv) string {
			b.h.openSession("browser-user")
			b.h.advance(31 * time.Minute)
			return b.h.lastConnectURL
		}},
		{"no session", "needs a connect link", "unauthorized", func(b *browserEnv) string { return b.api.URL + "/connect" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBrowserEnv(t)
			frame := b.openEmbedded(tc.connectURL(b))
			b.waitState(frame, "stopped")
			title := text(b, frame, "#title")
			forms := get(b, frame, "count form elements", chromedp.Evaluate[int](`document.querySelectorAll("form, input").length`))
			if !strings.Contains(title, tc.title) || forms != 0 {
				b.fail("title %q with %d form elements, want the %q page without a form", title, forms, tc.title)
			}
			if msg := b.waitMessage("mmconnect:error"); msg["code"] != tc.code || msg["final"] != true {
				b.fail("error message = %v, want %s, final", msg, tc.code)
			}
			focused := get(b, frame, "read focus", chromedp.Evaluate[string](`document.activeElement.id`))
			titleOutline := get(b, frame, "title outline", chromedp.Evaluate[string](`getComputedStyle(document.getElementById("title")).outlineStyle`))
			if focused != "stop-close" || titleOutline != "none" {
				b.fail("focus on %q, title outline %q; want focus on Close and no frame on the title", focused, titleOutline)
			}
			do(b, frame, "press Close", chromedp.Click(chromedp.CSS("#stop-close")))
			b.waitMessage("mmconnect:closed")
		})
	}
}

// The guide is folded under its toggle and says what blocks most people.
func TestBrowserGuide(t *testing.T) {
	b := newBrowserEnvWith(t, harnessOptions{appName: "Acme Chat", helpURL: "https://acme.example/help/mattermost"})
	b.h.openSession("browser-user")
	frame := b.openEmbedded(b.h.lastConnectURL)
	b.waitState(frame, "form")
	if open := attr(b, frame, "#guide", "open"); open != "" || get(b, frame, "guide open?", chromedp.AttributeValue(chromedp.CSS("#guide"), "open")).Exists {
		b.fail("the guide starts open")
	}
	do(b, frame, "open the guide", chromedp.Click(chromedp.CSS("#guide summary")), chromedp.WaitVisible(chromedp.CSS("#guide ol")))
	guide := text(b, frame, "#guide")
	for _, want := range []string{"How do I get a token?", "Profile → Security → Personal Access Tokens → Create Token", "Save",
		"shows it only once", "Integration Management", "Allow this account to generate personal access tokens", "User Management → Users"} {
		if !strings.Contains(guide, want) {
			b.fail("the guide does not say %q:\n%s", want, guide)
		}
	}
	if href := attr(b, frame, "#help-url", "href"); href != "https://acme.example/help/mattermost" {
		b.fail("help link %q", href)
	}
	if purpose := text(b, frame, "#purpose"); !strings.Contains(purpose, "Acme Chat act as you") {
		b.fail("purpose %q does not name the app", purpose)
	}
}

// What the person already has is shown truthfully, with the server URL
// filled in: working, stopped working (when and why), bots; never revoked.
func TestBrowserExistingConnections(t *testing.T) {
	b := newBrowserEnv(t)
	host := strings.TrimPrefix(b.h.mm.URL, "https://")
	b.h.mm.AddToken(unknownT, mattermosttest.User{ID: "1db9ackk8t8t8f14ai8pes6n3w", Username: "deploy-bot", Email: "deploy-bot@localhost", IsBot: true})
	invalid := b.h.connect(tokenB, strp("browser-user"))["id"].(string)
	b.h.mm.RevokeToken(tokenB)
	v := b.h.do("POST", "/connections/"+invalid+"/verify", nil).json(t)
	why := v["last_error"].(map[string]any)["message"].(string)
	b.h.connect(unknownT, strp("browser-user"))
	revoked := b.h.connect(tokenA2, strp("browser-user"))["id"].(string)
	b.h.do("DELETE", "/connections/"+revoked+"?revoke_upstream=false", nil)
	b.h.connect(tokenA, strp("browser-user"))
	b.h.openSession("browser-user")

	frame := b.openEmbedded(b.h.lastConnectURL)
	b.waitState(frame, "form")
	items := get(b, frame, "read the list", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#existing-list li")).map(li => li.textContent)`))
	when := get(b, frame, "format the date", chromedp.Evaluate[string](fmt.Sprintf(`new Date(%q).toLocaleDateString(undefined, {year: "numeric", month: "long", day: "numeric"})`, v["invalid_since"])))
	want := []string{
		"Connected as @alice on " + host + ".",
		"Connected as bot @deploy-bot on " + host + ".",
		"Your connection as @bob stopped working on " + when + ": " + why + " Enter a new token to reconnect.",
	}
	if strings.Join(items, "\n") != strings.Join(want, "\n") {
		b.fail("existing connections:\n%s\nwant:\n%s", strings.Join(items, "\n"), strings.Join(want, "\n"))
	}
	if got := get(b, frame, "server URL", chromedp.Evaluate[string](`document.getElementById("server_url").value`)); got != b.h.mm.URL {
		b.fail("server URL pre-filled with %q, want %q", got, b.h.mm.URL)
	}
	if focused := get(b, frame, "read focus", chromedp.Evaluate[string](`document.activeElement.id`)); focused != "token" {
		b.fail("focus on %q with the server URL filled in, want the token", focused)
	}
}

// Light and dark follow the person's preference.
func TestBrowserDarkScheme(t *testing.T) {
	b := newBrowserEnv(t)
	b.h.openSession("browser-user")
	background := func(scheme string) string {
		if _, err := chromedp.Call(b.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}}); err != nil {
			b.fail("emulate %s: %v", scheme, err)
		}
		do(b, b.ctx, "open the page", chromedp.Navigate(b.h.lastConnectURL))
		b.waitState(b.ctx, "form")
		return get(b, b.ctx, "background", chromedp.Evaluate[string](`getComputedStyle(document.documentElement).backgroundColor + " " + getComputedStyle(document.documentElement).color`))
	}
	light, dark := background("light"), background("dark")
	if light != "rgb(255, 255, 255) rgb(31, 35, 40)" || dark != "rgb(13, 17, 23) rgb(230, 237, 243)" {
		b.fail("light %q, dark %q; want white on dark text, and the dark palette", light, dark)
	}
}

// The page stays readable at 360 px: nothing scrolls sideways.
func TestBrowserNarrowScreen(t *testing.T) {
	b := newBrowserEnv(t)
	b.h.openSession("browser-user")
	b.h.connect(tokenA, strp("browser-user")) // a long "already connected" note
	do(b, b.ctx, "open the page at 360 px",
		chromedp.EmulateViewport(360, 740),
		chromedp.Navigate(b.h.lastConnectURL))
	b.waitState(b.ctx, "form")
	scrollWidth := get(b, b.ctx, "scroll width", chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
	clientWidth := get(b, b.ctx, "client width", chromedp.Evaluate[int](`document.documentElement.clientWidth`))
	if scrollWidth > clientWidth {
		b.fail("page is %d px wide in a %d px viewport", scrollWidth, clientWidth)
	}
}

// The page's instant checks (rules.js) and the server's field rules give
// the same verdict and code on every row of the domain's case tables.
func TestBrowserFieldRulesAgreeWithServer(t *testing.T) {
	type fieldCase struct {
		In        string `json:"in"`
		AllowHTTP bool   `json:"allow_http"`
	}
	load := func(name string) []fieldCase {
		raw, err := os.ReadFile(filepath.Join("..", "internal", "connection", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		var cs []fieldCase
		if err := json.Unmarshal(raw, &cs); err != nil {
			t.Fatal(err)
		}
		return cs
	}
	b := newBrowserEnv(t)
	do(b, b.ctx, "open the page", chromedp.Navigate(b.api.URL+"/connect"))
	b.waitState(b.ctx, "stopped") // no session; the rules are loaded all the same
	type verdict struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	check := func(fn string, cases []fieldCase, server func(fieldCase) *connection.FieldError) {
		in, _ := json.Marshal(cases)
		out := get(b, b.ctx, "run "+fn, chromedp.Evaluate[[]*verdict](fmt.Sprintf(
			`%s.map(c => window.mmconnectRules.%s(c.in, !!c.allow_http))`, in, fn)))
		if len(out) != len(cases) {
			b.fail("%s returned %d verdicts for %d cases", fn, len(out), len(cases))
		}
		for i, c := range cases {
			fe := server(c)
			page := out[i]
			switch {
			case fe == nil && page != nil:
				t.Errorf("%s(%q): the server accepts, the page says %s: %s", fn, c.In, page.Code, page.Message)
			case fe != nil && page == nil:
				t.Errorf("%s(%q): the server says %s (%s), the page accepts", fn, c.In, fe.Code, fe.Message)
			case fe != nil && fe.Code != page.Code:
				t.Errorf("%s(%q): the server says %s, the page %s", fn, c.In, fe.Code, page.Code)
			}
		}
	}
	check("checkServerURL", load("server_url_cases.json"), func(c fieldCase) *connection.FieldError {
		_, fe := connection.ParseServerURL(c.In, c.AllowHTTP)
		return fe
	})
	check("checkToken", load("token_cases.json"), func(c fieldCase) *connection.FieldError {
		_, fe := connection.ParseToken(c.In)
		return fe
	})
}

// sdk.js opens the page in a popup or an iframe and resolves with the
// connection; fixable errors go to onEvent only; closing rejects.
func TestBrowserSDK(t *testing.T) {
	for _, mode := range []string{"popup", "iframe"} {
		t.Run(mode, func(t *testing.T) {
			b := newBrowserEnv(t)
			b.expectProblems.Store(true) // the rejected token below
			b.h.openSession("browser-user")
			b.openApp("sdk=1&connect_url=" + url.QueryEscape(b.h.lastConnectURL))
			do(b, b.ctx, "wait for the app", chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"]`)))
			do(b, b.ctx, "start "+mode, chromedp.Click(chromedp.CSS("#"+mode)))
			kind := "page"
			if mode == "iframe" {
				kind = "iframe"
			}
			page := b.target(kind)
			b.fill(page, b.h.mm.URL, unknownT) // rejected: fixable
			do(b, page, "wait for the token error", chromedp.WaitVisible(chromedp.CSS("#token-error")))
			b.waitState(page, "form")
			if r := get(b, b.ctx, "result so far", chromedp.Evaluate[string](`JSON.stringify(window.__result)`)); r != "null" {
				b.fail("a fixable error settled the promise: %s", r)
			}
			b.fill(page, b.h.mm.URL, tokenA)
			res := get(b, b.ctx, "wait for the result", chromedp.Poll[string](`window.__result && JSON.stringify(window.__result)`,
				chromedp.WithPollingTimeout(15*time.Second)))
			var result struct {
				OK  map[string]any `json:"ok"`
				Err map[string]any `json:"err"`
			}
			json.Unmarshal([]byte(res), &result)
			if result.OK == nil || result.OK["status"] != "active" || result.OK["end_user_id"] != "browser-user" || strings.Contains(res, tokenA) {
				b.fail("openConnect resolved with %s", res)
			}
			events := get(b, b.ctx, "events", chromedp.Evaluate[string](`window.__events.map(e => e.type + (e.code ? ":" + e.code : "")).join(",")`))
			if events != "mmconnect:ready,mmconnect:error:token_rejected,mmconnect:connected" {
				b.fail("onEvent saw %s", events)
			}
			if mode == "iframe" {
				if n := get(b, b.ctx, "frames left", chromedp.Evaluate[int](`document.querySelectorAll("#container iframe").length`)); n != 0 {
					b.fail("the iframe stayed after connecting")
				}
			}

			// Closing ends the flow with a rejection.
			b.h.openSession("browser-user")
			b.openApp("sdk=1&connect_url=" + url.QueryEscape(b.h.lastConnectURL))
			do(b, b.ctx, "wait for the app", chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"]`)))
			do(b, b.ctx, "start again", chromedp.Click(chromedp.CSS("#"+mode)))
			page = b.target(kind)
			b.waitState(page, "form")
			// Cancel closes the popup (or removes the iframe): the browser
			// may detach the target before it answers the click itself,
			// which is the click having worked. The result below is the
			// proof either way.
			if err := chromedp.Do(page, chromedp.Click(chromedp.CSS("#cancel"))); err != nil && !errors.Is(err, chromedp.ErrTargetDetached) {
				b.fail("press Cancel: %v", err)
			}
			res = get(b, b.ctx, "wait for the result", chromedp.Poll[string](`window.__result && JSON.stringify(window.__result)`,
				chromedp.WithPollingTimeout(15*time.Second)))
			if !strings.Contains(res, `"code":"closed"`) {
				b.fail("Cancel settled openConnect with %s, want a rejection with code closed", res)
			}
		})
	}
}

func exceptionDescription(d *runtime.ExceptionDetails) string {
	if d.Exception != nil {
		return d.Exception.Description
	}
	return ""
}
