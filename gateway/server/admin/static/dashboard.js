
"use strict";
(() => {
  const KEY = "speech-gateway.admin-token";
  const ACTIONS = {ship_custom: "Ship custom", ramp_up: "Ramp up", keep_collecting:
    "Keep collecting", keep_base: "Keep base", roll_back: "Roll back"};
  const RATES = [["success", "Success"], ["no_match", "No match"], ["error", "Error"],
    ["cancellation", "Cancelled"]];
  const refreshMs = Math.max(500, Number(document.body.dataset.refreshMs) || 5000);
  const $ = (id) => document.getElementById(id);
  const statusBox = $("status"), form = $("login"), input = $("token");
  const forget = $("forget"), main = $("experiments");
  let timer = null, generation = 0, lastOk = null, lastSnapshot = "";

  class HttpError extends Error {
    constructor(status) { super("HTTP " + status); this.status = status; }
  }
  class Unreachable extends Error {}

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));  // text, never markup
    }
    return node;
  }
  const num = (v) => (typeof v === "number" && Number.isFinite(v)) ? v : null;
  const TREND_ROUNDS = 6;  // canary rounds shown per variant in the health table
  const pct = (v) => num(v) === null ? "–" : (v * 100).toFixed(1) + "%";
  const pp = (v) => num(v) === null ? "–" : (v >= 0 ? "+" : "") + (v * 100).toFixed(1) + " pp";
  const ms = (v) => num(v) === null ? "–" : Math.round(v).toLocaleString("en") + " ms";
  const count = (v) => num(v) === null ? "–" : Math.round(v).toLocaleString("en");
  const clock = (d) => d.toLocaleTimeString("en-GB", {hour12: false});
  function bounds(ci, show) {
    if (!Array.isArray(ci) || ci.length !== 2 || (ci[0] === null && ci[1] === null)) return "";
    return (ci[0] === null ? "−∞" : show(ci[0])) + " to " + (ci[1] === null ? "+∞" : show(ci[1]));
  }

  function setStatus(state, text) {
    statusBox.dataset.state = state;
    statusBox.textContent = text;
  }
  function storedToken() {
    try { return sessionStorage.getItem(KEY); } catch (e) { return null; }
  }
  function stop() {
    generation += 1;
    if (timer !== null) clearTimeout(timer);
    timer = null;
  }
  function askForToken(state, text) {
    stop();
    form.hidden = false;
    forget.hidden = true;
    setStatus(state, text);
    input.focus();
  }
  function start() {
    stop();
    form.hidden = true;
    forget.hidden = false;
    setStatus("loading", "Loading…");
    poll(generation);
  }

  async function getJson(path, token) {
    let response;
    try {
      response = await fetch(path, {
        headers: {Authorization: "Bearer " + token, Accept: "application/json"},
        cache: "no-store", credentials: "omit", redirect: "error"});
    } catch (e) {
      throw new Unreachable(String(e));
    }
    if (!response.ok) throw new HttpError(response.status);
    return response.json();
  }

  async function poll(gen) {
    try {
      await refresh(gen);
    } finally {
      if (gen === generation) timer = setTimeout(() => poll(gen), refreshMs);
    }
  }

  async function refresh(gen) {
    const token = storedToken();
    if (!token) {
      askForToken("no-token", "Enter an admin token to see the experiments.");
      return;
    }
    try {
      const listing = await getJson("/admin/experiments", token);
      const experiments = Array.isArray(listing.experiments) ? listing.experiments : [];
      const analyses = await Promise.all(experiments.map((e) =>
        getJson("/admin/experiments/" + encodeURIComponent(e.id) + "/analysis", token).then(
          (report) => ({report}),
          (err) => {
            if (err instanceof HttpError && err.status !== 401) return {status: err.status};
            throw err;
          })));
      if (gen !== generation) return;
      // Redraw only when the data changed (not for a new generated_at alone), so that
      // reading or selecting text on the page is not disturbed every few seconds.
      const snapshot = JSON.stringify([experiments, analyses],
        (key, value) => key === "generated_at" ? undefined : value);
      if (snapshot !== lastSnapshot) {
        main.replaceChildren(...renderAll(experiments, analyses));
        lastSnapshot = snapshot;
      }
      main.classList.remove("stale");
      lastOk = new Date();
      setStatus("ok", "Updated " + clock(lastOk) + " · refreshing every " +
        refreshMs / 1000 + " s");
    } catch (err) {
      if (gen !== generation) return;
      const since = lastOk ? " Showing data from " + clock(lastOk) + "." : "";
      if (err instanceof HttpError && err.status === 401) {
        try { sessionStorage.removeItem(KEY); } catch (e) { /* storage disabled */ }
        main.replaceChildren();
        lastSnapshot = "";
        askForToken("unauthorized",
          "The gateway refused this admin token (401). Enter a valid admin token.");
      } else if (err instanceof Unreachable) {
        main.classList.add("stale");
        setStatus("unreachable", "The gateway is unreachable (" + clock(new Date()) +
          "); retrying every " + refreshMs / 1000 + " s." + since);
      } else {
        main.classList.add("stale");
        const what = err instanceof HttpError ? "answered " + err.status :
          "sent an unreadable answer";
        setStatus("error", "The gateway " + what + "; retrying every " + refreshMs / 1000 +
          " s." + since);
      }
    }
  }

  function renderAll(experiments, analyses) {
    if (experiments.length === 0) {
      return [el("p", {class: "no-data", "data-state": "no-experiments"},
        "No experiments are configured.")];
    }
    return experiments.map((e, i) => renderExperiment(e, analyses[i]));
  }

  function currentPhase(experiment, report) {
    const phases = Array.isArray(report.phases) ? report.phases : [];
    return phases.find((p) => p.phase === experiment.phase) ||
      phases.find((p) => p.current === true) || null;
  }

  function renderExperiment(experiment, analysis) {
    const section = el("section", {class: "experiment", "data-experiment": experiment.id});
    const shadows = Array.isArray(experiment.shadows) && experiment.shadows.length ?
      " · shadows: " + experiment.shadows.join(", ") : "";
    section.append(
      el("h2", {}, el("code", {}, String(experiment.id))),
      el("p", {class: "meta"}, "Phase ", el("code", {"data-field": "phase"},
        String(experiment.phase ?? "–")), " · control ", el("code", {},
        String(experiment.control ?? "–")), shadows));
    const report = analysis && analysis.report ? analysis.report : null;
    const phase = report ? currentPhase(experiment, report) : null;
    if (report) section.append(renderRecommendation(report.recommendation));
    else section.append(el("p", {class: "warning", "data-state": "no-analysis"},
      "No analysis (the gateway answered " + (analysis ? analysis.status : "nothing") + ")."));
    const hasData = phase && Array.isArray(phase.variants) && phase.variants.length > 0;
    section.dataset.state = hasData ? "data" : "no-data";
    section.append(renderTable(experiment, phase));
    if (!hasData && report) {
      section.append(el("p", {class: "no-data", "data-state": "no-data"},
        "No data yet: no outcome records in the current phase."));
    }
    if (phase) section.append(...renderNotes(phase));
    section.append(...renderReview(report));
    section.append(...renderHealth(experiment, report));
    return section;
  }

  // Reviewed live traffic (docs/review.md, "In the report"): how the reviewed captures were
  // drawn, each variant's WER on the uniform sample (it stands for the traffic) and, apart,
  // on the priority captures (hard cases by choice: no traffic WER), and the blind
  // preference rates with their intervals.
  const SAMPLES = [["uniform", "Uniform"], ["priority", "Priority"]];
  function renderReview(report) {
    const review = report && report.review && typeof report.review === "object" ?
      report.review : null;
    if (!review) return [];
    const drawn = review.sample && typeof review.sample === "object" ? review.sample : {};
    const wer = review.wer && typeof review.wer === "object" ? review.wer : {};
    const rows = SAMPLES.flatMap(([sample, title]) => {
      const counts = drawn[sample] || {};
      const entries = Array.isArray(wer[sample]) ? wer[sample] : [];
      const reviewed = count(counts.reviewed) + " of " + count(counts.captured) + " reviewed";
      const reasons = counts.reviewed_by_reason && typeof counts.reviewed_by_reason === "object" ?
        Object.entries(counts.reviewed_by_reason).map(([r, n]) =>
          count(n) + " " + String(r).replace(/_/g, " ")).join(", ") : "";
      const head = el("td", {"data-col": "sample"}, title,
        el("small", {}, reviewed), sample === "priority" && reasons ?
          el("small", {}, reasons) : null);
      if (entries.length === 0) {
        return [el("tr", {"data-sample": sample}, head,
          el("td", {"data-col": "variant"}, "–"),
          el("td", {"data-col": "review_wer", colspan: 3, class: "no-data"},
            "no labelled capture yet"))];
      }
      return entries.map((entry, i) => el("tr", {"data-sample": sample,
        "data-variant": String(entry.variant)},
        i === 0 ? head : el("td", {"data-col": "sample"}, ""),
        el("td", {"data-col": "variant"}, String(entry.variant)),
        el("td", {"data-col": "review_wer"}, pct(entry.wer),
          el("small", {}, bounds(entry.ci, pct))),
        el("td", {"data-col": "review_utterances"}, count(entry.utterances),
          el("small", {}, count(entry.units) + " units")),
        el("td", {"data-col": "review_words"}, count(entry.errors) + " / " +
          count(entry.reference_words))));
    });
    const preferences = Array.isArray(review.preferences) ? review.preferences : [];
    const prefRows = preferences.map((p) => {
      const level = num(p.confidence) === null ? "" :
        Math.round(p.confidence * 100) + "% interval ";
      return el("tr", {"data-challenger": String(p.challenger),
        "data-control": String(p.control), "data-sample": String(p.sample ?? "")},
        el("td", {"data-col": "sample"}, String(p.sample ?? "")),
        el("td", {}, String(p.challenger) + " over " + String(p.control)),
        el("td", {"data-col": "preference"}, pct(p.rate),
          el("small", {}, level + bounds(p.interval, pct))),
        el("td", {"data-col": "decisive"}, count(p.decisive),
          el("small", {}, count(p.challenger_preferred) + " : " + count(p.control_preferred))),
        el("td", {"data-col": "ties"}, count(p.ties)),
        el("td", {"data-col": "preference_units"}, count(p.units)));
    });
    const out = [
      el("h3", {}, "Reviewed live traffic"),
      el("p", {class: "note", "data-review": "description"}, String(review.description ?? "")),
      el("div", {class: "table-wrap"}, el("table", {"data-table": "review"},
        el("thead", {}, el("tr", {}, ["Sample", "Variant", "WER", "Utterances",
          "Errors / words"].map((h) => el("th", {}, h)))), el("tbody", {}, rows))),
      el("p", {class: "hint"}, "The uniform sample stands for the traffic; priority " +
        "captures are hard cases by choice, so their WER is no traffic WER."),
    ];
    if (prefRows.length) {
      out.push(el("div", {class: "table-wrap"}, el("table", {"data-table": "preferences"},
        el("thead", {}, el("tr", {}, ["Sample", "Blind preference", "Rate", "Decisive",
          "Same", "Units"].map((h) => el("th", {}, h)))), el("tbody", {}, prefRows))));
    }
    return out;
  }

  // The WER of a variant's latest canary rounds, oldest first, from the report's canary
  // section (docs/analysis.md): how its canary WER went over time.
  function canaryTrend(report, name) {
    const canary = report && report.canary;
    const variants = canary && Array.isArray(canary.variants) ? canary.variants : [];
    const found = variants.find((v) => v && v.name === name);
    const rounds = found && Array.isArray(found.rounds) ? found.rounds.slice(-TREND_ROUNDS) : [];
    return rounds.length ? rounds.map((r) => pct(r.wer)).join(" · ") : "–";
  }

  // Model health (docs/admin.md, "Model health in the view"): per variant the model behind
  // its endpoint and its expiry, the last canary round and the latest rounds' trend, then
  // the latest alerts.
  function renderHealth(experiment, report) {
    const health = experiment.health;
    const entries = health && health.variants && typeof health.variants === "object" ?
      Object.entries(health.variants) : [];
    const known = entries.some(([, h]) => h && (h.model || h.model_error || h.canary ||
      (Array.isArray(h.alerts) && h.alerts.length)));
    const shared = health && Array.isArray(health.alerts) ? health.alerts : [];
    if (!known && shared.length === 0) return [];
    const day = (v) => typeof v === "string" && v ? v.slice(0, 10) : "–";
    const rows = entries.map(([name, h]) => {
      const model = h.model || null;
      const canary = h.canary || {};
      const near = model && num(model.expiring_within_days) !== null;
      const modelCell = model ?
        [String(model.display_name || model.id), el("small", {}, String(model.kind) +
          (h.endpoint_id ? " · endpoint " + h.endpoint_id : ""))] :
        [h.model_error ? "unreadable" : "–", h.model_error ?
          el("small", {}, String(h.model_error)) : null];
      return el("tr", {"data-variant": name}, [
        el("td", {}, String(name)),
        el("td", {"data-col": "model"}, modelCell),
        el("td", {"data-col": "expires", class: near ? "warning" : null,
          "data-expiring": near ? "yes" : null},
          model ? day(model.transcription_expires) : "–",
          model ? el("small", {}, "adaptation " + day(model.adaptation_expires)) : null),
        el("td", {"data-col": "canary_wer"}, pct(canary.wer)),
        el("td", {"data-col": "canary_trend"}, canaryTrend(report, name)),
        el("td", {"data-col": "canary_latency"}, ms(canary.latency_ms)),
        el("td", {"data-col": "canary_rounds"}, count(canary.rounds),
          num(canary.failed_rounds) ? el("small", {}, count(canary.failed_rounds) + " failed")
            : null),
        el("td", {"data-col": "last_round"}, canary.last_round_at ?
          String(canary.last_round_at) : "–"),
      ]);
    });
    const head = ["Variant", "Model", "Expires", "Canary WER", "Latest rounds", "Canary p50",
      "Rounds", "Last round"];
    const alerts = entries.flatMap(([, h]) => Array.isArray(h.alerts) ? h.alerts : [])
      .concat(shared)
      .sort((a, b) => String(b.at).localeCompare(String(a.at)))
      .slice(0, 5);
    return [
      el("h3", {}, "Model health"),
      el("div", {class: "table-wrap"}, el("table", {"data-table": "health"},
        el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))), el("tbody", {}, rows))),
      ...alerts.map((a) => el("p", {class: "note warning", "data-alert": String(a.kind)},
        String(a.at) + " · " + String(a.kind) + " — " + String(a.message))),
    ];
  }

  function renderRecommendation(recommendation) {
    const r = recommendation || {};
    const action = Object.hasOwn(ACTIONS, r.action) ? r.action : "other";
    const label = ACTIONS[action] || (r.action ? String(r.action) : "No recommendation");
    return el("p", {class: "recommendation " + action, "data-action": action},
      el("strong", {}, label + (r.variant ? ": " + r.variant : "")),
      r.reason ? " — " + r.reason : "");
  }

  function renderTable(experiment, phase) {
    const configured = Array.isArray(experiment.variants) ? experiment.variants : [];
    const measured = new Map((phase && Array.isArray(phase.variants) ? phase.variants : [])
      .map((v) => [v.name, v]));
    const comparisons = new Map((phase && Array.isArray(phase.comparisons) ?
      phase.comparisons : []).map((c) => [c.variant, c]));
    const names = configured.map((v) => v.name);
    for (const name of measured.keys()) if (!names.includes(name)) names.push(name);
    const head = ["Variant", "Weight", "Units", "Utterances",
      ...RATES.map((r) => r[1]), "Final p50", "First hyp. p50", "WER so far", "vs control"];
    const rows = names.map((name) => {
      const config = configured.find((v) => v.name === name) || {};
      const m = measured.get(name) || {};
      const rates = m.rates || {};
      const latency = m.latency || {};
      const p50 = (metric) => ((latency[metric] || {}).quantiles || {}).p50 || {};
      const wer = m.wer || null;
      const cmp = comparisons.get(name);
      const cmpWer = cmp && cmp.wer ? cmp.wer : null;
      const labelled = num(m.labelled) === null ? "" :
        count(m.labelled) + " labelled (" + pct(m.labelled_share) + ")";
      const backend = config.backend === undefined ? null : el("small", {"data-col": "backend"},
        String(config.backend) + (config.endpoint_id ? " · endpoint " + config.endpoint_id : ""));
      const cells = [
        el("td", {}, String(name), name === experiment.control ?
          el("span", {class: "tag"}, "control") : null, backend),
        el("td", {"data-col": "weight"}, num(config.weight) === null ? "–" : String(config.weight),
          num(config.share) === null ? null : el("small", {"data-col": "share"},
            pct(config.share), " ", el("meter", {min: 0, max: 1, value: config.share}))),
        el("td", {"data-col": "units"}, count(m.units),
          num(m.sessions) === null ? null : el("small", {}, count(m.sessions) + " sessions")),
        el("td", {"data-col": "utterances"}, count(m.utterances)),
        ...RATES.map(([key]) => {
          const rate = rates[key] || {};
          return el("td", {"data-col": key}, pct(rate.rate),
            num(rate.total) === null ? null : el("small", {}, count(rate.count) + "/" +
              count(rate.total)));
        }),
        el("td", {"data-col": "final_p50"}, ms(p50("final_latency_ms").value)),
        el("td", {"data-col": "first_p50"}, ms(p50("first_hypothesis_ms").value)),
        el("td", {"data-col": "wer"}, wer ? pct(wer.wer) : "–",
          el("small", {}, wer ? bounds(wer.ci, pct) : (m.name ? "not labelled" : "")),
          labelled ? el("small", {}, labelled) : null),
        el("td", {"data-col": "wer_difference"}, cmpWer ? pp(cmpWer.difference) : "–",
          cmpWer && cmpWer.always_valid ? [el("small", {}, "always-valid CI"),
            el("small", {}, bounds(cmpWer.always_valid.ci, (v) => (v * 100).toFixed(1)) + " pp")]
            : null),
      ];
      return el("tr", {"data-variant": name}, cells);
    });
    return el("div", {class: "table-wrap"}, el("table", {"data-table": "variants"},
      el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))), el("tbody", {}, rows)));
  }

  function renderNotes(phase) {
    const notes = [];
    const srm = phase.srm || {};
    if (srm.status === "mismatch") {
      notes.push(el("p", {class: "note warning", "data-srm": "mismatch"},
        "Sample ratio mismatch (p = " + Number(srm.p_value).toPrecision(2) +
        "): units per variant differ from the split; do not trust the comparisons."));
    }
    for (const cmp of Array.isArray(phase.comparisons) ? phase.comparisons : []) {
      for (const g of Array.isArray(cmp.guardrails) ? cmp.guardrails : []) {
        if (g.status === "regressed") {
          notes.push(el("p", {class: "note warning", "data-guardrail": g.metric},
            cmp.variant + ": guardrail " + g.metric + " regressed — " + (g.detail || "")));
        }
      }
    }
    return notes;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    try { sessionStorage.setItem(KEY, token); } catch (e) { /* storage disabled */ }
    input.value = "";
    start();
  });
  forget.addEventListener("click", () => {
    try { sessionStorage.removeItem(KEY); } catch (e) { /* storage disabled */ }
    main.replaceChildren();
    lastSnapshot = "";
    askForToken("no-token", "Token forgotten. Enter an admin token to see the experiments.");
  });
  if (storedToken()) start();
  else askForToken("no-token", "Enter an admin token to see the experiments.");
})();
