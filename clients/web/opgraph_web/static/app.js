// The viewer's shell: the connection (status, token, reconnects), the routes (#/ the graphs,
// #/graph/NAME one graph, #/learn[/EXPRESSION] the learner's page) and the search box.

import { Rpc, defaultUrl } from "./rpc.js";
import { DRAW_LIMIT, GraphPage, h } from "./graphpage.js";
import { LearnPage } from "./learn.js";

const LIST_POLL_MS = 1000;

class ListPage {
  constructor(app, main) {
    this.app = app;
    this.rpc = app.rpc;
    this.rows = new Map();
    this.body = h("tbody");
    this.empty = h("p", { class: "hint", hidden: true }, "No graphs yet. Publish one from Python "
      + "(Client.publish), or open the learner's page.");
    this.el = h("section", { class: "list-page" },
      h("h1", {}, "Graphs on this server"),
      h("table", { class: "graphs" },
        h("thead", {}, h("tr", {}, h("th", {}, "graph"), h("th", {}, "nodes"),
          h("th", {}, "version"), h("th", {}, "subscribers"), h("th", {}, "shown as"))),
        this.body),
      this.empty,
      h("p", { class: "hint" }, "Versions update live. A graph of more than ",
        DRAW_LIMIT.toLocaleString("en"), " nodes opens as the server's summary. ",
        h("a", { href: "#/learn" }, "The learner's page"), " evaluates an expression of your own."));
    main.replaceChildren(this.el);
    this.timer = null;
    this.poll();
  }

  async poll() {
    try {
      const graphs = await this.rpc.request("graph.list");
      this.render(graphs);
      this.app.ready(this);
    } catch { /* the status line says why */ }
    if (!this.destroyed) this.timer = setTimeout(() => this.poll(), LIST_POLL_MS);
  }

  render(graphs) {
    const seen = new Set();
    for (const g of graphs) {
      seen.add(g.name);
      let row = this.rows.get(g.name);
      if (!row) {
        row = h("tr", { dataset: { graph: g.name } },
          h("td", {}, h("a", { href: `#/graph/${encodeURIComponent(g.name)}` }, g.name)),
          h("td", { class: "num nodes" }), h("td", { class: "num version" }),
          h("td", { class: "num subscribers" }), h("td", { class: "shown" }));
        this.rows.set(g.name, row);
      }
      const set = (cls, text) => {
        const cell = row.querySelector(`.${cls}`);
        if (cell.textContent !== text) cell.textContent = text;
      };
      set("nodes", g.nodes.toLocaleString("en"));
      set("version", String(g.version));
      set("subscribers", String(g.subscribers));
      set("shown", g.nodes > DRAW_LIMIT ? "summary" : "drawn whole");
    }
    for (const [name, row] of this.rows) {
      if (!seen.has(name)) { row.remove(); this.rows.delete(name); }
    }
    const ordered = [...this.rows.keys()].sort();
    ordered.forEach((name) => this.body.appendChild(this.rows.get(name)));
    this.empty.hidden = graphs.length > 0;
  }

  destroy() {
    this.destroyed = true;
    clearTimeout(this.timer);
  }
}

class App {
  constructor() {
    this.rpc = new Rpc(defaultUrl());
    this.main = document.getElementById("main");
    this.status = document.getElementById("status");
    this.banner = document.getElementById("banner");
    this.tokenForm = document.getElementById("token-form");
    this.searchInput = document.getElementById("search-input");
    this.results = document.getElementById("search-results");
    this.page = null;
    this.stats = { updates: [], readyAt: null };
    this.takeTokenFromUrl();
    this.rpc.addEventListener("status", (ev) => this.onStatus(ev.detail));
    this.rpc.addEventListener("ready", (ev) => this.onReady(ev.detail));
    this.rpc.addEventListener("notification", (ev) => {
      const { method, params } = ev.detail;
      if (this.page && this.page.onNotification) this.page.onNotification(method, params[0]);
    });
    this.tokenForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = document.getElementById("token-input").value;
      this.rpc.setToken(value);
    });
    window.addEventListener("hashchange", () => { this.takeTokenFromUrl(); this.route(); });
    this.setupSearch();
    this.rpc.connect();
    this.route();
  }

  /** ``#...?token=T`` (as the notebook helper links): keep the token, drop it from the URL. */
  takeTokenFromUrl() {
    const [path, query] = location.hash.split("?");
    if (!query) return;
    const params = new URLSearchParams(query);
    const token = params.get("token");
    if (token) {
      this.rpc.token = token;
      try { sessionStorage.setItem("opgraph-token", token); } catch { /* none */ }
      params.delete("token");
      const rest = params.toString();
      history.replaceState(null, "", `${path}${rest ? `?${rest}` : ""}`);
    }
  }

  onStatus({ state, message, retryIn }) {
    this.status.className = `status ${state}`;
    this.status.textContent = { open: "connected", connecting: "connecting…", closed: "disconnected",
                                unauthorized: "token needed" }[state] || state;
    this.status.title = message;
    this.tokenForm.hidden = state !== "unauthorized";
    if (state === "unauthorized") {
      document.getElementById("token-message").textContent = message;
      document.getElementById("token-input").focus();
    }
    if (state === "closed") {
      const again = h("button", { type: "button", onclick: () => this.rpc.connect() }, "reconnect now");
      this.showBanner([`${message}. `, retryIn ? `Trying again in ${(retryIn / 1000).toFixed(1)} s. ` : "", again]);
    } else if (state === "open") {
      this.showBanner(null);
    }
  }

  onReady({ newServer }) {
    if (newServer) {
      this.showBanner(["The server restarted: what this page showed was reloaded from it."], "info");
      setTimeout(() => this.showBanner(null), 4000);
    }
    // Subscriptions belong to a connection: after a reconnect the page loads (and subscribes)
    // again, so nothing from before is trusted.
    if (this.connectedOnce) this.route();
    this.connectedOnce = true;
  }

  showBanner(content, kind = "error") {
    this.banner.hidden = !content;
    this.banner.className = `banner ${kind}`;
    if (content) this.banner.replaceChildren(...content);
  }

  route() {
    if (this.page && this.page.destroy) this.page.destroy();
    this.page = null;
    this.stats.readyAt = null;
    this.searchEnabled(false);
    const hash = decodeURIComponent(location.hash.split("?")[0].replace(/^#/, "")) || "/";
    document.getElementById("nav-graphs").classList.toggle("on", hash === "/");
    document.getElementById("nav-learn").classList.toggle("on", hash.startsWith("/learn"));
    if (hash.startsWith("/graph/")) {
      const name = hash.slice("/graph/".length);
      document.title = `${name} · opgraph viewer`;
      this.page = new GraphPage(this, name, this.main);
    } else if (hash.startsWith("/learn")) {
      const expression = hash.slice("/learn/".length);
      document.title = "learn · opgraph viewer";
      this.page = new LearnPage(this, this.main, expression || undefined);
    } else {
      document.title = "opgraph viewer";
      this.page = new ListPage(this, this.main);
    }
  }

  /** A page says it is showing what it was asked for (used by tests and the benchmark). */
  ready(page) {
    if (page !== this.page) return;
    if (this.stats.readyAt === null) this.stats.readyAt = performance.now();
    document.body.dataset.ready = page.constructor.name;
  }

  /** A page applied an update (the time from the notification to the page changed). */
  updated(page, version, ms) {
    this.stats.updates.push({ version, ms });
    if (this.stats.updates.length > 200) this.stats.updates.shift();
    document.body.dataset.version = String(version);
  }

  searchEnabled(on) {
    this.searchInput.disabled = !on;
    if (!on) this.results.hidden = true;
  }

  setupSearch() {
    const form = document.getElementById("search");
    let seq = 0;
    const run = async () => {
      const mine = ++seq;
      const page = this.page;
      if (!page || !page.search) return;
      const found = await page.search(this.searchInput.value);
      if (mine !== seq) return;
      this.results.replaceChildren(...found.map((f) => h("li", { role: "option" },
        h("button", { type: "button", onclick: () => { this.results.hidden = true; f.go(); } }, f.text))));
      if (!found.length && this.searchInput.value.trim()) {
        this.results.append(h("li", { class: "none" }, "no node found"));
      }
      this.results.hidden = !this.searchInput.value.trim();
    };
    this.searchInput.addEventListener("input", run);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const page = this.page;
      if (!page || !page.search) return;
      const found = await page.search(this.searchInput.value);
      if (found.length) { this.results.hidden = true; found[0].go(); }
    });
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "/" && document.activeElement === document.body && !this.searchInput.disabled) {
        ev.preventDefault();
        this.searchInput.focus();
      } else if (ev.key === "Escape") {
        this.results.hidden = true;
      }
    });
  }
}

const app = new App();
// For the console, the tests and the benchmark.
window.opgraph = { app, rpc: app.rpc };
