// The field rules of mmconnect's domain (internal/connection/validate.go),
// for instant feedback on the Connect page: the same rules, codes and
// messages, ported. The server stays authoritative; a browser test runs the
// domain's case tables (internal/connection/testdata) through both and
// compares the verdicts. One rule is left to the server: a URL within the
// length typed that outgrows it written in full (https:// put before it,
// its path %-escaped), which takes the server's normalisation to know; the
// page shows the server's answer on the field, as it shows any other.
(function () {
  "use strict";

  var MAX_SERVER_URL_LENGTH = 2048;
  var MAX_TOKEN_LENGTH = 1024;
  var TOKEN_LENGTH = 26;

  function problem(field, code, message) { return { field: field, code: code, message: message }; }

  // Go's %q for the strings these messages quote.
  function quote(s) { return JSON.stringify(s); }

  var WHITE = /^[\p{White_Space}]+|[\p{White_Space}]+$/gu;
  function trimSpace(s) { return s.replace(WHITE, ""); }

  function runeCount(s) { return Array.from(s).length; }

  function hasLoneSurrogate(s) {
    return /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(^|[^\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);
  }

  function isSchemeLike(s) { return /^[a-zA-Z][a-zA-Z0-9+.-]*$/.test(s); }

  function looksLikePort(rest) {
    var i = rest.indexOf("/");
    if (i >= 0) { rest = rest.slice(0, i); }
    return /^[0-9]+$/.test(rest);
  }

  // isIPv6 is netip.ParseAddr(s) succeeding with an IPv6 address (a zone
  // after % is allowed there).
  function isIPv6(s) {
    if (s.indexOf(":") < 0) { return false; }
    var addr = s.split("%")[0];
    if (!/^[0-9a-fA-F:.]+$/.test(addr)) { return false; }
    try { new URL("http://[" + addr + "]/"); return true; } catch (e) { return false; }
  }

  function isIPv4(s) {
    return /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(s);
  }

  // isNumericLabel: a top-level label no DNS name can have (all digits, or
  // a hex number), which is how resolvers spell IPv4 addresses.
  function isNumericLabel(l) { return /^(0x[0-9a-f]*|[0-9]+)$/.test(l); }

  // parseURL splits like Go's url.Parse, far enough for these rules; it
  // returns {error} with Go's describeURLError wording when Go would fail.
  function parseURL(s) {
    var u = { scheme: "", opaque: "", user: false, host: "", path: "", query: false, fragment: "" };
    var hash = s.indexOf("#");
    if (hash >= 0) { u.fragment = s.slice(hash + 1); s = s.slice(0, hash); }
    var m = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(s);
    var rest = s;
    if (m) { u.scheme = m[1]; rest = s.slice(m[0].length); }
    var q = rest.indexOf("?");
    if (q >= 0) { u.query = true; rest = rest.slice(0, q); }
    if (rest.slice(0, 2) !== "//") {
      if (u.scheme && rest.charAt(0) !== "/") { u.opaque = rest; }
      u.path = rest;
      return u;
    }
    rest = rest.slice(2);
    var slash = rest.indexOf("/");
    var authority = slash >= 0 ? rest.slice(0, slash) : rest;
    u.path = slash >= 0 ? rest.slice(slash) : "";
    var at = authority.lastIndexOf("@");
    if (at >= 0) { u.user = true; authority = authority.slice(at + 1); }
    if (authority.charAt(0) === "[") {
      var close = authority.indexOf("]");
      if (close < 0) { return { error: "an IPv6 address must be written in brackets, e.g. https://[2001:db8::1]" }; }
      var after = authority.slice(close + 1);
      if (after && !/^:[0-9]*$/.test(after)) { return { error: "an IPv6 address must be written in brackets, e.g. https://[2001:db8::1]" }; }
    } else {
      var colon = authority.lastIndexOf(":");
      if (colon >= 0 && !/^:[0-9]*$/.test(authority.slice(colon))) {
        return { error: "the port must be a number from 1 to 65535" };
      }
    }
    if (/%(?![0-9a-fA-F]{2})/.test(authority) || /%(?![0-9a-fA-F]{2})/.test(u.path)) {
      return { error: "it contains a broken %-escape" };
    }
    u.host = authority;
    return u;
  }

  // hostname and port of an authority, as Go's URL.Hostname and Port.
  function splitHost(authority) {
    if (authority.charAt(0) === "[") {
      var close = authority.indexOf("]");
      return { name: authority.slice(1, close), port: authority.slice(close + 2), bracketed: true, emptyPort: /\]:$/.test(authority) };
    }
    var colon = authority.lastIndexOf(":");
    if (colon < 0) { return { name: authority, port: "", bracketed: false, emptyPort: false }; }
    return { name: authority.slice(0, colon), port: authority.slice(colon + 1), bracketed: false, emptyPort: colon === authority.length - 1 };
  }

  // toASCII maps an international host name to punycode as the browser's
  // URL parser does (UTS #46); null when it refuses the name.
  function toASCII(host) {
    try { return new URL("https://" + host + "/").hostname; } catch (e) { return null; }
  }

  function checkHost(host, bracketed) {
    var bad = function (msg) { return problem("server_url", "invalid_format", msg); };
    if (!host) { return bad("server_url has no host name"); }
    if (bracketed) {
      if (host.indexOf("%") >= 0 || host.indexOf(".") >= 0 && !/:/.test(host) || !isIPv6(host)) {
        return bad("server_url has an invalid IPv6 address in brackets");
      }
      return null;
    }
    if (host.indexOf(":") >= 0) { return bad("an IPv6 address must be written in brackets, e.g. https://[2001:db8::1]"); }
    host = host.replace(/\.$/, "");
    if (isIPv4(host)) { return null; }
    var parts = host.toLowerCase().split(".");
    if (isNumericLabel(parts[parts.length - 1])) {
      // "127.1", "0x7f.1" or "2130706433": other spellings of IPv4
      // addresses, which the browser's parser would quietly rewrite.
      return bad("server_url host " + quote(host) + " looks like an IP address but is not a dotted-decimal IPv4 address");
    }
    var invalid = bad("server_url host " + quote(host) + " is not a valid host name");
    var ascii = toASCII(host);
    if (ascii === null || ascii.charAt(0) === "[") { return invalid; }
    ascii = ascii.toLowerCase().replace(/\.$/, "");
    if (ascii.length > 253) { return bad("server_url host name is longer than 253 characters"); }
    var labels = ascii.split(".");
    for (var i = 0; i < labels.length; i++) {
      var l = labels[i];
      if (!l) { return bad("server_url host " + quote(host) + " has an empty part between dots"); }
      if (l.length > 63) { return bad("server_url host has a part longer than 63 characters"); }
      // UTS #46 with STD3 rules and CheckHyphens, as Go's idna.Lookup.
      if (!/^[a-z0-9-]+$/.test(l) || l.charAt(0) === "-" || l.charAt(l.length - 1) === "-" ||
          (l.slice(2, 4) === "--" && l.slice(0, 4) !== "xn--")) { return invalid; }
    }
    return null;
  }

  // checkServerURL is connection.ParseServerURL's verdict: null, or the
  // problem {field, code, message}.
  function checkServerURL(raw, allowHTTP) {
    var bad = function (msg) { return problem("server_url", "invalid_format", msg); };
    var s = trimSpace(raw);
    if (!s) { return problem("server_url", "required", "server_url is required: the address of your Mattermost server, e.g. mattermost.example.com"); }
    if (runeCount(s) > MAX_SERVER_URL_LENGTH) { return problem("server_url", "too_long", "server_url must be at most " + MAX_SERVER_URL_LENGTH + " characters"); }
    if (hasLoneSurrogate(s)) { return bad("server_url must be valid UTF-8 text"); }
    if (/[\p{White_Space}\p{Cc}]/u.test(s)) { return bad("server_url must not contain spaces or control characters"); }
    if (s.indexOf("://") < 0) {
      if (isIPv6(s)) { return bad("an IPv6 address must be written in brackets, e.g. https://[2001:db8::1]"); }
      var i = s.indexOf(":");
      if (i > 0 && isSchemeLike(s.slice(0, i)) && !looksLikePort(s.slice(i + 1))) {
        return bad("server_url must start with https:// (found " + quote(s.slice(0, i + 1)) + ")");
      }
      s = "https://" + s;
    }
    var u = parseURL(s);
    if (u.error) { return bad("server_url is not a valid URL: " + u.error); }
    var scheme = u.scheme.toLowerCase();
    if (scheme === "http" && !allowHTTP) { return bad("server_url must use https://; plain http:// is not allowed on this service"); }
    if (scheme !== "https" && scheme !== "http") { return bad("server_url must start with https:// (found " + quote(u.scheme + "://") + ")"); }
    if (u.opaque) { return bad("server_url is not a valid URL"); }
    if (u.user) { return bad("server_url must not contain a user name or password"); }
    if (u.query) { return bad("server_url must not contain a query (the part after ?)"); }
    if (u.fragment || s.indexOf("#") >= 0) { return bad("server_url must not contain a fragment (the part after #)"); }
    var h = splitHost(u.host);
    var hostProblem = checkHost(h.name, h.bracketed);
    if (hostProblem) { return hostProblem; }
    if (h.emptyPort) { return bad("server_url has an empty port after ':'"); }
    if (h.port) {
      var n = Number(h.port);
      if (!/^[0-9]+$/.test(h.port) || n < 1 || n > 65535) { return bad("server_url port must be a number from 1 to 65535"); }
    }
    return null;
  }

  // checkToken is connection.ParseToken's verdict.
  function checkToken(raw) {
    var bad = function (msg) { return problem("token", "invalid_format", msg); };
    var t = trimSpace(raw);
    if (!t) { return problem("token", "required", "token is required: paste the Access Token shown when you created a personal access token"); }
    if (new TextEncoder().encode(t).length > MAX_TOKEN_LENGTH) {
      return problem("token", "too_long", "token must be at most " + MAX_TOKEN_LENGTH + " characters; a Mattermost personal access token is " + TOKEN_LENGTH);
    }
    if (/^bearer ./i.test(t)) { return bad("remove the \"Bearer \" prefix: paste only the token itself"); }
    if (/^token ./i.test(t)) { return bad("remove the \"Token \" prefix: paste only the token itself"); }
    if (/[\p{White_Space}]/u.test(t)) { return bad("token must not contain spaces or line breaks; paste it as one piece"); }
    if (/[A-Z]/.test(t)) { return bad("token contains upper-case letters; Mattermost tokens use only lower-case letters a-z and digits 0-9"); }
    if (/[^a-z0-9]/.test(t)) { return bad("token may contain only lower-case letters a-z and digits 0-9"); }
    if (t.length !== TOKEN_LENGTH) { return bad("token is " + t.length + " characters long; a Mattermost personal access token is exactly " + TOKEN_LENGTH); }
    return null;
  }

  window.mmconnectRules = { checkServerURL: checkServerURL, checkToken: checkToken };
})();
