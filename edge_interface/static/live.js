// The live page: follows the line through the interface's /events stream (no polling, no reload).
// On `item.decided` the decision is shown from the event at once, then the item's cameras are drawn
// from /api/items/<id>. `interface.health` drives the banner; a lost stream shows it too.
"use strict";

(() => {
  const root = document.querySelector("[data-live]");
  if (!root) return;

  const DECISION_CLASS = { OK: "decision-ok", KO: "decision-ko", NO_DECISION: "decision-nd" };
  const DECISION_WORDS = {
    OK: "Part accepted",
    KO: "Part rejected",
    NO_DECISION: "Not decided: a person must check this part",
  };
  // Under the machine's decision once an operator overrode it (the tile keeps the machine's colour).
  const MACHINE_WORDS = {
    OK: "Accepted by the machine",
    KO: "Rejected by the machine",
    NO_DECISION: "Not decided by the machine",
  };
  const WAITING = "Waiting for the first part";
  const UNREACHABLE = "No data: the device is unreachable";
  const LEVEL_WORDS = {
    ok: "Line health: all well",
    degraded: "Line health: degraded, see the problems listed",
    down: "Line health: the orchestrator is not answering",
    lost: "Line health: unknown, the dashboard lost its connection to its server",
  };
  const ALL_CLASSES = ["decision-ok", "decision-ko", "decision-nd", "decision-none"];
  const LOST = "The dashboard lost its connection to its server: reconnecting. Decisions shown may be out of date.";
  const stripSize = Number(root.dataset.stripSize) || 12;

  const $ = (selector, scope = document) => scope.querySelector(selector);
  const byTestId = (id, scope = document) => scope.querySelector(`[data-testid="${CSS.escape(id)}"]`);
  const setDecisionClass = (el, decision) => {
    el.classList.remove(...ALL_CLASSES);
    el.classList.add(DECISION_CLASS[decision] || "decision-none");
  };
  const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "—");

  // --- the banner ---------------------------------------------------------------------------
  const banner = byTestId("banner");
  // As the server drew the page; then as the health events say.
  let serverProblems = [...banner.querySelectorAll("li")].map((li) => li.textContent);
  let serverDown = document.body.classList.contains("line-down");
  let streamLost = false;
  function drawMark() {
    const mark = $("[data-health-mark]");
    if (!mark) return;
    const level = streamLost ? "lost" : serverDown ? "down" : serverProblems.length ? "degraded" : "ok";
    mark.classList.remove("level-ok", "level-degraded", "level-down");
    mark.classList.add(`level-${level === "lost" ? "down" : level}`);
    mark.setAttribute("aria-label", LEVEL_WORDS[level]);
    mark.title = LEVEL_WORDS[level];
  }

  function drawBanner() {
    drawMark();
    const problems = streamLost ? [LOST] : serverProblems;
    const list = $(".banner-list", banner);
    list.replaceChildren(
      ...problems.map((text) => {
        const li = document.createElement("li");
        li.textContent = text;
        return li;
      }),
    );
    banner.hidden = problems.length === 0;
    document.body.classList.toggle("line-down", streamLost || serverDown);
  }

  // The page was drawn while the orchestrator was down: station, cameras and strip are unknown until it answers.
  let unknownLine = Boolean($("[data-strip-note]"));

  function showHealth(health) {
    serverProblems = Array.isArray(health.problems) ? health.problems : [];
    const wasDown = serverDown;
    serverDown = health.orchestrator !== "ok";
    streamLost = false;
    drawBanner();
    if (!serverDown && (wasDown || unknownLine)) lineIsBack();
    if (serverDown && !shownItem) $("[data-live-words]").textContent = UNREACHABLE;
    const cameras = health.cameras || {};
    for (const panel of document.querySelectorAll("[data-camera]")) {
      const state = cameras[panel.dataset.camera];
      panel.classList.toggle("camera-down", Boolean(state) && state !== "ok");
      panel.title = state && state !== "ok" ? state : "";
    }
  }

  function lineIsBack() {
    // What could not be known while it was down: the station and its cameras (the strip fills as parts come).
    if (unknownLine) {
      unknownLine = false;
      $("[data-strip-note]")?.remove();
    }
    if (!shownItem) $("[data-live-words]").textContent = WAITING;
    onStation();
  }

  // --- the latest item ----------------------------------------------------------------------
  // The order events arrived in on this page (not the orchestrator's ids, which restart with it): the item on
  // screen is the latest to arrive, and a late answer for an older one never replaces it.
  let received = 0;
  let shownSeq = -1;
  // The item the server drew, if any (its link), until an event brings a newer one.
  let shownItem = byTestId("live-item-link").getAttribute("href")?.split("/").pop() || null;
  let pendingTrigger = null; // the item this screen triggered, until its decision is shown

  function showSummary(data, seq) {
    if (seq < shownSeq) return false;
    shownSeq = seq;
    shownItem = data.item_id;
    const decision = data.decision || "NO_DECISION";
    const tile = $("[data-live-tile]");
    setDecisionClass(tile, decision);
    const shown = byTestId("live-decision");
    setDecisionClass(shown, decision);
    shown.textContent = decision;
    $("[data-live-words]").textContent = DECISION_WORDS[decision] || "";
    byTestId("live-part-id").textContent = data.part_id || "—";
    const link = byTestId("live-item-link");
    link.href = `/items/${encodeURIComponent(data.item_id)}`;
    link.removeAttribute("aria-disabled");
    $("[data-live-reasons]").replaceChildren(...(data.reasons || []).map(listItem));
    $("[data-live-overridden]").replaceChildren();
    return true;
  }

  function showNoStation() {
    let empty = $("[data-empty-cameras]");
    if (!empty) {
      empty = document.createElement("p");
      empty.className = "empty-cameras";
      empty.dataset.emptyCameras = "";
      $("[data-cameras]").append(empty);
    }
    const link = document.createElement("a");
    link.href = "/station";
    link.textContent = "Station";
    empty.replaceChildren("No station is active: choose one on the ", link, " page.");
  }

  function listItem(text) {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  }

  function cameraPanel(cameraId) {
    let panel = byTestId(`live-camera-${cameraId}`);
    if (panel) return panel;
    const fragment = $("#camera-template").content.cloneNode(true);
    panel = $("article", fragment);
    panel.dataset.camera = cameraId;
    panel.dataset.testid = `live-camera-${cameraId}`;
    $("h2", panel).textContent = `Camera ${cameraId}`;
    $(".chip", panel).dataset.testid = `live-camera-decision-${cameraId}`;
    $("img", panel).dataset.testid = `live-image-${cameraId}`;
    $("img", panel).alt = `Camera ${cameraId}: the latest part, with what the model found drawn on it`;
    $(".camera-reason", panel).dataset.testid = `live-camera-reason-${cameraId}`;
    $("[data-cameras]").append(panel);
    $("[data-empty-cameras]")?.remove();
    return panel;
  }

  function showCameras(item) {
    const ids = item.cameras.map((c) => c.camera_id);
    for (const panel of document.querySelectorAll("[data-camera]")) {
      if (!ids.includes(panel.dataset.camera)) panel.remove(); // the station changed
    }
    for (const camera of item.cameras) {
      const panel = cameraPanel(camera.camera_id);
      setDecisionClass(panel, camera.decision);
      const chip = $(".chip", panel);
      setDecisionClass(chip, camera.decision);
      chip.textContent = camera.decision;
      $(".camera-reason", panel).textContent = (camera.reasons || []).join("; ");
      const img = $("img", panel);
      const placeholder = $(".camera-placeholder", panel);
      if (camera.image && camera.image.stored) {
        img.src = `/images/${encodeURIComponent(item.item_id)}/${encodeURIComponent(camera.camera_id)}?annotated=true`;
        img.hidden = false;
        placeholder.hidden = true;
      } else {
        img.removeAttribute("src");
        img.hidden = true;
        placeholder.textContent = camera.error_code ? "No image: the camera did not deliver one" : "No image kept for this part";
        placeholder.hidden = false;
      }
    }
  }

  function verdictBand(verdict, machine) {
    // "Operator: OK — machine said KO", inside the tile: the operator's word is the one that counts.
    const band = document.createElement("p");
    band.className = "tile-verdict";
    const operator = document.createElement("span");
    operator.className = "tile-verdict-operator";
    const chip = document.createElement("span");
    chip.className = `chip ${DECISION_CLASS[verdict] || "decision-none"}`;
    chip.textContent = verdict;
    operator.append("Operator: ", chip);
    const machineSaid = document.createElement("span");
    machineSaid.className = "tile-verdict-machine";
    const dash = document.createElement("span");
    dash.className = "visually-hidden";
    dash.textContent = "\u2014 ";
    machineSaid.append(dash, `machine said ${machine}`);
    band.append(operator, " ", machineSaid);
    return band;
  }

  // --- the strip ----------------------------------------------------------------------------
  function stripEntry(data, overridden) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    const decision = data.decision || "NO_DECISION";
    a.className = `strip-item ${DECISION_CLASS[decision]}`;
    a.href = `/items/${encodeURIComponent(data.item_id)}`;
    a.dataset.testid = "strip-item";
    a.dataset.itemId = data.item_id;
    a.dataset.decision = decision;
    a.dataset.overridden = overridden ? "true" : "false";
    const time = clock(data.decided_at || new Date().toISOString());
    a.title = `${decision} · ${data.part_id || "no part id"} · ${time}`;
    const parts = [
      ["strip-decision", decision.replace("_", " ")], // NO DECISION may wrap in a narrow tile
      ["strip-part", data.part_id || "no part id"],
      ["strip-time", time],
    ];
    if (overridden) parts.push(["strip-overridden", "\u270E overridden"]);
    for (const [cls, text] of parts) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      a.append(span);
    }
    li.append(a);
    return li;
  }

  function addToStrip(data) {
    const strip = byTestId("strip");
    strip.querySelector(`[data-item-id="${CSS.escape(data.item_id)}"]`)?.parentElement.remove();
    strip.prepend(stripEntry(data, false));
    while (strip.children.length > stripSize) strip.lastElementChild.remove();
  }

  function markOverridden(itemId, verdict, overrides) {
    const entry = byTestId("strip").querySelector(`[data-item-id="${CSS.escape(itemId)}"]`);
    if (entry) {
      entry.dataset.overridden = overrides ? "true" : "false";
      entry.querySelector(".strip-overridden")?.remove();
      if (overrides) {
        const span = document.createElement("span");
        span.className = "strip-overridden";
        span.textContent = "\u270E overridden";
        entry.append(span);
      }
    }
    if (itemId === shownItem) {
      const machine = byTestId("live-decision").textContent.trim();
      $("[data-live-overridden]").replaceChildren(...(overrides ? [verdictBand(verdict, machine)] : []));
      $("[data-live-words]").textContent = (overrides ? MACHINE_WORDS : DECISION_WORDS)[machine] || "";
    }
  }

  // --- events -------------------------------------------------------------------------------
  async function onDecided(event) {
    const payload = JSON.parse(event.data).data;
    const seq = ++received;
    addToStrip(payload);
    if (!showSummary(payload, seq)) return;
    if (payload.item_id === pendingTrigger) setStatus("");
    try {
      const response = await fetch(`/api/items/${encodeURIComponent(payload.item_id)}`);
      if (!response.ok || seq !== shownSeq) return;
      const item = await response.json();
      if (seq !== shownSeq) return;
      showCameras(item);
      const time = $("[data-live-time]");
      time.textContent = clock(item.decided_at);
      if (item.verdict) markOverridden(item.item_id, item.verdict.decision, item.verdict.overrides);
    } catch (error) {
      // The stream will say what is wrong (health events); the summary already shows the decision.
    }
  }

  async function onStation() {
    try {
      const response = await fetch("/api/station");
      if (!response.ok) return;
      const station = await response.json();
      $("[data-live-station]").textContent = station.name || "none active";
      for (const panel of document.querySelectorAll("[data-camera]")) {
        if (!station.cameras.includes(panel.dataset.camera)) panel.remove();
      }
      for (const cameraId of station.cameras) cameraPanel(cameraId);
      if (!station.cameras.length) showNoStation();
    } catch (error) {
      // Shown by the next health event.
    }
  }

  const stream = new EventSource("/events");
  stream.addEventListener("item.decided", onDecided);
  stream.addEventListener("item.interrupted", onDecided);
  stream.addEventListener("item.verdict", (event) => {
    const data = JSON.parse(event.data).data;
    markOverridden(data.item_id, data.verdict, data.overrides);
  });
  stream.addEventListener("station.activated", onStation);
  stream.addEventListener("interface.health", (event) => showHealth(JSON.parse(event.data)));
  stream.addEventListener("error", () => {
    streamLost = true;
    drawBanner();
  });
  window.addEventListener("pagehide", () => stream.close());

  // --- trigger ------------------------------------------------------------------------------
  const form = $("[data-trigger-form]");
  const status = $("[data-trigger-status]");

  function setStatus(text, isError = false) {
    form.querySelector('[data-testid="error"]')?.remove();
    status.textContent = isError ? "" : text;
    if (isError) {
      const error = document.createElement("p");
      error.className = "error";
      error.dataset.testid = "error";
      error.setAttribute("role", "alert");
      error.textContent = text;
      form.append(error);
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = byTestId("trigger-button");
    const partId = byTestId("trigger-part-id").value.trim();
    button.disabled = true;
    try {
      const response = await fetch("/api/trigger", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(partId ? { part_id: partId } : {}),
      });
      const body = await response.json().catch(() => ({}));
      if (response.status === 202) {
        pendingTrigger = body.item_id;
        byTestId("trigger-part-id").value = ""; // the next part has its own id: never reuse this one by mistake
        if (pendingTrigger !== shownItem) setStatus(partId ? `Inspecting part ${partId}…` : "Inspecting…");
      } else {
        setStatus(body.error || "The trigger was not accepted.", true);
      }
    } catch (error) {
      setStatus("The dashboard's server is not answering: the part was not inspected.", true);
    } finally {
      button.disabled = false;
    }
  });
})();
