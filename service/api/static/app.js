// synthgen web page: explore the model through the public HTTP API (see API.md).
// Plain browser JavaScript, no build step. Every /v1 request goes through api(), which adds the
// Authorization header when a key is set; images are fetched the same way and shown from blob URLs,
// because an <img src> cannot send headers.
"use strict";

(() => {
  const GRID_SIZE = 24;
  const STEPS = 9;
  const POLL_MS = 500;
  const TRUNCATION_OFF = 3.25; // the slider's last stop means "no truncation"
  const MAX_DOWNLOAD = 10000; // the page holds the tar in memory; larger sets: use the API directly
  const MAX_IDENTITY_ROWS = 32; // the identity grid shows the first identities of a larger job
  const KEY_STORAGE = "synthgen.apiKey";

  const $ = (id) => document.getElementById(id);
  const el = {
    modelInfo: $("model-info"),
    keyForm: $("key-form"),
    apiKey: $("api-key"),
    clearKey: $("clear-key"),
    status: $("status"),
    seed: $("seed"),
    newCrowd: $("new-crowd"),
    truncation: $("truncation"),
    truncationValue: $("truncation-value"),
    grid: $("grid"),
    pickA: $("pick-a"),
    pickB: $("pick-b"),
    swap: $("swap-picks"),
    stripWrap: $("strip-wrap"),
    strip: $("strip"),
    stripEmpty: $("strip-empty"),
    stripLabels: $("strip-labels"),
    downloadForm: $("download-form"),
    downloadCount: $("download-count"),
    download: $("download"),
    cancelJob: $("cancel-job"),
    job: $("job"),
    progress: $("progress"),
    progressText: $("progress-text"),
    downloadLink: $("download-link"),
    jobModel: $("job-model"),
    attributes: $("attributes"),
    attributesNone: $("attributes-none"),
    attributesHelp: $("attributes-help"),
    identities: $("identities"),
    perIdentity: $("per-identity"),
    variation: $("variation"),
    variationValue: $("variation-value"),
    cardLink: $("card-link"),
    identityView: $("identity-view"),
    identityGrid: $("identity-grid"),
    identityMore: $("identity-more"),
  };

  let err401Pending = false; // the last error was a 401: the key field is marked invalid

  const state = {
    apiKey: readStoredKey(),
    seed: 0,
    truncation: null, // null: off
    method: "slerp",
    picks: [], // [{seed, index}], at most two: A then B
    gridGeneration: 0,
    gridUrls: [],
    pickUrls: [null, null],
    stripGeneration: 0,
    stripUrl: null,
    job: null, // {id, timer, links}
    downloadUrl: null,
    cardUrl: null,
    models: [], // GET /v1/models
    crowd: null, // the attribute controls of the chosen model (crowd.js)
    identityUrls: [],
  };

  // ---------------------------------------------------------------- API access and errors

  class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  function readStoredKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return "";
    }
  }

  function storeKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage disabled: the key still works for this page view
    }
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.apiKey) headers.set("Authorization", "Bearer " + state.apiKey);
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (err) {
      throw new ApiError(0, "network", "could not reach the server (" + err.message + ")", null);
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  async function errorFrom(response) {
    let code = "http_" + response.status;
    let message = response.statusText || "request failed";
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      }
    } catch {
      // not JSON: keep the status text
    }
    return new ApiError(response.status, code, message, response.headers.get("Retry-After"));
  }

  function describe(err) {
    if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
    if (err.status === 401) {
      return (state.apiKey ? "The server refused this API key: " : "This server needs an API key. Enter it above. ") +
        "(" + err.message + ")";
    }
    if (err.status === 403) return "This key may not do that: " + err.message;
    if (err.status === 429) {
      const wait = err.retryAfter ? " Retry in " + err.retryAfter + " s." : "";
      const what = err.code === "quota_exceeded" ? "This key's quota is used up" : "The server is busy";
      return what + " (" + err.code + "): " + err.message.replace(/\.$/, "") + "." + wait;
    }
    return err.message + (err.status ? " (HTTP " + err.status + ", " + err.code + ")" : "");
  }

  function showStatus(text, kind = "info") {
    el.status.textContent = text;
    el.status.dataset.kind = kind;
    el.status.hidden = false;
    if (err401Pending && kind === "error") el.apiKey.setAttribute("aria-invalid", "true");
  }

  function clearStatus() {
    el.status.textContent = "";
    el.status.hidden = true;
    el.apiKey.removeAttribute("aria-invalid");
  }

  function reportError(err, what) {
    err401Pending = err instanceof ApiError && err.status === 401;
    const prefix = what ? what + ": " : "";
    showStatus(err401Pending ? describe(err) : prefix + describe(err), "error");
    if (err401Pending && document.activeElement !== el.apiKey) el.apiKey.focus({ preventScroll: true });
  }

  // ---------------------------------------------------------------- small helpers

  function randomSeed() {
    const words = new Uint32Array(2);
    crypto.getRandomValues(words);
    // 48 random bits: exact in a JS number, and well inside the API's 0 … 2^63-1
    return (words[0] & 0xffff) * 2 ** 32 + words[1];
  }

  function imageUrl(seed, index) {
    let url = "/v1/images/" + seed + ".png?index=" + index;
    if (state.truncation !== null) url += "&truncation=" + state.truncation;
    return url;
  }

  async function fetchBlobUrl(path, options) {
    const response = await api(path, options);
    return URL.createObjectURL(await response.blob());
  }

  function revoke(url) {
    if (url) URL.revokeObjectURL(url);
  }

  function formatTruncation(t) {
    return t === null ? "off" : "±" + t.toFixed(2).replace(/0$/, "") + "σ";
  }

  function formatBytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1024 / 1024).toFixed(1) + " MiB";
  }

  function writeHash() {
    const params = new URLSearchParams({ seed: String(state.seed) });
    if (state.truncation !== null) params.set("t", String(state.truncation));
    history.replaceState(null, "", "#" + params.toString());
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const seed = Number(params.get("seed"));
    const t = Number(params.get("t"));
    return {
      seed: params.has("seed") && Number.isSafeInteger(seed) && seed >= 0 ? seed : null,
      truncation: params.has("t") && t >= 0.25 && t <= 3 ? Math.round(t * 4) / 4 : null,
    };
  }

  // ---------------------------------------------------------------- the model

  async function loadModel() {
    try {
      const body = await (await api("/v1/models")).json();
      const model = body.models.find((m) => m.default) || body.models[0];
      if (!model) {
        el.modelInfo.textContent = "no model loaded";
        return;
      }
      const { height, width, channels } = model.image;
      el.modelInfo.textContent =
        model.name + " v" + model.version + " · latent_dim " + model.latent_dim + " · " + width + "×" + height +
        (channels === 3 ? " RGB" : " × " + channels) + " · sha256 " + model.sha256.slice(0, 8) + "…";
      el.modelInfo.title = model.sha256;
      el.modelInfo.dataset.latentDim = String(model.latent_dim);
      showModels(body.models, model);
    } catch (err) {
      el.modelInfo.textContent = err instanceof ApiError && err.status === 401 ? "model: locked (needs an API key)" : "model: unavailable";
      reportError(err, "Loading the model");
    }
  }

  function modelRef(model) {
    return model.name + "@" + model.version;
  }

  function showModels(models, chosen) {
    const keep = el.jobModel.value;
    state.models = models;
    el.jobModel.replaceChildren(
      ...models.map((m) => Object.assign(document.createElement("option"), {
        value: modelRef(m),
        textContent: modelRef(m) + (m.default ? " (default)" : "") + (Object.keys(m.attributes || {}).length ? "" : ", unconditional"),
      })),
    );
    el.jobModel.value = models.some((m) => modelRef(m) === keep) ? keep : modelRef(chosen);
    showAttributes();
  }

  function chosenModel() {
    return state.models.find((m) => modelRef(m) === el.jobModel.value) || null;
  }

  // ---------------------------------------------------------------- who is in the data set

  function showAttributes() {
    const model = chosenModel();
    state.crowd = window.SynthgenCrowd.buildAttributes(el.attributes, model, () => undefined);
    el.attributes.dataset.model = model ? modelRef(model) : "";
    el.attributesNone.hidden = state.crowd.count > 0;
    el.attributesHelp.hidden = state.crowd.count === 0;
  }

  function identityFields() {
    const identities = el.identities.value.trim();
    if (!identities) return null;
    return {
      identities: Number(identities),
      per_identity: Number(el.perIdentity.value),
      variation: Number(el.variation.value),
    };
  }

  function showIdentityCount() {
    const fields = identityFields();
    el.downloadCount.disabled = fields !== null || state.job !== null;
    if (fields && Number.isInteger(fields.identities * fields.per_identity)) {
      el.downloadCount.value = String(fields.identities * fields.per_identity);
    }
    el.variationValue.textContent = Number(el.variation.value).toFixed(2);
  }

  function clearIdentityGrid() {
    state.identityUrls.forEach(revoke);
    state.identityUrls = [];
    el.identityGrid.replaceChildren();
    el.identityView.hidden = true;
  }

  function showIdentityGrid(buffer) {
    clearIdentityGrid();
    const samples = window.SynthgenCrowd.readTar(buffer);
    state.identityUrls = window.SynthgenCrowd.identityGrid(el.identityGrid, samples, MAX_IDENTITY_ROWS);
    const total = Number(el.identityGrid.dataset.identities);
    el.identityMore.hidden = total <= MAX_IDENTITY_ROWS;
    el.identityMore.textContent = "The first " + MAX_IDENTITY_ROWS + " of " + total + " identities; the tar holds them all.";
    el.identityView.hidden = false;
  }

  // ---------------------------------------------------------------- the crowd

  function buildGrid() {
    for (let i = 0; i < GRID_SIZE; i++) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "face";
      button.dataset.index = String(i);
      button.setAttribute("aria-pressed", "false");
      const img = document.createElement("img");
      img.width = 64;
      img.height = 64;
      img.alt = "";
      img.decoding = "async";
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.setAttribute("aria-hidden", "true");
      button.append(img, badge);
      button.addEventListener("click", () => togglePick(state.seed, i));
      el.grid.append(button);
    }
  }

  async function loadCrowd() {
    const generation = ++state.gridGeneration;
    const seed = state.seed;
    const truncation = state.truncation;
    el.seed.value = String(seed);
    writeHash();
    el.grid.setAttribute("aria-busy", "true");
    el.grid.dataset.seed = String(seed);
    el.grid.dataset.truncation = truncation === null ? "off" : String(truncation);
    const faces = [...el.grid.querySelectorAll(".face")];
    let firstError = null;
    const fetchFace = async (i) => {
      try {
        const url = await fetchBlobUrl(imageUrl(seed, i));
        if (generation !== state.gridGeneration) {
          revoke(url);
          return null;
        }
        return url;
      } catch (err) {
        firstError = firstError || err;
        return null;
      }
    };
    // the first face alone: when the server refuses (no key, busy), the other 23 are not asked for
    const first = await fetchFace(0);
    const refused = firstError instanceof ApiError && [401, 403, 429].includes(firstError.status);
    const urls = [first, ...(await Promise.all(faces.slice(1).map((_, i) => (refused ? null : fetchFace(i + 1)))))];
    if (generation !== state.gridGeneration) return urls.forEach(revoke);
    const old = state.gridUrls;
    state.gridUrls = urls;
    await Promise.all(
      faces.map((face, i) => {
        const img = face.querySelector("img");
        img.alt = "Face " + i + " of crowd " + seed + ", truncation " + formatTruncation(truncation);
        if (!urls[i]) {
          img.removeAttribute("src");
          img.dataset.loaded = "false";
          face.classList.add("failed");
          return null;
        }
        face.classList.remove("failed");
        img.dataset.loaded = "false";
        img.src = urls[i];
        return img.decode().then(
          () => (img.dataset.loaded = "true"),
          () => (img.dataset.loaded = "false"),
        );
      }),
    );
    old.forEach(revoke);
    if (generation !== state.gridGeneration) return;
    markPicks();
    el.grid.setAttribute("aria-busy", "false");
    if (firstError) reportError(firstError, "Loading faces");
    else if (el.status.dataset.kind === "error" && err401Pending) clearStatus();
  }

  function newCrowd() {
    state.seed = randomSeed();
    loadCrowd();
  }

  // ---------------------------------------------------------------- truncation

  function readTruncation() {
    const value = Number(el.truncation.value);
    return value >= TRUNCATION_OFF ? null : value;
  }

  function showTruncation() {
    const t = readTruncation();
    el.truncationValue.textContent = t === null ? "off" : "k = " + t.toFixed(2) + " (±" + t + "σ)";
    el.truncation.setAttribute("aria-valuetext", t === null ? "off, the full prior" : "plus or minus " + t + " sigma");
  }

  let truncationTimer = 0;

  function onTruncation(immediate) {
    showTruncation();
    clearTimeout(truncationTimer);
    const apply = () => {
      const t = readTruncation();
      if (t === state.truncation) return;
      state.truncation = t;
      loadCrowd();
      loadPicks();
      loadStrip();
    };
    if (immediate) apply();
    else truncationTimer = setTimeout(apply, 150);
  }

  // ---------------------------------------------------------------- picks and the strip

  function togglePick(seed, index) {
    const at = state.picks.findIndex((p) => p.seed === seed && p.index === index);
    if (at >= 0) state.picks.splice(at, 1);
    else {
      state.picks.push({ seed, index });
      if (state.picks.length > 2) state.picks.shift();
    }
    markPicks();
    loadPicks();
    loadStrip();
  }

  function markPicks() {
    el.grid.querySelectorAll(".face").forEach((face) => {
      const index = Number(face.dataset.index);
      const at = state.picks.findIndex((p) => p.seed === state.seed && p.index === index);
      face.setAttribute("aria-pressed", at >= 0 ? "true" : "false");
      face.classList.toggle("picked", at >= 0);
      face.querySelector(".badge").textContent = at === 0 ? "A" : at === 1 ? "B" : "";
    });
    el.swap.disabled = state.picks.length !== 2;
  }

  async function loadPicks() {
    const figures = [el.pickA, el.pickB];
    await Promise.all(
      figures.map(async (figure, slot) => {
        const pick = state.picks[slot];
        const box = figure.querySelector(".pick-img");
        const caption = figure.querySelector("figcaption");
        const letter = slot === 0 ? "A" : "B";
        if (!pick) {
          revoke(state.pickUrls[slot]);
          state.pickUrls[slot] = null;
          box.replaceChildren(Object.assign(document.createElement("span"), { textContent: letter }));
          caption.textContent = slot === 0 ? "pick a face" : "and another";
          figure.classList.remove("filled");
          return;
        }
        caption.replaceChildren(
          Object.assign(document.createElement("b"), { textContent: "face " + pick.index }),
          document.createElement("br"),
          "seed " + pick.seed,
        );
        try {
          const url = await fetchBlobUrl(imageUrl(pick.seed, pick.index));
          if (state.picks[slot] !== pick) return revoke(url);
          revoke(state.pickUrls[slot]);
          state.pickUrls[slot] = url;
          const img = Object.assign(document.createElement("img"), { src: url, width: 64, height: 64 });
          img.alt = "Face " + letter + ": seed " + pick.seed + ", index " + pick.index;
          box.replaceChildren(img);
          figure.classList.add("filled");
        } catch (err) {
          reportError(err, "Loading face " + letter);
        }
      }),
    );
  }

  async function loadStrip() {
    const generation = ++state.stripGeneration;
    if (state.picks.length !== 2) {
      el.strip.hidden = true;
      el.stripLabels.hidden = true;
      el.strip.removeAttribute("src");
      el.strip.dataset.loaded = "false";
      el.stripEmpty.hidden = false;
      el.stripEmpty.textContent = state.picks.length === 1 ? "Now select a second face." : "Select two faces in the crowd above.";
      revoke(state.stripUrl);
      state.stripUrl = null;
      return;
    }
    const [a, b] = state.picks;
    const method = state.method;
    const body = {
      from_seed: a.seed,
      from_index: a.index,
      to_seed: b.seed,
      to_index: b.index,
      steps: STEPS,
      method,
      format: "png",
      truncation: state.truncation,
    };
    el.stripWrap.setAttribute("aria-busy", "true");
    try {
      const url = await fetchBlobUrl("/v1/interpolate?layout=strip", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (generation !== state.stripGeneration) return revoke(url);
      const old = state.stripUrl;
      state.stripUrl = url;
      el.strip.dataset.loaded = "false";
      el.strip.src = url;
      el.strip.alt = STEPS + " faces on the " + method + " path from face A (seed " + a.seed + ", index " + a.index +
        ") to face B (seed " + b.seed + ", index " + b.index + ")";
      el.strip.dataset.method = method;
      await el.strip.decode().catch(() => undefined);
      if (generation !== state.stripGeneration) return;
      el.strip.hidden = false;
      el.stripLabels.hidden = false;
      el.stripEmpty.hidden = true;
      el.strip.dataset.loaded = "true";
      revoke(old);
    } catch (err) {
      if (generation !== state.stripGeneration) return;
      reportError(err, "Interpolating");
    } finally {
      if (generation === state.stripGeneration) el.stripWrap.setAttribute("aria-busy", "false");
    }
  }

  // ---------------------------------------------------------------- download a data set

  function setJobUi(running) {
    el.download.disabled = running;
    el.downloadCount.disabled = running || identityFields() !== null;
    el.cancelJob.hidden = !running;
  }

  function showProgress(job) {
    const count = job.count || 1;
    const done = Math.min(job.done || 0, count);
    el.progress.max = count;
    el.progress.value = done;
    el.progress.dataset.status = job.status;
    el.progressText.textContent = job.status + ": " + done.toLocaleString() + " of " + count.toLocaleString() + " faces" +
      " (" + Math.floor((100 * done) / count) + "%)";
  }

  async function startDownload(event) {
    event.preventDefault();
    const count = Number(el.downloadCount.value);
    if (!Number.isInteger(count) || count < 1 || count > MAX_DOWNLOAD) {
      showStatus("Faces: expected a whole number from 1 to " + MAX_DOWNLOAD.toLocaleString() +
        " (larger sets: POST /v1/jobs and stream the result), got " + JSON.stringify(el.downloadCount.value), "error");
      el.downloadCount.focus();
      return;
    }
    const identities = identityFields();
    if (identities && !(Number.isInteger(identities.identities) && identities.identities >= 1 &&
        Number.isInteger(identities.per_identity) && identities.per_identity >= 1)) {
      showStatus("Identities and faces per identity: expected whole numbers from 1, got " +
        JSON.stringify(el.identities.value) + " and " + JSON.stringify(el.perIdentity.value), "error");
      el.identities.focus();
      return;
    }
    stopPolling();
    revoke(state.downloadUrl);
    revoke(state.cardUrl);
    state.downloadUrl = null;
    state.cardUrl = null;
    el.downloadLink.hidden = true;
    el.downloadLink.removeAttribute("href");
    el.cardLink.hidden = true;
    clearIdentityGrid();
    el.job.hidden = false;
    setJobUi(true);
    showProgress({ status: "submitting", count, done: 0 });
    try {
      // count is implied by identities x per_identity; the crowd fields are sent only when set
      const model = chosenModel();
      const body = identities ? { seed: state.seed, truncation: state.truncation, format: "png", ...identities }
        : { count, seed: state.seed, truncation: state.truncation, format: "png" };
      if (model && !model.default) body.model = modelRef(model);
      Object.assign(body, state.crowd ? state.crowd.fields() : {});
      const created = await (await api("/v1/jobs", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      })).json();
      state.job = { id: created.id, links: created.links, timer: 0, failures: 0, identities: created.identities };
      el.job.dataset.jobId = created.id;
      showProgress({ ...created, done: 0 });
      poll(state.job);
    } catch (err) {
      setJobUi(false);
      showProgress({ status: "not started", count, done: 0 });
      reportError(err, "Starting the job");
    }
  }

  function stopPolling() {
    if (state.job) clearTimeout(state.job.timer);
    state.job = null;
  }

  async function poll(job) {
    if (state.job !== job) return;
    let view;
    try {
      view = await (await api(job.links.self)).json();
      job.failures = 0;
    } catch (err) {
      if (state.job !== job) return;
      const transient = err instanceof ApiError && (err.status === 0 || err.status === 429 || err.status >= 500);
      if (transient && ++job.failures <= 20) {
        showStatus("Checking the job: " + describe(err) + " Trying again.", "error");
        job.timer = setTimeout(() => poll(job), Math.max(POLL_MS, 1000 * Number(err.retryAfter || 0)));
        return;
      }
      setJobUi(false);
      stopPolling();
      reportError(err, "Checking the job");
      return;
    }
    if (state.job !== job) return;
    showProgress(view);
    if (view.status === "queued" || view.status === "running") {
      job.timer = setTimeout(() => poll(job), POLL_MS);
      return;
    }
    if (view.status !== "succeeded") {
      setJobUi(false);
      stopPolling();
      showStatus("The job " + view.status + (view.error ? ": " + view.error : "."), "error");
      return;
    }
    await fetchResult(job, view);
  }

  async function fetchResult(job, view) {
    el.progressText.textContent = "succeeded: " + view.count.toLocaleString() + " faces. Fetching the tar…";
    try {
      const blob = await (await api(job.links.result)).blob();
      if (state.job !== job) return;
      if (job.identities) showIdentityGrid(await blob.arrayBuffer());
      state.downloadUrl = URL.createObjectURL(new Blob([blob], { type: "application/x-tar" }));
      const name = "synthgen-" + job.id + ".tar";
      el.downloadLink.href = state.downloadUrl;
      el.downloadLink.download = name;
      el.downloadLink.textContent = "Save " + name + " (" + formatBytes(blob.size) + ")";
      el.downloadLink.dataset.bytes = String(blob.size);
      el.downloadLink.hidden = false;
      el.progressText.textContent = "succeeded: " + view.count.toLocaleString() + " faces, " + formatBytes(blob.size) + ".";
      if (job.links.card) await fetchCard(job);
    } catch (err) {
      reportError(err, "Fetching the result");
    } finally {
      if (state.job === job) {
        setJobUi(false);
        state.job = null;
      }
    }
  }

  async function fetchCard(job) {
    let card;
    try {
      card = await (await api(job.links.card)).text();
    } catch (err) {
      reportError(err, "Fetching the dataset card");
      return;
    }
    if (state.job !== job) return;
    state.cardUrl = URL.createObjectURL(new Blob([card], { type: "text/markdown" }));
    el.cardLink.href = state.cardUrl;
    el.cardLink.download = "synthgen-" + job.id + ".md";
    el.cardLink.hidden = false;
  }

  async function cancelDownload() {
    const job = state.job;
    if (!job) return;
    stopPolling();
    setJobUi(false);
    try {
      const view = await (await api(job.links.self, { method: "DELETE" })).json();
      showProgress(view);
    } catch (err) {
      reportError(err, "Cancelling the job");
    }
  }

  // ---------------------------------------------------------------- the API key

  function useKey(key) {
    state.apiKey = key.trim();
    storeKey(state.apiKey);
    el.apiKey.value = state.apiKey;
    err401Pending = false;
    clearStatus();
    loadModel();
    loadCrowd();
    loadPicks();
    loadStrip();
  }

  // ---------------------------------------------------------------- start

  function start() {
    buildGrid();
    el.apiKey.value = state.apiKey;
    el.downloadCount.max = String(MAX_DOWNLOAD);

    const fromHash = readHash();
    state.seed = fromHash.seed !== null ? fromHash.seed : randomSeed();
    state.truncation = fromHash.truncation;
    el.truncation.value = String(state.truncation === null ? TRUNCATION_OFF : state.truncation);
    showTruncation();

    el.keyForm.addEventListener("submit", (event) => {
      event.preventDefault();
      useKey(el.apiKey.value);
    });
    el.clearKey.addEventListener("click", () => useKey(""));
    el.newCrowd.addEventListener("click", newCrowd);
    el.seed.addEventListener("change", () => {
      const seed = Number(el.seed.value);
      if (!Number.isSafeInteger(seed) || seed < 0) {
        showStatus("Seed: expected a whole number from 0 to " + Number.MAX_SAFE_INTEGER + ", got " + JSON.stringify(el.seed.value), "error");
        el.seed.value = String(state.seed);
        return;
      }
      state.seed = seed;
      loadCrowd();
    });
    el.truncation.addEventListener("input", () => onTruncation(false));
    el.truncation.addEventListener("change", () => onTruncation(true));
    document.querySelectorAll('input[name="method"]').forEach((radio) =>
      radio.addEventListener("change", () => {
        state.method = radio.value;
        loadStrip();
      }),
    );
    el.swap.addEventListener("click", () => {
      state.picks.reverse();
      markPicks();
      loadPicks();
      loadStrip();
    });
    el.downloadForm.addEventListener("submit", startDownload);
    el.jobModel.addEventListener("change", showAttributes);
    [el.identities, el.perIdentity, el.variation].forEach((input) => input.addEventListener("input", showIdentityCount));
    showIdentityCount();
    el.cancelJob.addEventListener("click", cancelDownload);

    loadModel();
    loadCrowd();
  }

  start();
})();
