"use strict";
(() => {
  const KEY = "speech-gateway.reviewer-token";
  const REPLAY_SECONDS = 3;
  const $ = (id) => document.getElementById(id);
  const statusBox = $("status"), progressBox = $("progress"), form = $("login");
  const tokenInput = $("token"), experimentInput = $("experiment"), forget = $("forget");
  const main = $("item"), audio = $("audio"), hypotheses = $("hypotheses");
  const choiceBox = $("choice"), reference = $("reference"), empty = $("empty");
  let token = null, experiment = null, item = null, audioUrl = null, busy = false;

  class HttpError extends Error {
    constructor(status, reason) { super(reason || "HTTP " + status); this.status = status; }
  }

  function setStatus(state, text) {
    statusBox.dataset.state = state;
    statusBox.textContent = text;
  }
  function showProgress(p) {
    if (!p) return;
    progressBox.textContent = p.reviewed + " of " + p.captures + " reviewed · " +
      p.remaining + " left · " + p.mine + " by you";
  }
  function base() {
    return "/admin/review/experiments/" + encodeURIComponent(experiment);
  }
  async function call(method, path, body) {
    const init = {method, headers: {"Authorization": "Bearer " + token}, cache: "no-store"};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(base() + path, init);
    if (!response.ok) {
      let reason = "HTTP " + response.status;
      try { reason = (await response.json()).error || reason; } catch (e) { /* not JSON */ }
      throw new HttpError(response.status, reason);
    }
    return response;
  }
  function fail(error) {
    if (error instanceof HttpError && error.status === 401) {
      signOut();
      setStatus("error", "The token was refused (401). Enter a reviewer token.");
      return;
    }
    setStatus("error", error instanceof HttpError ? error.message :
      "The gateway is unreachable: " + error.message);
  }

  function clearAudio() {
    audio.pause();
    audio.removeAttribute("src");
    if (audioUrl !== null) URL.revokeObjectURL(audioUrl);
    audioUrl = null;
  }
  async function loadAudio(captureId) {
    // The audio element cannot send the bearer token, so the WAV is fetched and played
    // from a blob: URL.
    const response = await call("GET", "/items/" + captureId + "/audio");
    const blob = await response.blob();
    if (!item || item.capture_id !== captureId) return;
    clearAudio();
    audioUrl = URL.createObjectURL(blob);
    audio.src = audioUrl;
    audio.load();
  }

  function hypothesis(h) {
    const box = document.createElement("div");
    box.className = "hypothesis";
    box.dataset.slot = h.slot;
    const name = document.createElement("b");
    name.textContent = h.slot.toUpperCase();
    const text = document.createElement("span");
    if (h.text) text.textContent = h.text;
    else { text.textContent = "(no text)"; text.className = "empty"; }
    const use = document.createElement("button");
    use.type = "button";
    use.textContent = "Use as reference";
    use.addEventListener("click", () => { reference.value = h.text || ""; reference.focus(); });
    box.append(name, " ", text, " ", use);
    return box;
  }
  function show(next, choice) {
    item = next;
    for (const radio of choiceBox.querySelectorAll("input")) radio.checked = false;
    if (!item) {
      clearAudio();
      main.hidden = true;
      empty.hidden = false;
      setStatus("ok", "Nothing left to review in " + experiment + ".");
      return;
    }
    empty.hidden = true;
    main.hidden = false;
    main.dataset.captureId = item.capture_id;
    hypotheses.replaceChildren(...item.hypotheses.map(hypothesis));
    choiceBox.hidden = !item.choice_needed;
    if (choice) { const radio = $("choice-" + choice); if (radio) radio.checked = true; }
    reference.value = item.prefill || "";
    setStatus("ok", "Reviewing in " + experiment + ".");
    loadAudio(item.capture_id).catch(fail);
  }

  async function act(work) {
    if (busy) return;  // one request at a time: a double press never saves twice
    busy = true;
    try { await work(); } catch (error) { fail(error); } finally { busy = false; }
  }
  async function claim() {
    const answer = await (await call("POST", "/claim")).json();
    showProgress(answer.progress);
    show(answer.item, null);
  }
  function chosen() {
    const radio = choiceBox.querySelector("input:checked");
    return radio ? radio.value : null;
  }
  async function regain(error) {
    // 409: the lease ran out (or the item went elsewhere). Claim again: the same item comes
    // back, with what was typed and chosen, if nobody took it meanwhile.
    if (!(error instanceof HttpError && error.status === 409)) throw error;
    const was = item ? item.capture_id : null, typed = reference.value, choice = chosen();
    const answer = await (await call("POST", "/claim")).json();
    showProgress(answer.progress);
    const same = answer.item && answer.item.capture_id === was;
    show(answer.item, same ? choice : null);
    if (same) reference.value = typed;
    setStatus("error", error.message + (same ? ". It is yours again: save it once more." :
      ". Here is the next item."));
  }
  const save = () => act(async () => {
    if (!item) return;
    const text = reference.value.trim();
    if (!text) { setStatus("error", "Type the reference transcript first."); return; }
    if (item.choice_needed && chosen() === null) {
      setStatus("error", "Choose A better, B better or Same first.");
      return;
    }
    try {
      await call("POST", "/items/" + item.capture_id + "/save",
        {text, choice: item.choice_needed ? chosen() : null});
    } catch (error) { await regain(error); return; }
    await claim();
  });
  const skip = () => act(async () => {
    if (!item) return;
    try {
      await call("POST", "/items/" + item.capture_id + "/skip");
    } catch (error) { await regain(error); return; }
    await claim();
  });
  const undo = () => act(async () => {
    const answer = await (await call("POST", "/undo")).json();
    showProgress(answer.progress);
    show(answer.item, answer.choice);
    setStatus("ok", "Your last save is undone: correct it and save again.");
  });
  function togglePlay() {
    if (audio.paused) audio.play().catch(() => {}); else audio.pause();
  }
  function replay() {
    audio.currentTime = Math.max(0, audio.currentTime - REPLAY_SECONDS);
    audio.play().catch(() => {});
  }
  function choose(value) {
    const radio = $("choice-" + value);
    if (radio && !choiceBox.hidden) radio.checked = true;
  }

  function signOut() {
    try { sessionStorage.removeItem(KEY); } catch (e) { /* storage disabled */ }
    token = null;
    item = null;
    clearAudio();
    main.hidden = true;
    empty.hidden = true;
    form.hidden = false;
    forget.hidden = true;
    progressBox.textContent = "";
    setStatus("idle", "Sign in to review.");
  }
  function start() {
    form.hidden = true;
    forget.hidden = false;
    setStatus("loading", "Loading…");
    act(claim);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    token = tokenInput.value.trim();
    experiment = experimentInput.value.trim();
    tokenInput.value = "";
    try { sessionStorage.setItem(KEY, token); } catch (e) { /* storage disabled */ }
    const url = new URL(location.href);
    url.searchParams.set("experiment", experiment);
    history.replaceState(null, "", url);
    start();
  });
  forget.addEventListener("click", signOut);
  $("save").addEventListener("click", save);
  $("skip").addEventListener("click", skip);
  $("undo").addEventListener("click", undo);
  $("undo-empty").addEventListener("click", undo);
  document.addEventListener("keydown", (event) => {
    if (main.hidden && !(event.altKey && event.key.toLowerCase() === "u")) return;
    if (event.ctrlKey && event.key === "Enter") { event.preventDefault(); save(); return; }
    if (!event.altKey) return;
    const actions = {p: togglePlay, r: replay, n: skip, u: undo,
      "1": () => choose("a"), "2": () => choose("b"), "3": () => choose("same")};
    const action = actions[event.key.toLowerCase()] || actions[event.code.replace(/^(Key|Digit)/, "").toLowerCase()];
    if (action) { event.preventDefault(); action(); }
  });

  experimentInput.value = new URL(location.href).searchParams.get("experiment") || "";
  let saved = null;
  try { saved = sessionStorage.getItem(KEY); } catch (e) { /* storage disabled */ }
  if (saved && experimentInput.value) {
    token = saved;
    experiment = experimentInput.value;
    start();
  }
})();
