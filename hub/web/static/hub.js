// The hub's pages kept current without a reload: the fleet table and a device's facts and rejects poll the
// JSON API every few seconds, charts are re-read from their page now and then, the roll-out list polls, and a
// run follows its Server-Sent Events stream. Times are UTC, as on the server-drawn page.
"use strict";

(() => {
  const POLL_MS = 5000;
  const CHARTS_MS = 60000;
  const STATUS_WORDS = { online: "online", stale: "stale", offline: "offline", never_seen: "never seen" };
  const DOWN = "The hub is not answering: what is shown may be out of date. Retrying.";

  const $ = (selector, scope = document) => scope.querySelector(selector);
  const $$ = (selector, scope = document) => [...scope.querySelectorAll(selector)];

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "style") node.style.cssText = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const percent = (ratio) => (ratio === null || ratio === undefined ? "—" : `${(ratio * 100).toFixed(1)} %`);
  const number = (n) => Number(n).toLocaleString("en-US", { maximumFractionDigits: 0 });
  const when = (iso) => (iso ? `${new Date(iso).toISOString().slice(0, 19).replace("T", " ")} UTC` : "—");
  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    const s = Math.max(seconds, 0);
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
      if (s >= size) return `${Math.floor(s / size)} ${unit} ago`;
    }
    return `${Math.floor(s)} s ago`;
  }

  // --- talking to the hub --------------------------------------------------------------------
  const banner = $('[data-testid="banner"]');
  function showDown(down) {
    if (!banner) return;
    $(".banner-list", banner).replaceChildren(...(down ? [el("li", { text: DOWN })] : []));
    banner.hidden = !down;
  }
  function toLogin() {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
  }

  class HubError extends Error {
    constructor(status, body) {
      super((body && body.detail) || `The hub answered ${status}.`);
      this.status = status;
      this.code = body && body.code;
    }
  }

  async function call(url, options = {}) {
    let response;
    try {
      response = await fetch(url, {
        credentials: "same-origin",
        headers: { Accept: "application/json", ...(options.body ? { "Content-Type": "application/json" } : {}) },
        signal: AbortSignal.timeout(10000),
        ...options,
      });
    } catch (error) {
      showDown(true);
      throw error;
    }
    showDown(false);
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new HubError(response.status, body);
    return body;
  }

  // Poll while the tab is visible, never two requests at once; a 401 (session expired) goes to the login page.
  function every(ms, job) {
    let busy = false;
    const tick = async () => {
      if (busy || document.hidden) return;
      busy = true;
      try {
        await job();
        const stamp = $("[data-refreshed]");
        if (stamp) stamp.textContent = `Updated ${new Date().toISOString().slice(11, 19)} UTC.`;
      } catch (error) {
        if (error instanceof HubError && error.status === 401) toLogin();
      } finally {
        busy = false;
      }
    };
    setInterval(tick, ms);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
  }

  const statusChip = (status) => el("span", { class: `status status-${status}`, "data-status": status, text: STATUS_WORDS[status] || status });
  const heartbeat = (d) => (d.last_heartbeat_at
    ? [el("span", { class: "ago", text: ago(d.silent_s) }), el("span", { class: "abs", text: when(d.last_heartbeat_at) })]
    : ["never"]);
  const models = (d) => (d.models.length ? d.models.map((m) => el("span", { class: "model", text: `${m.name} v${m.version}` })) : ["—"]);

  // --- the fleet table -----------------------------------------------------------------------
  function fleetRow(d) {
    const notReady = d.ready === false && d.status !== "never_seen";
    return el("tr", { "data-testid": "device-row", "data-device": d.device_id },
      el("th", { scope: "row" },
        el("a", { href: `/devices/${encodeURIComponent(d.device_id)}`, "data-field": "device_id", text: d.device_id }),
        d.revoked ? [" ", el("span", { class: "chip bad", text: "revoked" })] : null),
      el("td", { "data-field": "place", text: `${d.site || "—"} · ${d.line || "—"}` }),
      el("td", { "data-field": "status" }, statusChip(d.status),
        notReady ? [" ", el("span", { class: "chip bad", title: d.problems.join(" "), text: "not ready" })] : null),
      el("td", { "data-field": "heartbeat" }, heartbeat(d)),
      el("td", { "data-field": "version", text: d.version || "—" }),
      el("td", { "data-field": "station", text: d.station_id || "—" }),
      el("td", { "data-field": "models" }, models(d)),
      el("td", { class: "num", "data-field": "total", text: number(d.today.total) }),
      el("td", { class: "num", "data-field": "yield_ratio", text: percent(d.today.yield_ratio) }),
      el("td", { class: "num", "data-field": "reject_rate", text: percent(d.today.reject_rate) }));
  }

  function fleetPage(root) {
    const body = $("tbody", root);
    every(POLL_MS, async () => {
      const fleet = await call(root.dataset.api);
      const rows = fleet.devices.map(fleetRow);
      if (rows.length) body.replaceChildren(...rows);
      for (const [status, count] of Object.entries(fleet.statuses)) {
        const tile = $(`[data-count="${status}"]`, root);
        if (tile) tile.textContent = count;
      }
      for (const node of $$("[data-total]", root)) {
        const value = fleet.today[node.dataset.total];
        node.textContent = node.dataset.total === "total" ? number(value) : percent(value);
      }
    });
  }

  // --- one device ------------------------------------------------------------------------------
  function box(d) {
    const [x0, y0, x1, y1] = d.box;
    const pct = (v) => `${(v * 100).toFixed(2)}%`;
    const place = `${x0 > 0.5 ? " flip-x" : ""}${y0 < 0.12 ? " label-below" : ""}`;
    return el("div", { class: `box${place}`, "data-testid": "ko-box", style: `left: ${pct(x0)}; top: ${pct(y0)}; width: ${pct(x1 - x0)}; height: ${pct(y1 - y0)}` },
      el("span", { class: "box-label", text: `${d.label.replaceAll("_", " ")} ${Math.round(d.score * 100)} %` }));
  }

  function koCard(r) {
    const verdict = r.verdict
      ? el("span", { class: `verdict${r.overridden ? " overridden" : ""}`, "data-testid": "ko-verdict", text: `Operator: ${r.verdict}${r.overridden ? " (overridden)" : " (confirmed)"}` })
      : null;
    const cameras = r.cameras.map((c) => el("figure", { class: "shot", "data-testid": "ko-camera", "data-camera": c.camera_id },
      c.image
        ? el("div", { class: "shot-frame" },
          el("img", {
            src: `/api/v1/images/${r.item_id}/${encodeURIComponent(c.camera_id)}`,
            alt: `Camera ${c.camera_id} of part ${r.part_id || r.item_id.slice(0, 8)}, ${c.detections.length} finding(s) outlined`,
            loading: "lazy", width: c.width, height: c.height,
          }),
          c.detections.map(box))
        : el("p", { class: "shot-missing", text: "No image kept for this camera." }),
      el("figcaption", {}, `${c.camera_id}: `, el("strong", { text: c.decision }),
        c.label ? ` · ${c.label} ${Math.round((c.score || 0) * 100)} %` : "",
        c.model ? [" ", el("span", { class: "muted", text: `(${c.model})` })] : null)));
    return el("article", { class: "card ko", "data-testid": "ko", "data-item": r.item_id, "data-verdict": r.verdict || "" },
      el("header", { class: "ko-head" }, el("span", { class: "chip decision-ko", text: "KO" }), verdict,
        el("span", { class: "muted ko-time", text: when(r.decided_at) })),
      el("p", { class: "ko-part", text: `${r.part_id ? `Part ${r.part_id} · ` : ""}${r.labels.join(", ") || "no label"}` }),
      el("div", { class: "ko-cameras" }, cameras));
  }

  function devicePage(root) {
    const kos = $("[data-kos]", root);
    every(POLL_MS, async () => {
      const [d, found] = await Promise.all([call(root.dataset.api), call(kos.dataset.api)]);
      const set = (field, ...children) => { for (const node of $$(`[data-field="${field}"]`)) node.replaceChildren(...children); };
      set("status", statusChip(d.status));
      set("heartbeat", ...heartbeat(d));
      set("version", d.version || "—");
      set("models", ...models(d));
      set("ready", d.ready === null ? "—" : d.ready ? "yes" : "no");
      set("total", number(d.today.total));
      set("yield_ratio", percent(d.today.yield_ratio));
      set("reject_rate", percent(d.today.reject_rate));
      set("problems", ...d.problems.map((p) => el("li", { text: p })));
      // Redrawn only when the list changed: images already shown are not reloaded (a verdict counts as a change).
      const key = (items) => items.map((r) => `${r.item_id}:${r.verdict || ""}`).join(" ");
      const shown = $$("[data-item]", kos).map((n) => `${n.dataset.item}:${n.dataset.verdict}`).join(" ");
      if (found.results.length && key(found.results) !== shown) {
        kos.replaceChildren(...found.results.map(koCard));
      }
    });
  }

  // --- charts: re-read from the page itself (drawn server-side, as on first paint) -----------------
  function refreshCharts(parts) {
    every(CHARTS_MS, async () => {
      const response = await fetch(location.href, { credentials: "same-origin", signal: AbortSignal.timeout(15000) });
      if (response.status === 401 || response.redirected) throw new HubError(401, null);
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const part of parts) {
        const next = fresh.querySelector(`[data-refresh="${part.dataset.refresh}"]`);
        if (next) part.replaceChildren(...next.childNodes);
      }
    });
  }

  // --- roll-outs ---------------------------------------------------------------------------------
  const FINAL = new Set(["successful", "failed", "canceled"]);
  const runStatus = (status, testid) => el("span", { class: `run-status st-${status}`, "data-testid": testid, text: status });
  function what(r) {
    if (r.version) return `version ${r.version}`;
    if (r.models && r.models.length) return r.models.map((m) => `${m.name} v${m.version}`).join(", ");
    return "—";
  }

  function rolloutsPage(root) {
    const rows = $("[data-rollout-rows]", root);
    const listError = $("[data-list-error]", root);
    const load = async () => {
      try {
        const { rollouts } = await call("/api/v1/rollouts");
        listError.hidden = true;
        rows.replaceChildren(...(rollouts.length ? rollouts.map((r) => el("tr", { "data-testid": "rollout-row", "data-rollout": r.id },
          el("th", { scope: "row" }, el("a", { href: `/rollouts/${r.id}`, text: `#${r.id}` })),
          el("td", { text: r.playbook }), el("td", { text: r.target }), el("td", { text: what(r) }),
          el("td", {}, runStatus(r.status, "rollout-row-status")),
          el("td", { text: when(r.started_at || r.created_at) }),
          el("td", { text: `${r.hosts.length}` })))
          : [el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No roll-out yet." }))]));
      } catch (error) {
        if (error instanceof HubError && error.status === 401) throw error;
        listError.textContent = `The roll-outs could not be read: ${error.message}`;
        listError.hidden = false;
      }
    };
    load();
    every(3000, load);

    const form = $("[data-rollout-form]", root);
    const formError = $("[data-form-error]", form);
    const playbook = form.elements.namedItem("playbook");
    const showFields = () => { for (const part of $$("[data-for]", form)) part.hidden = part.dataset.for !== playbook.value; };
    playbook.addEventListener("change", showFields);
    showFields();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const value = (name) => form.elements.namedItem(name).value.trim() || null;
      const body = { playbook: playbook.value, target: value("target"), version: null, model: null };
      if (body.playbook === "deploy_edge") body.version = value("version");
      if (body.playbook === "update_models") body.model = { name: value("model_name"), version: value("model_version") };
      formError.hidden = true;
      try {
        const run = await call("/api/v1/rollouts", { method: "POST", body: JSON.stringify(body) });
        location.assign(`/rollouts/${run.id}`);
      } catch (error) {
        formError.textContent = error instanceof HubError && error.status === 401
          ? "Starting a roll-out needs the admin key: log in first."
          : `The roll-out was not started: ${error.message}`;
        formError.hidden = false;
      }
    });
  }

  function hostRow(h) {
    return el("tr", { "data-testid": "host-row", "data-host": h.host },
      el("th", { scope: "row", text: h.host }),
      el("td", {}, el("span", { class: `host-status st-${h.status}`, "data-testid": "host-status", text: h.status })),
      el("td", { class: "num", text: h.ok }), el("td", { class: "num", text: h.changed }), el("td", { class: "num", text: h.failed }),
      el("td", { text: h.last_task || "—" }), el("td", { text: when(h.updated_at) }));
  }

  function rolloutRun(root) {
    const id = root.dataset.id;
    const status = $("[data-run-status]");
    const hosts = $("[data-host-rows]", root);
    const events = $("[data-events]", root);
    const error = $("[data-run-error]", root);
    const cancel = $("[data-run-cancel]", root);
    const setStatus = (value) => {
      status.textContent = value;
      status.className = `run-status st-${value}`;
      if (cancel) cancel.hidden = FINAL.has(value);
    };
    const putHost = (h) => {
      const row = hostRow(h);
      const existing = $(`tr[data-host="${CSS.escape(h.host)}"]`, hosts);
      if (existing) existing.replaceWith(row); else hosts.append(row);
    };
    const draw = (r) => {
      setStatus(r.status);
      $("[data-run-facts]", root).replaceChildren(...[
        ["Playbook", r.playbook], ["Target", r.target], ["What", what(r)], ["Created", when(r.created_at)],
        ["Started", when(r.started_at)], ["Finished", when(r.finished_at)], ["Exit code", r.rc ?? "—"], ["Detail", r.detail || "—"],
      ].map(([term, value]) => el("div", {}, el("dt", { text: term }), el("dd", { text: value }))));
      hosts.replaceChildren(...r.hosts.map(hostRow));
    };
    // The stream replays every event after `after`: a lost connection resumes after the last one shown (the
    // browser's own reconnection would start again from the first).
    let last = 0;
    let finished = false;
    const follow = () => {
      const stream = new EventSource(`/api/v1/rollouts/${id}/events?after=${last}`);
      stream.onerror = () => {
        stream.close();
        if (!finished) setTimeout(follow, 2000);
      };
      stream.onmessage = (message) => {
        const e = JSON.parse(message.data);
        last = Math.max(last, Number(e.id) || 0);
        const atEnd = events.scrollTop + events.clientHeight >= events.scrollHeight - 4;
        events.append(el("li", { text: `${when(e.at).slice(11, 19)} ${e.host || "all"}: ${e.event}${e.task ? ` · ${e.task}` : ""}${e.detail ? ` · ${e.detail}` : ""}` }));
        if (atEnd) events.scrollTop = events.scrollHeight;  // follow the newest, unless the reader scrolled up
        if (e.host_status) putHost(e.host_status);
        if (e.rollout_status) setStatus(e.rollout_status);
        if (e.event === "rollout_finished") {
          finished = true;
          stream.close();
          call(`/api/v1/rollouts/${id}`).then(draw).catch(() => {});
        }
      };
    };
    call(`/api/v1/rollouts/${id}`).then((r) => { draw(r); follow(); }).catch((e) => {
      if (e instanceof HubError && e.status === 401) return toLogin();
      error.textContent = e.message;
      error.hidden = false;
      setStatus("unknown");
    });
    if (cancel) {
      cancel.addEventListener("click", async () => {
        try {
          await call(`/api/v1/rollouts/${id}/cancel`, { method: "POST" });
        } catch (e) {
          error.textContent = `The roll-out was not canceled: ${e.message}`;
          error.hidden = false;
        }
      });
    }
  }

  const fleetRoot = $("[data-fleet]");
  if (fleetRoot) fleetPage(fleetRoot);
  const deviceRoot = $("[data-device-page]");
  if (deviceRoot) devicePage(deviceRoot);
  const charted = $$("[data-refresh]");
  if (charted.length) refreshCharts(charted);
  const rollouts = $("[data-rollouts]");
  if (rollouts) rolloutsPage(rollouts);
  const run = $("[data-rollout-run]");
  if (run) rolloutRun(run);
})();
