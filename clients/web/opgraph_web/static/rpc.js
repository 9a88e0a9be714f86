// MessagePack-RPC over a WebSocket: the page's connection to the graph server.
//
// One binary frame holds one message, in both directions (docs/protocol.md, "WebSocket
// transport"). Requests are [0, msgid, method, params], responses [1, msgid, error, result],
// notifications [2, method, params], exactly as on TCP. The page asks for structured errors,
// so an error is {code, name, message, data}.

// @msgpack/msgpack's one-file build (vendor/msgpack/msgpack.js, a deferred classic script
// that runs before this module) defines MessagePack.
const { encode, decode } = globalThis.MessagePack;

const TOKEN_KEY = "opgraph-token";
const MAX_MSGID = 2 ** 32 - 1;

/** An error the server answered with (name is the stable code name: unknown_graph, ...). */
export class RpcError extends Error {
  constructor(error, method) {
    // Structured ({code, name, message, data}) once initialize asked for it; before that
    // (a refused initialize, say) the default [kind, "name: message"].
    let e = error;
    if (!e || typeof e !== "object" || Array.isArray(e)) {
      const textOf = String(Array.isArray(error) ? error[1] : error);
      const m = /^([a-z_]+): ([\s\S]*)$/.exec(textOf);
      e = m ? { name: m[1], message: m[2] } : { name: "error", message: textOf };
    }
    super(`${e.name}: ${e.message}`);
    this.name = e.name;
    this.code = e.code;
    this.data = e.data;
    this.method = method;
    this.text = e.message;
  }
}

/** The connection was lost (or never made) while a request was waiting. */
export class ConnectionLost extends Error {
  constructor(message) {
    super(message);
    this.name = "connection_lost";
  }
}

/** The token kept for this browser tab's session (sessionStorage), if any. */
export function storedToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
}

export function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* storage refused: the token lasts as long as the page */ }
}

/**
 * A client that reconnects by itself. Events (EventTarget):
 * - "status": detail {state: "connecting" | "open" | "closed" | "unauthorized", message, retryIn}
 * - "notification": detail {method, params}
 * - "ready": detail {info, newServer} after each successful initialize (newServer: the server
 *   is not the one of the previous connection, so nothing seen before can be trusted).
 */
export class Rpc extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.token = storedToken();
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.info = null;
    this.instance = undefined;
    this.state = "closed";
    this.retry = 0;
    this.retryTimer = null;
    this._ready = null;
    this._resolveReady = null;
    this.stopped = false;
    this.timings = []; // [method, sent, answered] (ms since the page began), the last 200
    this._newReady();
  }

  _newReady() {
    this._ready = new Promise((resolve) => { this._resolveReady = resolve; });
  }

  _status(state, message = "", extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("status", { detail: { state, message, ...extra } }));
  }

  /** Open the socket (again); initialize runs as soon as it is open. */
  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.ws && (this.ws.readyState === WebSocket.OPEN
                    || this.ws.readyState === WebSocket.CONNECTING)) return;
    this._status("connecting", `connecting to ${this.url}`);
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._lost(`cannot open ${this.url}: ${err.message}`);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => { this.openedAt = performance.now(); this._initialize(); };
    ws.onmessage = (ev) => this._receive(ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      const why = ev.reason ? `: ${ev.reason}` : ev.code === 1006 ? " (the server went away)" : "";
      this._lost(`the connection to the server was closed${why}`);
    };
    ws.onerror = () => { /* onclose follows, with the code */ };
  }

  _lost(message) {
    this.ws = null;
    for (const [, p] of this.pending) p.reject(new ConnectionLost(message));
    this.pending.clear();
    if (this.info !== null) this._newReady();
    this.info = null;
    if (this.stopped) { this._status("closed", message); return; }
    const delay = Math.min(5000, 500 * 2 ** Math.min(this.retry, 4));
    this.retry += 1;
    this._status("closed", message, { retryIn: delay });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Stop reconnecting and close. */
  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.ws) this.ws.close(1000);
  }

  async _initialize() {
    const options = { client: { name: "opgraph-web" }, errors: "structured" };
    if (this.token) options.token = this.token;
    try {
      const info = await this._call("initialize", [options]);
      const newServer = this.instance !== undefined && info.instance !== this.instance;
      this.instance = info.instance;
      this.info = info;
      this.retry = 0;
      this._status("open", `connected to ${info.name} ${info.version}`);
      this._resolveReady(info);
      this.dispatchEvent(new CustomEvent("ready", { detail: { info, newServer } }));
    } catch (err) {
      if (err instanceof RpcError && err.name === "unauthorized") {
        this._status("unauthorized", this.token
          ? "the server refused this token; enter the right one"
          : "this server needs a token");
      } else if (!(err instanceof ConnectionLost)) {
        this._status("closed", `initialize failed: ${err.message}`);
      }
    }
  }

  /** Use ``token`` from now on (kept for this tab's session) and initialize with it. */
  setToken(token) {
    this.token = token || null;
    storeToken(this.token);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this._initialize();
    else this.connect();
  }

  /** Whether the server has ``method`` (from initialize's method list). */
  has(method) {
    return !!(this.info && this.info.methods && this.info.methods.includes(method));
  }

  /** Resolves once initialized (at once if it is). */
  ready() { return this._ready; }

  /** Call ``method`` with positional ``params`` once initialized. */
  async request(method, ...params) {
    await this._ready;
    return this._call(method, params);
  }

  _call(method, params) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ConnectionLost("not connected to the server"));
    }
    const msgid = this.nextId;
    this.nextId = this.nextId >= MAX_MSGID ? 0 : this.nextId + 1;
    return new Promise((resolve, reject) => {
      this.pending.set(msgid, { resolve, reject, method, sent: performance.now() });
      ws.send(encode([0, msgid, method, params]));
    });
  }

  _receive(data) {
    let msg;
    try {
      msg = decode(new Uint8Array(data));
    } catch (err) {
      console.error("opgraph: a message that is not MessagePack", err);
      return;
    }
    if (!Array.isArray(msg)) return;
    if (msg[0] === 1) {
      const p = this.pending.get(msg[1]);
      if (!p) return;
      this.pending.delete(msg[1]);
      this.timings.push([p.method, p.sent, performance.now()]);
      if (this.timings.length > 200) this.timings.shift();
      if (msg[2] !== null && msg[2] !== undefined) p.reject(new RpcError(msg[2], p.method));
      else p.resolve(msg[3]);
    } else if (msg[0] === 2) {
      const params = msg[2];
      this.dispatchEvent(new CustomEvent("notification", {
        detail: { method: msg[1], params: Array.isArray(params) ? params : [params] },
      }));
    }
  }
}

/** The WebSocket address of the server that served this page. */
export function defaultUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/rpc`;
}
