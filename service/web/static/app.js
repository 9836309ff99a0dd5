// visae web UI: plain JavaScript over the JSON API (/api/...). No external resources.
"use strict";

const $ = (sel) => document.querySelector(sel);
const fmt = (v, digits = 3) =>
  v === null || v === undefined ? "–" : typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(digits)) : String(v);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = false;
}

async function api(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `request failed (${response.status})`;
    showError(message);
    throw new Error(message);
  }
  return body;
}

function crumbs(parts) {
  const nav = $("#crumbs");
  for (const [text, href] of parts) {
    nav.append(" / ", href ? el("a", { href, text }) : el("span", { text }));
  }
}

function setApiLink(url) {
  $("#api-link").href = url;
  $("#api-link").textContent = "JSON";
}

function figures(container, items) {
  container.replaceChildren(
    ...items.map(([name, value]) => el("div", { class: "figure" }, el("span", { class: "value", text: fmt(value) }), el("span", { class: "name", text: name })))
  );
}

// What a dictionary reads and writes, in words: one hook (SAE), in → out (transcoder), the hooks (crosscoder).
function hooksText(d) {
  if (d.kind === "transcoder") return `${fmt(d.hooks[0])} → ${fmt(d.out_hook)}`;
  return d.hooks && d.hooks.length ? d.hooks.join(" + ") : fmt(d.hook);
}

const pathParts = () => location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
const ready = () => document.body.setAttribute("data-ready", "true");

// ---- dictionary list ---------------------------------------------------------------------------------
async function indexPage() {
  setApiLink("/api/dictionaries");
  const data = await api("/api/dictionaries");
  $("#dictionaries tbody").replaceChildren(
    ...data.dictionaries.map((d) =>
      el("tr", {},
        el("td", {}, el("a", { href: d.links.page, text: d.id }), d.evaluated ? "" : el("span", { class: "muted", text: " (not evaluated)" })),
        el("td", { text: d.kind }), el("td", { text: fmt(d.model) }), el("td", { class: "hooks", text: hooksText(d) }),
        el("td", { text: fmt(d.token_kind) }),
        el("td", { text: fmt(d.d_sae) }), el("td", { text: fmt(d.fvu) }), el("td", { text: fmt(d.l0, 1) }),
        el("td", { text: fmt(d.dead_fraction) }),
        el("td", {}, d.refused.encode ? "" : el("a", { href: `/d/${d.id}/encode`, text: "encode" }))))
  );
  ready();
}

// ---- feature browser ---------------------------------------------------------------------------------
async function dictionaryPage() {
  const [, id] = pathParts();
  crumbs([[id, null]]);
  setApiLink(`/api/dictionaries/${id}/features`);
  const info = await api(`/api/dictionaries/${id}`);
  $("#title").textContent = `${id}: features`;
  $("#encode-link").href = `/d/${id}/encode`;
  figures($("#summary"), [["kind", info.kind], ["model", info.model], [info.kind === "transcoder" ? "reads → writes" : "hooks", hooksText(info)],
    ["tokens", info.token_kind], ["latents", info.d_sae], ["FVU", info.fvu], ["L0", info.l0], ["dead", info.dead_fraction],
    ["coverage@0.9", info.coverage_0_9], ...hookFigures(info)]);
  if (info.refused.encode) $("#encode-link").hidden = true;
  const params = new URLSearchParams(location.search);
  $("#sort").replaceChildren(...info.sort_columns.map((c) => el("option", { value: c, text: c })));
  $("#sort").value = params.get("sort") || info.default_sort;
  if (!info.evaluated) {
    $("#summary").after(el("p", { class: "note", text: "This dictionary has no eval results: features are listed by index, " +
      "without example images. Run `visae eval DICTIONARY --store STORE` for them." }));
  }
  $("#order").value = params.get("order") || "";
  $("#label").append(...info.labels.map((l) => el("option", { value: l, text: l })));
  $("#label").value = params.get("label") || "";
  $("#q").value = params.get("q") || "";
  let offset = Number(params.get("offset") || 0);
  const limit = 48;

  async function load() {
    const query = new URLSearchParams({ sort: $("#sort").value, offset, limit });
    for (const key of ["order", "label", "q"]) if ($("#" + key).value) query.set(key, $("#" + key).value);
    history.replaceState(null, "", `?${query}`);
    const data = await api(`/api/dictionaries/${id}/features?${query}`);
    $("#count").textContent = `${data.total} features · showing ${data.total ? offset + 1 : 0}–${offset + data.features.length}`;
    $("#features").replaceChildren(...data.features.map((f) => featureCard(f, data.sort)));
    $("#prev").disabled = offset === 0;
    $("#next").disabled = offset + limit >= data.total;
    ready();
  }
  const reload = () => { offset = 0; load(); };
  $("#filters").addEventListener("change", reload);
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); reload(); });
  let timer;
  $("#q").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(reload, 250); });
  $("#prev").addEventListener("click", () => { offset = Math.max(0, offset - limit); load(); });
  $("#next").addEventListener("click", () => { offset += limit; load(); });
  await load();
}

// A crosscoder's FVU at each hook and the share of its latents exclusive to each hook (or shared).
function hookFigures(info) {
  const perHook = Object.entries(info.per_hook || {}).map(([hook, f]) => [`FVU ${hook}`, f.fvu]);
  const profile = info.hook_profile;
  if (!profile) return perHook;
  return [...perHook, ...Object.entries(profile.exclusive_fraction).map(([hook, v]) => [`exclusive to ${hook}`, v]),
    ["shared by several hooks", profile.shared_fraction]];
}

function featureCard(f, sort) {
  const label = f.text_label || f.best_factor || (f.top_label !== null && f.top_label !== undefined && f.top_label !== -1 ? f.top_label : "");
  return el("a", { class: "feature-card", href: f.page },
    f.preview ? el("img", { src: f.preview, alt: `feature ${f.feature}`, loading: "lazy" }) : el("div", { class: "no-image", text: "never fired" }),
    el("div", { class: "card-title", text: `#${f.feature}` }),
    el("div", { class: "card-label", text: String(label) }),
    el("div", { class: "muted", text: sort === "freq" ? `freq ${fmt(f.freq, 4)}` : `${sort} ${fmt(f[sort])} · freq ${fmt(f.freq, 4)}` }));
}

// ---- one feature -------------------------------------------------------------------------------------
async function featurePage() {
  const [, id, , feature] = pathParts();
  crumbs([[id, `/d/${id}`], [`feature ${feature}`, null]]);
  setApiLink(`/api/dictionaries/${id}/features/${feature}`);
  const data = await api(`/api/dictionaries/${id}/features/${feature}`);
  const s = data.scores;
  $("#title").textContent = `${id} · feature ${feature}`;
  figures($("#scores"), [["rank", s.rank], ["score", s.score], ["freq", s.freq], ["max act", s.max_act], ["mean act", s.mean_act],
    ["purity", s.purity], ["label entropy", s.label_entropy], ["monosemanticity", s.monosemanticity], ["best AUROC", s.best_auroc],
    ...Object.entries(data.labels).map(([k, v]) => [k.replace("_", " "), v])]);
  if (s.effect_output) {
    $("#effect-section").hidden = false;
    $("#effect").textContent = describeEffect(s.effect_output, s.effect_size);
  }
  const tile = (x, title) => el("figure", {}, el("img", { src: x.heatmap_png, alt: `image ${x.image}`, title }),
    el("figcaption", { text: `${fmt(x.activation)} · img ${x.image}` }));
  $("#top").replaceChildren(...data.top.map((x) => tile(x, `top ${x.slot + 1}`)));
  if (!data.top.length) {
    const why = data.evaluated ? "this feature never fired on the evaluation set" : "no eval results: run `visae eval` for example images";
    $("#top").append(el("p", { class: "muted", text: why }));
  }
  $("#quantiles").replaceChildren(...data.quantiles.map((x) => tile(x, `quantile sample ${x.slot + 1}`)));
  histogram($("#histogram"), data.frequency);
  $("#similar").replaceChildren(...data.similar.map(similarItem));
  if (data.sides) showSides(data.sides);
  if (data.hook_profile) showHookProfile(data.hook_profile);
  if (data.top_neurons) {
    $("#neurons-section").hidden = false;
    $("#neurons").replaceChildren(...data.top_neurons.map((n) => el("li", { text: `neuron ${n.neuron}: ${fmt(n.weight, 4)}` })));
  }
  await Promise.all([...document.querySelectorAll("#top img")].map((img) => img.decode().catch(() => null)));
  ready();
}

const similarItem = (x) =>
  el("li", {}, el("a", { href: x.page, text: `#${x.feature}` }), ` cos ${fmt(x.cosine)} `, el("span", { class: "muted", text: x.label || "" }));

// A transcoder latent: the hook it reads (its top images below are its activations there) and the hook it writes.
function showSides(sides) {
  const { input, output } = sides;
  $("#sides-section").hidden = false;
  $("#similar-section").hidden = true;  // the output side lists the decoder-cosine neighbours
  $("#top-title").textContent = `Top images: input side, activation read from ${input.hook}`;
  const side = (container, name, verb, s, items, listTitle) => {
    const list = el("div", { class: "figures" });
    figures(list, items);
    container.replaceChildren(el("h3", { text: `${name} side: ${verb} ${fmt(s.hook)} (${s.width} dims)` }),
      el("p", { class: "muted", text: s.shows }), list, el("h4", { text: listTitle }),
      el("ol", { class: "plain" }, ...s.similar.map(similarItem)));
    container.dataset.hook = s.hook;
  };
  side($("#input-side"), "Input", "reads", input, [["hook read", input.hook], ["width", input.width]],
    "Reads most like (encoder cosine)");
  side($("#output-side"), "Output", "writes", output, [["hook written", output.hook], ["width", output.width],
    ["decoder norm", output.decoder_norm], ["norm percentile", output.decoder_norm_percentile],
    ["write at mean act", output.write_at_mean_act], ["output mean norm", output.output_mean_norm], ["output FVU", output.fvu]],
    "Writes most like (decoder cosine)");
  if (output.top_neurons) {
    $("#output-side").append(el("h4", { text: "Neurons written most" }),
      el("ol", { class: "plain" }, ...output.top_neurons.map((n) => el("li", { text: `neuron ${n.neuron}: ${fmt(n.weight, 4)}` }))));
  }
}

// A crosscoder latent: its decoder norm at each hook as bars (the longest bar spans the full width).
function showHookProfile(profile) {
  $("#profile-section").hidden = false;
  const longest = Math.max(...profile.hooks.map((h) => h.norm), 1e-12);
  $("#hook-profile").replaceChildren(...profile.hooks.map((h) =>
    el("div", { class: "profile-row", "data-hook": h.hook, "data-norm": String(h.norm), "data-share": String(h.share) },
      el("span", { class: "profile-hook", text: h.hook }),
      el("span", { class: "profile-track" }, el("span", { class: "profile-bar", style: `width: ${(100 * h.norm / longest).toFixed(1)}%` })),
      el("span", { class: "profile-value", text: `${fmt(h.norm, 3)} · ${(100 * h.share).toFixed(1)}%` }))));
  const where = profile.exclusive_to ? `exclusive to ${profile.exclusive_to}` : "shared by several hooks";
  $("#profile-note").textContent = `This latent is ${where} (exclusive: at least ${100 * profile.exclusive_share_threshold}% ` +
    `of its summed norms at one hook). Bars: ${profile.units}; the percentage is the hook's share of the summed norms.`;
}

function describeEffect(output, size) {
  const change = output === "embedding" ? `moves the image embedding by 1 − cosine = ${fmt(size)}`
    : `${size < 0 ? "lowers" : "raises"} P(${output}) by ${fmt(Math.abs(size))}`;
  return `Switching it off on its top images ${change} (mean over those images; visae eval's effect_output and effect_size).`;
}

function histogram(container, frequency) {
  const hist = frequency.histogram;
  if (!hist || !hist.counts || !hist.counts.length) { container.textContent = `frequency ${fmt(frequency.freq, 5)}`; return; }
  const W = 360, H = 140, pad = 24;
  const max = Math.max(...hist.counts, 1);
  const lo = hist.edges[0], hi = hist.edges[hist.edges.length - 1];
  const x = (v) => pad + ((v - lo) / (hi - lo || 1)) * (W - 2 * pad);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "histogram");
  const add = (tag, attrs) => { const n = document.createElementNS(ns, tag); for (const k in attrs) n.setAttribute(k, attrs[k]); svg.append(n); return n; };
  hist.counts.forEach((c, i) => {
    const h = (c / max) * (H - 2 * pad);
    add("rect", { x: x(hist.edges[i]), y: H - pad - h, width: Math.max(1, x(hist.edges[i + 1]) - x(hist.edges[i]) - 1), height: h, class: "bar" });
  });
  add("text", { x: pad, y: H - 6, class: "axis" }).textContent = `log10 freq ${fmt(lo, 1)}`;
  add("text", { x: W - pad, y: H - 6, class: "axis", "text-anchor": "end" }).textContent = fmt(hi, 1);
  if (frequency.log10_freq !== null && frequency.log10_freq !== undefined) {
    const fx = x(Math.min(hi, Math.max(lo, frequency.log10_freq)));
    add("line", { x1: fx, x2: fx, y1: pad / 2, y2: H - pad, class: "marker" });
    add("text", { x: fx, y: pad / 2 - 2, class: "axis", "text-anchor": "middle" }).textContent = `this feature ${fmt(frequency.log10_freq, 2)}`;
  }
  container.replaceChildren(svg);
}

// ---- encode --------------------------------------------------------------------------------------------
async function encodePage() {
  const [, id] = pathParts();
  crumbs([[id, `/d/${id}`], ["encode", null]]);
  setApiLink("/docs#/encode");
  $("#upload").addEventListener("submit", async (e) => {
    e.preventDefault();
    const file = $("#file").files[0];
    if (!file) { showError("choose an image file first"); return; }
    const form = new FormData();
    form.append("file", file);
    showEncoding(id, await api(`/api/dictionaries/${id}/encode`, { method: "POST", body: form }), file);
  });
  const images = await api(`/api/dictionaries/${id}/images?limit=60`);
  $("#store").replaceChildren(...images.images.map((im) =>
    el("button", { type: "button", class: "pick", title: `encode store image ${im.image}`,
      onclick: async () => showEncoding(id, await api(im.encode), null) },
      el("img", { src: im.image_png, alt: `store image ${im.image}` }))));
  ready();
}

function showEncoding(id, data, file) {
  $("#error").hidden = true;
  $("#result").hidden = false;
  const canvas = $("#canvas");
  const picture = new Image();
  let selected = data.top_features.length ? data.top_features[0] : null;
  let pinned = null;

  function draw() {
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(picture, 0, 0, canvas.width, canvas.height);
    if (selected && selected.heatmap) {
      const [rows, cols] = data.grid;
      const max = Math.max(...selected.heatmap.flat(), 1e-9);
      const cw = canvas.width / cols, ch = canvas.height / rows;
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
        const v = selected.heatmap[r][c] / max;
        if (v <= 0) continue;
        ctx.fillStyle = `rgba(255, ${Math.round(200 - 160 * v)}, 0, ${0.15 + 0.55 * v})`;
        ctx.fillRect(c * cw, r * ch, cw, ch);
      }
      canvas.setAttribute("data-heatmap", String(selected.feature));
    }
    if (pinned) {
      ctx.strokeStyle = "#0af"; ctx.lineWidth = 2;
      const [rows, cols] = data.grid;
      ctx.strokeRect(pinned[1] * canvas.width / cols, pinned[0] * canvas.height / rows, canvas.width / cols, canvas.height / rows);
    }
  }

  function patchAt(event) {
    if (!data.grid) return null;
    const box = canvas.getBoundingClientRect();
    const [rows, cols] = data.grid;
    const r = Math.min(rows - 1, Math.floor(((event.clientY - box.top) / box.height) * rows));
    const c = Math.min(cols - 1, Math.floor(((event.clientX - box.left) / box.width) * cols));
    return [r, c];
  }

  function describePatch(rc) {
    if (!rc) return;
    const tops = data.patches[rc[0]][rc[1]];
    $("#patch-info").replaceChildren(`patch (${rc[0]}, ${rc[1]}): `,
      ...(tops.length ? tops.flatMap((t) => [el("a", { href: `/d/${id}/features/${t.feature}`, text: `#${t.feature}` }), ` ${fmt(t.activation)}  `])
        : ["no feature fires here"]));
  }

  canvas.onmousemove = (e) => { if (!pinned) describePatch(patchAt(e)); };
  canvas.onclick = (e) => { const rc = patchAt(e); pinned = pinned && rc && pinned[0] === rc[0] && pinned[1] === rc[1] ? null : rc; describePatch(rc); draw(); };
  if (!data.grid) $("#patch-info").textContent = `this dictionary reads ${data.token_kind} tokens: no per-patch map`;

  const intervention = data.refused.intervene ? noInterventions(data.refused.intervene) : interventions(id, data, file);
  $("#encoded").replaceChildren(...data.top_features.map((f) => {
    const item = el("li", { class: "encoded-feature", tabindex: "0" },
      el("a", { href: f.page, text: `#${f.feature}` }), ` ${fmt(f.activation)} `, el("span", { class: "muted", text: f.label || "" }),
      intervention.controls(f.feature));
    item.addEventListener("mouseenter", () => { selected = f; draw(); });
    item.addEventListener("focus", () => { selected = f; draw(); });
    return item;
  }));
  if (!data.top_features.length) $("#encoded").append(el("li", { class: "muted", text: "no feature fires on this image" }));
  picture.onload = () => { draw(); document.body.setAttribute("data-encoded", "true"); };
  picture.src = data.image;
  intervention.run();
}

// Switch features off or boost them on the encoded image, and show the predictions before and after.
function interventions(id, data, file) {
  const edits = new Map();  // feature -> "off" | "boost"
  let generation = 0;

  async function run() {
    const mine = ++generation;
    const pick = (kind) => [...edits].filter(([, v]) => v === kind).map(([f]) => String(f));
    const scale = $("#boost-scale").value || "4";
    $("#intervention").removeAttribute("data-state");
    let answer;
    if (file) {
      const form = new FormData();
      form.append("file", file);
      pick("off").forEach((f) => form.append("ablate", f));
      pick("boost").forEach((f) => form.append("boost", f));
      form.append("scale", scale);
      answer = await api(`/api/dictionaries/${id}/intervene`, { method: "POST", body: form });
    } else {
      const query = new URLSearchParams({ scale });
      pick("off").forEach((f) => query.append("ablate", f));
      pick("boost").forEach((f) => query.append("boost", f));
      answer = await api(`/api/dictionaries/${id}/images/${data.source.image}/intervene?${query}`);
    }
    if (mine === generation) showPredictions(answer);
  }
  const start = () => run().catch(() => null);  // api() has shown the error already

  function controls(feature) {
    const button = (kind, title) => el("button", { type: "button", class: kind, "data-feature": feature, "aria-pressed": "false", title,
      onclick: (e) => {
        e.stopPropagation();
        edits.get(feature) === kind ? edits.delete(feature) : edits.set(feature, kind);
        for (const b of e.target.parentNode.querySelectorAll("button")) b.setAttribute("aria-pressed", String(edits.get(feature) === b.className));
        start();
      } }, kind);
    return el("span", { class: "edit-controls" }, button("off", `switch feature ${feature} off`), button("boost", `boost feature ${feature}`));
  }

  $("#boost-scale").onchange = () => { if ([...edits.values()].includes("boost")) start(); };
  return { run: start, controls };
}

// A dictionary whose edits the service does not run (a transcoder, a crosscoder): say why, offer no controls.
function noInterventions(why) {
  const section = $("#intervention");
  section.hidden = false;
  section.replaceChildren(el("h2", { text: "Predictions" }), el("p", { class: "note", id: "no-intervention", text: why }));
  return { run: () => null, controls: () => "" };
}

function showPredictions(answer) {
  const section = $("#intervention");
  section.hidden = false;
  const { before, after } = answer.predictions;
  const show = (list) => list.slice(0, 3).map((p) => `${p.output} ${(100 * p.prob).toPrecision(3)}%`).join(", ");
  const rows = Object.keys(before).map((head) => {
    const flipped = before[head][0].output !== after[head][0].output;
    return el("tr", { "data-head": head }, el("th", { text: head === "output" ? "class" : head.replace("_", " ") }),
      el("td", { class: "before", text: show(before[head]) }),
      el("td", { class: flipped ? "after changed" : "after", text: show(after[head]) }), el("td", { text: flipped ? "yes" : "" }));
  });
  if (answer.summary.embedding_cosine !== undefined) {
    rows.push(el("tr", { "data-head": "embedding" }, el("th", { text: "embedding" }), el("td", { text: "clean" }),
      el("td", { text: `cosine to clean ${fmt(answer.summary.embedding_cosine, 4)}` }), el("td", {})));
  }
  $("#predictions tbody").replaceChildren(...rows);
  const heads = Object.values(answer.summary.heads);
  const kl = heads.reduce((sum, h) => sum + h.kl, 0);
  const edit = answer.edit;
  const parts = [...edit.ablate.map((f) => `#${f} off`),
    ...Object.entries(edit.steer).map(([f, s]) => `#${f} boosted to ${fmt(s.value)} (${fmt(s.scale, 1)}× its typical maximum)`)];
  $("#edit-summary").textContent = parts.length
    ? `edit: ${parts.join(", ")} · KL(before ‖ after) summed over outputs ${kl.toPrecision(3)}`
    : "no edit: the model's own predictions";
  section.setAttribute("data-edit", [...edit.ablate.map((f) => `off:${f}`), ...Object.keys(edit.steer).map((f) => `boost:${f}`)].join(","));
  section.setAttribute("data-kl", String(kl));
  section.setAttribute("data-state", "ready");
}

const pages = { index: indexPage, dictionary: dictionaryPage, feature: featurePage, encode: encodePage };
pages[document.body.dataset.page]().catch((err) => showError(err.message));
