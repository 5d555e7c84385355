// nextwatch: the page to try the service. Plain JavaScript, no build step, no dependencies.
// It uses only the public API: GET /titles, /genres, /recommend/<user>, /stats; POST /watched.
// Text from the catalog is only ever set with textContent: an imported title name is data.
(() => {
  "use strict";

  const TOP_K = 10;
  const PAGE_SIZE = 24;
  const STATS_EVERY_MS = 2000;
  const ID_PATTERN = /^[A-Za-z0-9_.:-]{1,128}$/;
  const STORED_KEY = "nextwatch.apiKey";
  const STORED_USER = "nextwatch.user";

  const $ = (id) => document.getElementById(id);
  const state = {
    user: null,
    q: "",
    genre: "",
    page: 1,
    pages: 0,
    titles: new Map(), // content_id -> title, for names of recommended titles
    gridIds: [],
    next: null, // the content id predicted next for the viewer
    watched: [], // titles watched in this tab, most recent first
    stats: null,
  };

  // -- the API --------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body, retryAfter) {
      super((body && body.detail) || `HTTP ${status}`);
      this.status = status;
      this.error = (body && body.error) || "";
      this.retryAfter = retryAfter;
    }
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: { Accept: "application/json", ...(options.headers || {}) } });
    } catch (failure) {
      throw new ApiError(0, { error: "unreachable", detail: "the API cannot be reached" }, null);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (notJson) {
      body = null;
    }
    if (!response.ok) throw new ApiError(response.status, body, response.headers.get("Retry-After"));
    return body;
  }

  // What a failed request means for the person at the page, in plain words.
  function explain(failure) {
    if (!(failure instanceof ApiError)) return `Something went wrong: ${failure.message}`;
    const retry = failure.retryAfter ? ` Try again in ${failure.retryAfter} s.` : "";
    switch (failure.status) {
      case 0:
        return "The API cannot be reached. Is the server running?";
      case 401:
        return failure.error === "invalid_api_key"
          ? "401 — the API key was not accepted (unknown or revoked). Check the key in the API key field."
          : "401 — this server has API keys configured: recording a watch needs a key with the write role. Enter it in the API key field above.";
      case 403:
        return `403 — this key may not do that: ${failure.message}`;
      case 429:
        return `429 — too many requests with this API key.${retry}`;
      case 503:
        return `503 — the service is unavailable right now (${failure.message}).${retry}`;
      default:
        return `${failure.status} — ${failure.message}`;
    }
  }

  function showError(message) {
    $("error-text").textContent = message;
    $("error").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error-text").textContent = "";
  }

  // -- drawing titles -------------------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // FNV-1a, then a murmur3 finaliser: ids that differ in one character (C001, C002) still
  // get far-apart hues.
  function hueOf(id) {
    let hash = 2166136261;
    for (const char of id) hash = Math.imul(hash ^ char.codePointAt(0), 16777619);
    hash = Math.imul(hash ^ (hash >>> 16), 0x85ebca6b);
    hash = Math.imul(hash ^ (hash >>> 13), 0xc2b2ae35);
    return ((hash ^ (hash >>> 16)) >>> 0) % 360;
  }

  function nameOf(id) {
    const title = state.titles.get(id);
    return (title && title.name) || id;
  }

  function poster(title, size) {
    const node = el("div", `poster ${size || ""}`.trim(), title.name || title.content_id);
    if (!title.name) node.classList.add("unnamed");
    node.style.setProperty("--hue", String(hueOf(title.content_id)));
    return node;
  }

  function chips(genres) {
    const node = el("div", "chips");
    for (const genre of genres || []) node.append(el("span", "chip", genre));
    return node;
  }

  function titleOf(id) {
    return state.titles.get(id) || { content_id: id, name: null, genres: [], year: null };
  }

  function card(title) {
    const node = el("button", "card");
    node.type = "button";
    node.dataset.contentId = title.content_id;
    node.title = `Watch ${title.name || title.content_id}`;
    const meta = el("div", "meta");
    if (title.year) meta.append(el("span", "", title.year));
    meta.append(el("span", "id", title.content_id));
    const body = el("div", "body");
    body.append(chips(title.genres), meta);
    node.append(poster(title), body);
    node.addEventListener("click", () => watch(title, node));
    return node;
  }

  function remember(titles) {
    for (const title of titles) state.titles.set(title.content_id, title);
  }

  // Names for ids that came from a recommendation: one GET /titles?ids=... for the unknown ones.
  async function learnTitles(ids) {
    const unknown = ids.filter((id) => !state.titles.has(id));
    if (!unknown.length) return;
    const query = new URLSearchParams({ ids: unknown.join(","), limit: "100" });
    remember((await api(`/titles?${query}`)).items);
  }

  // -- the catalog ----------------------------------------------------------------------------
  async function loadGenres() {
    const { genres } = await api("/genres");
    const select = $("filter-genre");
    for (const genre of genres) {
      const option = el("option", "", `${genre.name} (${genre.titles})`);
      option.value = genre.name;
      select.append(option);
    }
  }

  async function loadTitles() {
    const query = new URLSearchParams({ page: String(state.page), limit: String(PAGE_SIZE) });
    if (state.q) query.set("q", state.q);
    if (state.genre) query.set("genre", state.genre);
    let answer;
    try {
      answer = await api(`/titles?${query}`);
    } catch (failure) {
      showError(explain(failure));
      return;
    }
    remember(answer.items);
    state.pages = answer.pages;
    state.gridIds = answer.items.map((title) => title.content_id);
    const grid = $("grid");
    grid.replaceChildren(...answer.items.map(card));
    if (!answer.items.length) grid.append(el("p", "empty", answer.total ? "No titles on this page." : "No title matches."));
    $("catalog-count").textContent = `${answer.total.toLocaleString()} title${answer.total === 1 ? "" : "s"}`;
    $("page-info").textContent = answer.pages ? `page ${answer.page} of ${answer.pages}` : "";
    $("page-prev").disabled = state.page <= 1;
    $("page-next").disabled = state.page >= answer.pages;
    markGrid();
  }

  // Ribbons on the grid: the viewer's next title, and what was watched in this tab.
  function markGrid() {
    const watched = new Set(state.watched.map((title) => title.content_id));
    for (const node of $("grid").querySelectorAll(".card")) {
      const id = node.dataset.contentId;
      node.classList.toggle("up-next", id === state.next);
      node.querySelectorAll(".ribbon").forEach((ribbon) => ribbon.remove());
      if (id === state.next) node.append(el("span", "ribbon next", "up next"));
      if (watched.has(id)) node.append(el("span", "ribbon seen", "✓ watched"));
    }
  }

  // -- the viewer -----------------------------------------------------------------------------
  async function chooseUser(raw) {
    const id = raw.trim();
    if (!ID_PATTERN.test(id)) {
      showError("A user id is 1-128 characters from A-Z a-z 0-9 _ . : -");
      return;
    }
    clearError();
    state.user = id;
    state.watched = [];
    $("user-input").value = id;
    $("history").replaceChildren();
    sessionStorage.setItem(STORED_USER, id);
    await showNext(null);
  }

  // The viewer's next title and top-k list, from GET /recommend (a cache hit after a watch).
  async function showNext(because) {
    if (!state.user) return;
    let answer;
    try {
      answer = await api(`/recommend/${encodeURIComponent(state.user)}?k=${TOP_K}&explain=true`);
      await learnTitles(answer.recommendations || []);
    } catch (failure) {
      showError(explain(failure));
      return;
    }
    state.next = answer.recommendation;
    $("next-user").textContent = `for ${answer.user_id}`;
    $("next-empty").textContent = "Nothing to recommend yet: the catalog is empty.";
    $("next-empty").hidden = !!answer.recommendation;
    $("next").hidden = !answer.recommendation;
    if (answer.recommendation) drawNext(answer, because);
    drawTopK(answer.recommendations || [], answer.explanations || []);
    markGrid();
    loadStats();
  }

  function drawNext(answer, because) {
    const title = titleOf(answer.recommendation);
    $("next-title").dataset.contentId = title.content_id;
    $("next-poster").replaceWith(Object.assign(poster(title, "small"), { id: "next-poster" }));
    $("next-name").textContent = title.name || title.content_id;
    const meta = $("next-meta");
    meta.replaceChildren(chips(title.genres));
    if (title.year) meta.append(el("span", "", title.year));
    meta.append(el("span", "id", title.content_id));

    // The server's reason for the title (GET /recommend?explain=true), else what the source says.
    const reason = $("next-reason");
    const why = (answer.explanations || [])[0];
    if (why) {
      reason.replaceChildren(reasonText(why));
    } else if (because) {
      reason.replaceChildren("because you watched ", el("strong", "", because.name || because.content_id));
    } else {
      reason.textContent = {
        cache: "Cached from this viewer's earlier watches.",
        model: "Scored by the model from this viewer's history.",
        popular: "Popular with everyone: this viewer has no history yet.",
        catalog: "No model is published yet: the catalog's first title.",
      }[answer.source] || "";
    }
    const source = $("next-source");
    source.textContent = answer.fallback_used ? `fallback: ${answer.source}` : `source: ${answer.source}`;
    source.className = `badge ${answer.fallback_used ? "warn" : "good"}`;
    $("next-cache").textContent = answer.cache_hit ? "cache hit" : "cache miss";
    $("next-model").textContent = answer.model_version ? `model v${answer.model_version}` : "no model yet";
    if (answer.degraded) source.textContent += " (Redis unreachable)";
  }

  function reasonText(why) {
    return why.text || "";
  }

  function drawTopK(ids, explanations) {
    $("topk-size").textContent = String(TOP_K);
    $("topk").replaceChildren(...ids.map((id) => {
      const title = titleOf(id);
      const item = el("li");
      item.dataset.contentId = id;
      const button = el("button");
      button.type = "button";
      button.title = `Watch ${title.name || id}`;
      const label = el("span", "label");
      label.append(el("span", "", title.name || id), el("span", "", (title.genres || []).join(" · ") || id));
      const why = explanations.find((entry) => entry.content_id === id);
      if (why) label.append(el("span", "why", reasonText(why)));
      button.append(poster(title, "dot"), label);
      button.addEventListener("click", () => watch(title, null));
      item.append(button);
      return item;
    }));
  }

  async function watch(title, node) {
    if (!state.user) {
      showError("Choose a viewer first: type a user id at the top and press Use.");
      $("user-input").focus();
      return;
    }
    const headers = { "Content-Type": "application/json" };
    const key = sessionStorage.getItem(STORED_KEY);
    if (key) headers["X-API-Key"] = key;
    if (node) node.classList.add("busy");
    try {
      await api(`/watched?k=${TOP_K}`, {
        method: "POST",
        headers,
        body: JSON.stringify({ user_id: state.user, content_id: title.content_id }),
      });
    } catch (failure) {
      showError(explain(failure));
      return;
    } finally {
      if (node) node.classList.remove("busy");
    }
    clearError();
    remember([title]);
    state.watched = [title, ...state.watched.filter((t) => t.content_id !== title.content_id)].slice(0, 12);
    $("history").replaceChildren(...state.watched.map((t) => el("li", "", t.name || t.content_id)));
    await showNext(title);
  }

  // -- the counters ---------------------------------------------------------------------------
  async function loadStats() {
    let stats;
    try {
      stats = await api("/stats");
    } catch (failure) {
      $("stats-state").textContent = "(not updating)";
      return;
    }
    $("stats-state").textContent = "";
    const show = (id, value) => {
      const node = $(id);
      if (node.textContent !== value) {
        node.textContent = value;
        node.classList.add("moved");
        setTimeout(() => node.classList.remove("moved"), 700);
      }
    };
    show("stat-hits", stats.cache_hits.toLocaleString());
    show("stat-misses", stats.cache_misses.toLocaleString());
    show("stat-fallbacks", stats.fallbacks_used.toLocaleString());
    show("stat-watches", stats.watch_events.toLocaleString());
    show("stat-hit-rate", stats.hit_rate === null ? "–" : `${(stats.hit_rate * 100).toFixed(1)}%`);
    $("stat-hit-rate-bar").style.setProperty("--rate", String(stats.hit_rate || 0));
    state.stats = stats;
  }

  // -- wiring ---------------------------------------------------------------------------------
  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  function start() {
    $("viewer-form").addEventListener("submit", (event) => {
      event.preventDefault();
      chooseUser($("user-input").value);
    });
    $("user-new").addEventListener("click", () => {
      chooseUser(`viewer-${Math.random().toString(36).slice(2, 8)}`);
    });
    const keyInput = $("api-key");
    keyInput.value = sessionStorage.getItem(STORED_KEY) || "";
    keyInput.addEventListener("input", () => {
      const key = keyInput.value.trim();
      if (key) sessionStorage.setItem(STORED_KEY, key);
      else sessionStorage.removeItem(STORED_KEY);
    });
    $("error-close").addEventListener("click", clearError);
    $("filter-q").addEventListener("input", debounce(() => {
      state.q = $("filter-q").value.trim();
      state.page = 1;
      loadTitles();
    }, 250));
    $("filter-genre").addEventListener("change", () => {
      state.genre = $("filter-genre").value;
      state.page = 1;
      loadTitles();
    });
    $("page-prev").addEventListener("click", () => { state.page -= 1; loadTitles(); });
    $("page-next").addEventListener("click", () => { state.page += 1; loadTitles(); });

    loadGenres().catch((failure) => showError(explain(failure)));
    loadTitles();
    loadStats();
    setInterval(() => { if (!document.hidden) loadStats(); }, STATS_EVERY_MS);
    const user = sessionStorage.getItem(STORED_USER);
    if (user) chooseUser(user);
  }

  start();
})();
