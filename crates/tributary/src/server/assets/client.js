// Tributary's change-feed client: served by `tributary serve` at
// /v1/client.js. Plain JavaScript (an ES module) for browsers and Node 18+.
//
//   import { subscribe } from "http://localhost:8080/v1/client.js";
//   const feed = subscribe({
//     url: "http://localhost:8080",          // where `tributary serve` listens
//     token: "trb_…",                        // `tributary tokens create --role read`
//     after: Number(localStorage.seq ?? 0),  // the last sequence you applied
//     connection: "clerk", entity: "User",   // optional filters
//     onChanges(changes, next) { apply(changes); localStorage.seq = next; },
//     onExpired() { /* re-read GET /v1/records, then subscribe after its cursor */ },
//   });
//   // later: feed.close();
//
// Every change arrives once, in order, and a transaction's changes arrive in
// one batch. The client keeps the last sequence it handed over and, when the
// socket drops, reconnects with backoff (0.5 s doubling to 30 s, jittered)
// and subscribes after that sequence, so nothing is missed or repeated. A
// cursor older than the feed's retention is answered `expired`: the client
// stops and calls onExpired — re-read the records, never a silent gap.

export function subscribe(options) {
  const {
    url,
    token,
    connection,
    entity,
    onChanges,
    onExpired = () => {},
    onError = () => {},
    onStatus = () => {},
    WebSocketImpl = globalThis.WebSocket,
  } = options;
  if (!url || !token || typeof onChanges !== "function") {
    throw new Error("subscribe needs url, token and onChanges");
  }
  let after = Number(options.after ?? 0);
  let socket = null;
  let closed = false;
  let failures = 0;
  let timer = null;

  const address = () => {
    const base = new URL("/v1/changes/ws", url);
    base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    base.searchParams.set("access_token", token);
    return base.toString();
  };

  const retry = () => {
    if (closed) return;
    const delay = Math.min(30000, 500 * 2 ** failures) * (0.5 + Math.random() / 2);
    failures += 1;
    onStatus({ state: "reconnecting", in_ms: Math.round(delay), after });
    timer = setTimeout(connect, delay);
  };

  const connect = () => {
    if (closed) return;
    const current = new WebSocketImpl(address());
    socket = current;
    // Some WebSocket implementations say only `error` when a connection
    // fails, others `error` then `close`: either way, one retry.
    const lost = () => {
      if (socket !== current) return;
      socket = null;
      retry();
    };
    socket.onopen = () => {
      const message = { type: "subscribe", after };
      if (connection) message.connection = connection;
      if (entity) message.entity = entity;
      current.send(JSON.stringify(message));
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(typeof event.data === "string" ? event.data : String(event.data));
      switch (message.type) {
        case "subscribed":
          failures = 0;
          onStatus({ state: "subscribed", head: message.head, after: message.after });
          break;
        case "changes":
          if (message.changes.length > 0) onChanges(message.changes, message.next);
          after = message.next;
          break;
        case "expired":
          closed = true;
          current.close();
          onExpired(message.detail);
          break;
        default:
          onError(new Error(message.detail || `unexpected message ${message.type}`));
      }
    };
    socket.onerror = (error) => {
      onError(error);
      lost();
    };
    socket.onclose = lost;
  };

  connect();
  return {
    /// The last sequence handed to onChanges (resume after it).
    get after() {
      return after;
    },
    close() {
      closed = true;
      clearTimeout(timer);
      if (socket) socket.close();
    },
  };
}
