// Types for mmconnect's frontend helper, served beside it at /connect/sdk.d.ts.

/** A connection as the API shows it; it never holds the token. */
export interface Connection {
  id: string;
  provider: "mattermost";
  server_url: string;
  end_user_id: string | null;
  status: "active" | "invalid" | "revoked";
  mattermost_user: { id: string; username: string; email: string; is_bot: boolean };
  server_version: string;
  token_hint: string;
  created_at: string;
  updated_at: string;
  last_verified_at: string | null;
  last_checked_at: string | null;
  invalid_since: string | null;
  revoked_at: string | null;
  last_error: { code: string; message: string; at: string } | null;
  upstream_revocation: { status: string; message: string; at: string } | null;
}

/** What the Connect page tells the app, in order. */
export type ConnectEvent =
  | { type: "mmconnect:ready" }
  | { type: "mmconnect:connected"; connection: Connection }
  | { type: "mmconnect:error"; code: string; message: string; final: boolean }
  | { type: "mmconnect:closed" };

/** Why the flow ended without a connection. */
export interface ConnectError {
  /** "closed", "popup_blocked", "session_expired", "unauthorized" or "invalid_options". */
  code: string;
  message: string;
}

export interface OpenConnectOptions {
  /** "popup" (default) opens a window; "iframe" embeds the page in container. */
  mode?: "popup" | "iframe";
  container?: HTMLElement;
  /** Every event, including errors the person can still fix on the page. */
  onEvent?: (event: ConnectEvent) => void;
}

/**
 * Opens the Connect page for connectUrl and resolves with the connection once
 * the person has connected; rejects with a ConnectError when the flow is over.
 */
export function openConnect(connectUrl: string, options?: OpenConnectOptions): Promise<Connection>;
