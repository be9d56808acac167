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
  let serverProblems = [];
  let serverDown = false;
  let streamLost = false;
  const banner = byTestId("banner");
  function drawBanner() {
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

  function showHealth(health) {
    serverProblems = Array.isArray(health.problems) ? health.problems : [];
    serverDown = health.orchestrator !== "ok";
    streamLost = false;
    drawBanner();
    const cameras = health.cameras || {};
    for (const panel of document.querySelectorAll("[data-camera]")) {
      const state = cameras[panel.dataset.camera];
      panel.classList.toggle("camera-down", Boolean(state) && state !== "ok");
      panel.title = state && state !== "ok" ? state : "";
    }
  }

  // --- the latest item ----------------------------------------------------------------------
  let shownSeq = -1; // the event sequence of the item on screen: late answers never replace a newer one
  let shownItem = null;
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
    $(".empty-cameras")?.remove();
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

  function overriddenMark(verdict) {
    const mark = document.createElement("span");
    mark.className = "overridden";
    mark.textContent = `\u270E overridden to ${verdict}`;
    mark.title = "An operator overrode the machine's decision";
    return mark;
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
    const parts = [
      ["strip-decision", decision.replace("_", " ")], // NO DECISION may wrap in a narrow tile
      ["strip-part", data.part_id || "no part id"],
      ["strip-time", clock(data.decided_at || new Date().toISOString())],
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
      $("[data-live-overridden]").replaceChildren(...(overrides ? [overriddenMark(verdict)] : []));
    }
  }

  // --- events -------------------------------------------------------------------------------
  async function onDecided(event) {
    const payload = JSON.parse(event.data).data;
    const seq = Number(event.lastEventId) || shownSeq + 1;
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
