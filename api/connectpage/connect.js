// The Connect page: a person enters their Mattermost server URL and a
// personal access token; the page checks their shape, asks mmconnect to
// connect with the connect session from the URL fragment, and tells the app
// that opened or embeds it (postMessage, only to allowed origins).
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var TOKEN_LENGTH = 26;

  // One plain message per problem code the API can answer with.
  var MESSAGES = {
    token_rejected: "Mattermost did not accept this token. Check that you copied the Access Token (not the Token ID), that it was not revoked, and that your account is active. If Personal Access Tokens is missing in your profile, ask a System Admin to enable them.",
    not_mattermost: "That address answered, but it is not a Mattermost server. Use the address you see in your browser when you use Mattermost.",
    host_not_found: "No server has that name. Check the server URL for typos.",
    host_not_allowed: "That server is on a private network this service may not reach. Ask the app's administrator to allow it.",
    redirect_not_allowed: "That address sends visitors to another server. Enter the address of your Mattermost server itself.",
    upstream_unreachable: "Your Mattermost server could not be reached. Check the server URL and try again.",
    upstream_tls_error: "Your Mattermost server's secure connection (TLS certificate) is not valid. Ask its administrator to fix it.",
    upstream_error: "Your Mattermost server had an error. Try again in a little while.",
    upstream_rate_limited: "Your Mattermost server asked us to slow down. Wait a moment and try again.",
    upstream_timeout: "Your Mattermost server took too long to answer. Try again.",
    validation_failed: "Some fields need fixing.",
    session_expired: "This connect link has expired. Go back to the app and start again.",
    unauthorized: "This connect link is not valid. Go back to the app and start again.",
    forbidden: "This connect link cannot do that.",
    database_unavailable: "The service is busy. Try again in a moment.",
    payload_too_large: "What you entered is too long.",
    network: "Could not reach the connect service. Check your connection and try again."
  };
  var FALLBACK = "Something went wrong. Try again, or contact the app's support.";

  var token = null;
  var allowedOrigins = [];
  var allowHTTP = false;
  var busy = false;

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

  function stop(title, text) {
    $("title").textContent = title;
    $("stop-text").textContent = text;
    ["loading", "form", "existing", "done"].forEach(function (id) { $(id).hidden = true; });
    $("stop").hidden = false;
    var form = $("form");
    if (form.parentNode) { form.parentNode.removeChild(form); }
    $("title").focus();
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

  // The same rules as the server, which stays authoritative.
  function checkServerURL(raw) {
    var s = raw.trim();
    if (!s) { return "Enter your Mattermost server URL, e.g. mattermost.example.com."; }
    if (/[\s\u0000-\u001f\u007f]/.test(s)) { return "The server URL must not contain spaces."; }
    var schemeMatch = /^([a-z][a-z0-9+.-]*):\/\//i.exec(s);
    if (!schemeMatch) {
      var colon = /^([a-z][a-z0-9+.-]*):(?!\d)/i.exec(s);
      if (colon) { return "The server URL must start with https://."; }
      s = "https://" + s;
    } else {
      var scheme = schemeMatch[1].toLowerCase();
      if (scheme === "http" && !allowHTTP) { return "The server URL must use https://; plain http:// is not allowed here."; }
      if (scheme !== "https" && scheme !== "http") { return "The server URL must start with https://."; }
    }
    var authority = s.replace(/^[a-z][a-z0-9+.-]*:\/\//i, "").split(/[\/?#]/)[0];
    if (authority.indexOf("@") >= 0) { return "The server URL must not contain a user name or password."; }
    if (s.indexOf("#") >= 0) { return "The server URL must not contain a fragment (the part after #)."; }
    if (s.indexOf("?") >= 0) { return "The server URL must not contain a query (the part after ?)."; }
    var hostPart = authority;
    if (hostPart.charAt(0) !== "[") {
      hostPart = hostPart.replace(/:\d*$/, "");
      var labels = hostPart.replace(/\.$/, "").split(".");
      var last = labels[labels.length - 1].toLowerCase();
      if (/^(\d+|0x[0-9a-f]*)$/.test(last)) {
        var quad = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\.?$/;
        if (!quad.test(hostPart)) { return "The server URL looks like an IP address but is not a dotted-decimal IPv4 address."; }
      }
    }
    var u;
    try { u = new URL(s); } catch (e) { return "The server URL is not a valid address."; }
    if (!u.hostname) { return "The server URL has no host name."; }
    if (u.port && (Number(u.port) < 1 || Number(u.port) > 65535)) { return "The port must be a number from 1 to 65535."; }
    if (/:$/.test(authority)) { return "The server URL has an empty port after ':'."; }
    var host = u.hostname.replace(/\.$/, "");
    if (host.charAt(0) !== "[") {
      if (host.length > 253) { return "The server's host name is too long."; }
      var parts = host.split(".");
      for (var i = 0; i < parts.length; i++) {
        var p = parts[i];
        if (!p) { return "The server URL has an empty part between dots."; }
        if (p.length > 63) { return "A part of the host name is longer than 63 characters."; }
        if (!/^[a-z0-9-]+$/.test(p)) { return "The host name may contain only letters, digits, '-' and '.'."; }
        if (p.charAt(0) === "-" || p.charAt(p.length - 1) === "-") { return "Parts of the host name must not start or end with '-'."; }
      }
    }
    return "";
  }

  function checkToken(raw) {
    var t = raw.trim();
    if (!t) { return "Paste the Access Token shown when you created your personal access token."; }
    if (/^bearer /i.test(t)) { return "Remove the \"Bearer \" prefix: paste only the token itself."; }
    if (/^token /i.test(t)) { return "Remove the \"Token \" prefix: paste only the token itself."; }
    if (/\s/.test(t)) { return "The token must not contain spaces or line breaks; paste it as one piece."; }
    if (/[A-Z]/.test(t)) { return "The token contains upper-case letters; Mattermost tokens use only lower-case letters a-z and digits 0-9."; }
    if (/[^a-z0-9]/.test(t)) { return "The token may contain only lower-case letters a-z and digits 0-9."; }
    if (t.length !== TOKEN_LENGTH) { return "The token is " + t.length + " characters long; a Mattermost personal access token is exactly " + TOKEN_LENGTH + "."; }
    return "";
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

  function messageFor(problem) {
    if (problem && MESSAGES[problem.code]) { return MESSAGES[problem.code]; }
    if (problem && problem.detail) { return problem.detail; }
    return FALLBACK;
  }

  function showExisting(connections) {
    var live = connections.filter(function (c) { return c.status !== "revoked"; });
    if (!live.length) { $("existing").hidden = true; return; }
    var names = live.map(function (c) { return "@" + c.mattermost_user.username + " on " + c.server_url; });
    $("existing-text").textContent = "You are already connected as " + names.join(", ") +
      ". Connecting the same account again replaces its token.";
    $("existing").hidden = false;
  }

  function setBusy(on) {
    busy = on;
    $("connect").disabled = on;
    $("form").setAttribute("aria-busy", on ? "true" : "false");
  }

  function onSubmit(ev) {
    ev.preventDefault();
    if (busy) { return; }
    showAlert("");
    var serverURL = $("server_url").value;
    var tok = $("token").value;
    var serverErr = checkServerURL(serverURL);
    var tokenErr = checkToken(tok);
    setFieldError("server_url", serverErr);
    setFieldError("token", tokenErr);
    if (serverErr || tokenErr) {
      setStatus("");
      $(serverErr ? "server_url" : "token").focus();
      return;
    }
    setBusy(true);
    setStatus("Checking your token with your Mattermost server…");
    api("POST", "connections", { server_url: serverURL.trim(), token: tok.trim() }).then(function (res) {
      setBusy(false);
      setStatus("");
      if (res.status === 200 || res.status === 201) {
        var c = res.data;
        $("token").value = "";
        $("form").hidden = true;
        $("existing").hidden = true;
        $("done-text").textContent = "You are now connected to Mattermost as @" + c.mattermost_user.username + " on " + c.server_url;
        $("done").hidden = false;
        setStatus("Connected.");
        $("title").focus();
        notify({ type: "mmconnect:connected", connection: c });
        return;
      }
      var p = res.data || {};
      var message = messageFor(p);
      notify({ type: "mmconnect:error", code: p.code || "internal", message: message });
      if (p.code === "session_expired" || p.code === "unauthorized") {
        stop("This connect link has expired", message);
        return;
      }
      if (p.code === "validation_failed" && p.errors) {
        p.errors.forEach(function (fe) {
          if (fe.field === "server_url" || fe.field === "token") { setFieldError(fe.field, fe.message); }
        });
        var first = p.errors[0];
        if (first && $(first.field)) { $(first.field).focus(); }
        return;
      }
      if (p.code === "token_rejected") {
        setFieldError("token", message);
        $("token").focus();
        return;
      }
      showAlert(message);
    }, function () {
      setBusy(false);
      setStatus("");
      showAlert(MESSAGES.network);
      notify({ type: "mmconnect:error", code: "network", message: MESSAGES.network });
    });
  }

  function onCancel() {
    notify({ type: "mmconnect:closed" });
    if (window.opener && window.parent === window) { window.close(); }
  }

  function start() {
    var params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    token = params.get("session");
    // The session stays in memory only, not in the address bar or history.
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    if (!token) {
      stop("This page needs a connect link", "Open this page from the app you want to connect to Mattermost.");
      return;
    }
    api("GET", "connect/session").then(function (res) {
      if (res.status === 401 && res.data && res.data.code === "session_expired") {
        stop("This connect link has expired", "Go back to the app and start again to get a new link.");
        return;
      }
      if (res.status !== 200) {
        stop("This connect link is not valid", "Go back to the app and start again to get a new link.");
        return;
      }
      allowedOrigins = res.data.allowed_origins || [];
      allowHTTP = !!res.data.allow_http;
      showExisting(res.data.connections || []);
      $("loading").hidden = true;
      $("form").hidden = false;
      $("form").addEventListener("submit", onSubmit);
      $("cancel").addEventListener("click", onCancel);
      $("close").addEventListener("click", onCancel);
      $("toggle").addEventListener("click", function () {
        var input = $("token");
        var show = input.type === "password";
        input.type = show ? "text" : "password";
        this.textContent = show ? "Hide" : "Show";
        this.setAttribute("aria-pressed", show ? "true" : "false");
      });
      ["server_url", "token"].forEach(function (id) {
        $(id).addEventListener("input", function () { setFieldError(id, ""); });
      });
      $("server_url").focus();
      notify({ type: "mmconnect:ready" });
    }, function () {
      stop("The connect service cannot be reached", MESSAGES.network);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
