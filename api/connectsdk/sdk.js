// mmconnect's frontend helper: open the Connect page for a connect
// session (connect_url from POST /connect/sessions) in a popup or an
// iframe, and get the connected connection (never its token).
//
//   import { openConnect } from "https://connect.example.com/connect/sdk.js";
//   const connection = await openConnect(connectUrl, { mode: "popup" });
//
// The promise rejects with {code, message} only when the flow is over: the
// person closed it ("closed"), the popup was blocked ("popup_blocked"), or
// the session expired or is not valid ("session_expired", "unauthorized").
// Problems the person can still fix (a typo, a rejected token) are only
// passed to onEvent. Messages are accepted only from the Connect page's own
// origin and window.

const FINAL_CODES = new Set(["session_expired", "unauthorized"]);

export function openConnect(connectUrl, options = {}) {
  const { mode = "popup", container, onEvent } = options;
  const origin = new URL(connectUrl, window.location.href).origin;
  return new Promise((resolve, reject) => {
    let popup = null;
    let frame = null;
    let watch = 0;
    const source = () => (frame ? frame.contentWindow : popup);
    const finish = () => {
      window.removeEventListener("message", onMessage);
      clearInterval(watch);
      if (frame) { frame.remove(); }
      if (popup && !popup.closed) { popup.close(); }
    };
    const fail = (code, message) => { finish(); reject({ code, message }); };
    function onMessage(event) {
      if (event.origin !== origin || event.source !== source()) { return; }
      const msg = event.data;
      if (!msg || typeof msg.type !== "string" || !msg.type.startsWith("mmconnect:")) { return; }
      if (onEvent) {
        try { onEvent(msg); } catch (e) { /* the app's handler must not break the flow */ }
      }
      if (msg.type === "mmconnect:connected") {
        finish();
        resolve(msg.connection);
      } else if (msg.type === "mmconnect:closed") {
        fail("closed", "The Connect window was closed before connecting.");
      } else if (msg.type === "mmconnect:error" && (msg.final || FINAL_CODES.has(msg.code))) {
        fail(msg.code, msg.message);
      }
    }
    window.addEventListener("message", onMessage);
    if (mode === "iframe") {
      if (!container) { fail("invalid_options", "mode \"iframe\" needs a container element."); return; }
      frame = document.createElement("iframe");
      frame.title = "Connect your Mattermost account";
      frame.src = connectUrl;
      frame.style.border = "0";
      frame.style.width = "100%";
      frame.style.minHeight = "34rem";
      container.appendChild(frame);
      return;
    }
    popup = window.open(connectUrl, "mmconnect", "popup,width=480,height=720");
    if (!popup) { fail("popup_blocked", "The browser blocked the Connect popup; call openConnect from a click."); return; }
    watch = setInterval(() => {
      if (popup.closed) { fail("closed", "The Connect window was closed before connecting."); }
    }, 400);
  });
}
