// The Connect page: a person enters their Mattermost server URL and a
// personal access token; the page checks their shape (rules.js, the
// server's rules), asks mmconnect to connect with the connect session from
// the URL fragment, shows the server's own message for anything that goes
// wrong, and tells the app that opened or embeds it (postMessage, only to
// allowed origins).
//
// The page's state is on <html data-state>: loading, form, busy, done or
// stopped; tests and the SDK wait on it, never on timing.
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var rules = window.mmconnectRules;
  var NETWORK = "Could not reach the connect service. Check your connection and try again.";
  var FALLBACK = "Something went wrong. Try again, or contact the app's support.";

  var token = null;
  var allowedOrigins = (document.querySelector('meta[name="mmconnect-allowed-origins"]').content || "")
    .split(" ").filter(function (o) { return o && o.indexOf("{{") < 0; });
  var allowHTTP = false;
  var busy = false;

  function setState(s) { document.documentElement.setAttribute("data-state", s); }

  // Tell the opener or parent, but only at an allowed origin: the browser
  // delivers a message only if the window really has the target origin.
  function notify(msg) {
    var targets = [];
    if (window.parent && window.parent !== window) { targets.push(window.parent); }
    if (window.opener && !window.opener.closed) { targets.push(window.opener); }
    targets.forEach(function (w) {
      allowedOrigins.forEach(function (origin) {
        try { w.postMessage(msg, origin); } catch (e) { /* window gone */ }
      });
    });
  }

  function setStatus(text) { $("status").textContent = text; }

  function showAlert(text) {
    var a = $("alert");
    a.textContent = text;
    a.hidden = !text;
  }

  // stop ends the flow: a title, what to do, and a Close button.
  function stop(title, text) {
    $("title").textContent = title;
    $("stop-text").textContent = text;
    ["loading", "form", "existing", "done", "purpose"].forEach(function (id) { $(id).hidden = true; });
    $("stop").hidden = false;
    var form = $("form");
    if (form.parentNode) { form.parentNode.removeChild(form); }
    $("stop-close").addEventListener("click", close);
    $("stop-close").focus();
    setState("stopped");
  }

  function setFieldError(field, message) {
    var input = $(field);
    var err = $(field + "-error");
    if (message) {
      err.textContent = message;
      err.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", field + "-error " + field + "-help");
    } else {
      err.textContent = "";
      err.hidden = true;
      input.removeAttribute("aria-invalid");
      input.setAttribute("aria-describedby", field + "-help");
    }
  }

  function api(method, path, body) {
    var init = { method: method, headers: { "Authorization": "Bearer " + token }, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (res) {
      return res.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        return { status: res.status, data: data };
      });
    });
  }

  // where names a server as a person knows it: the address without https://.
  function where(serverURL) { return serverURL.replace(/^https?:\/\//, ""); }

  function who(c) { return (c.mattermost_user.is_bot ? "bot @" : "@") + c.mattermost_user.username; }

  function day(iso) {
    var d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleDateString(undefined, { year: "numeric", month: "long", day: "numeric" });
  }

  // showExisting says what this person already has, truthfully: working
  // connections, and ones that stopped working with when and why.
  function showExisting(connections) {
    var list = $("existing-list");
    list.textContent = "";
    connections.forEach(function (c) {
      var li = document.createElement("li");
      if (c.status === "invalid") {
        var why = c.last_error && c.last_error.message ? c.last_error.message : "Mattermost no longer accepts its token.";
        li.className = "invalid";
        li.textContent = "Your connection as " + who(c) + " stopped working on " + day(c.invalid_since || c.updated_at) +
          ": " + why + " Enter a new token to reconnect.";
      } else {
        li.className = "active";
        li.textContent = "Connected as " + who(c) + " on " + where(c.server_url) + ".";
      }
      list.appendChild(li);
    });
    $("existing").hidden = connections.length === 0;
    if (connections.length) { $("server_url").value = connections[0].server_url; }
  }

  function setBusy(on) {
    busy = on;
    $("connect").disabled = on;
    $("form").setAttribute("aria-busy", on ? "true" : "false");
    setState(on ? "busy" : "form");
  }

  function onSubmit(ev) {
    ev.preventDefault();
    if (busy) { return; }
    showAlert("");
    var serverURL = $("server_url").value;
    var tok = $("token").value;
    var serverProblem = rules.checkServerURL(serverURL, allowHTTP);
    var tokenProblem = rules.checkToken(tok);
    setFieldError("server_url", serverProblem && serverProblem.message);
    setFieldError("token", tokenProblem && tokenProblem.message);
    if (serverProblem || tokenProblem) {
      setStatus("");
      $(serverProblem ? "server_url" : "token").focus();
      return;
    }
    setBusy(true);
    setStatus("Checking your token with your Mattermost server…");
    api("POST", "connections", { server_url: serverURL.trim(), token: tok.trim() }).then(function (res) {
      setStatus("");
      if (res.status === 200 || res.status === 201) {
        var c = res.data;
        $("token").value = "";
        $("form").hidden = true;
        $("existing").hidden = true;
        $("purpose").hidden = true;
        $("done-text").textContent = "Connected as " + who(c) + " on " + where(c.server_url) + ".";
        $("done").hidden = false;
        $("close").focus();
        setBusy(false);
        setState("done");
        notify({ type: "mmconnect:connected", connection: c });
        return;
      }
      setBusy(false);
      var p = res.data || {};
      var message = p.detail || FALLBACK;
      if (p.code === "session_expired" || p.code === "unauthorized") {
        notify({ type: "mmconnect:error", code: p.code, message: message, final: true });
        stop("This connect link has expired", "Go back to the app and start again to get a new link.");
        return;
      }
      if (p.code === "validation_failed" && p.errors) {
        message = p.errors.map(function (fe) { return fe.message; }).join("; ");
        p.errors.forEach(function (fe) {
          if (fe.field === "server_url" || fe.field === "token") { setFieldError(fe.field, fe.message); }
        });
        var first = p.errors[0];
        if (first && $(first.field)) { $(first.field).focus(); }
      } else if (p.code === "token_rejected") {
        setFieldError("token", message);
        $("token").focus();
      } else {
        showAlert(message);
      }
      notify({ type: "mmconnect:error", code: p.code || "internal", message: message, final: false });
    }, function () {
      setBusy(false);
      setStatus("");
      showAlert(NETWORK);
      notify({ type: "mmconnect:error", code: "network", message: NETWORK, final: false });
    });
  }

  function close() {
    notify({ type: "mmconnect:closed" });
    if (window.opener && window.parent === window) { window.close(); }
  }

  function toggleToken() {
    var input = $("token");
    var show = input.type === "password";
    input.type = show ? "text" : "password";
    this.textContent = show ? "Hide" : "Show";
    this.setAttribute("aria-pressed", show ? "true" : "false");
  }

  function start() {
    var params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    token = params.get("session");
    // The session stays in memory only, not in the address bar or history.
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    if (!token) {
      notify({ type: "mmconnect:error", code: "unauthorized", message: "No connect session.", final: true });
      stop("This page needs a connect link", "Open this page from the app you want to connect to Mattermost.");
      return;
    }
    api("GET", "connect/session").then(function (res) {
      if (res.status !== 200) {
        var expired = res.status === 401 && res.data && res.data.code === "session_expired";
        var code = (res.data && res.data.code) || "unauthorized";
        notify({ type: "mmconnect:error", code: code, message: (res.data && res.data.detail) || FALLBACK, final: true });
        stop(expired ? "This connect link has expired" : "This connect link is not valid",
          "Go back to the app and start again to get a new link.");
        return;
      }
      var info = res.data;
      allowedOrigins = info.allowed_origins || [];
      allowHTTP = !!info.allow_http;
      $("purpose").textContent = "Connecting lets " + info.app_name + " act as you in Mattermost: read and post what you can. " +
        "You can take that back at any time by deleting the token in Mattermost under Profile → Security → Personal Access Tokens.";
      $("purpose").hidden = false;
      if (info.help_url) {
        $("help-url").href = info.help_url;
        $("help-link").hidden = false;
      }
      showExisting(info.connections || []);
      $("loading").hidden = true;
      $("form").hidden = false;
      $("form").addEventListener("submit", onSubmit);
      $("cancel").addEventListener("click", close);
      $("close").addEventListener("click", close);
      $("toggle").addEventListener("click", toggleToken);
      ["server_url", "token"].forEach(function (id) {
        $(id).addEventListener("input", function () { setFieldError(id, ""); });
      });
      $($("server_url").value ? "token" : "server_url").focus();
      setState("form");
      notify({ type: "mmconnect:ready" });
    }, function () {
      stop("The connect service cannot be reached", NETWORK);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
