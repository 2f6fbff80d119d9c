// synthgen web page: who is in a data set (API.md, "Controlling the crowd").
// An attribute picker (a select) and distribution sliders per attribute of the chosen model, the identity
// fields, and the identity grid of a finished identity job (rows: identities, columns: their variations).
// app.js owns the API calls; this file builds the controls and reads them back as POST /v1/jobs fields.
"use strict";

window.SynthgenCrowd = (() => {
  const BLOCK = 512;

  function percent(share) {
    return (share * 100).toFixed(1).replace(/\.0$/, "") + "%";
  }

  // Set one value's share to x (0..1) and scale the others so that the shares still sum to 1: in proportion
  // to what they were, or evenly when they were all 0.
  function rebalance(shares, value, x) {
    const others = Object.keys(shares).filter((v) => v !== value);
    const out = {};
    if (!others.length) return { [value]: 1 };
    const rest = others.reduce((sum, v) => sum + shares[v], 0);
    const left = 1 - x;
    for (const v of Object.keys(shares)) {
      if (v === value) out[v] = x;
      else out[v] = rest > 1e-12 ? (shares[v] * left) / rest : left / others.length;
    }
    return out;
  }

  function option(value, text) {
    return Object.assign(document.createElement("option"), { value, textContent: text });
  }

  // One attribute: a select ("any" draws it from the training labels) and, instead, exact shares.
  function attributeRow(name, values, isIdentity, onChange) {
    const row = Object.assign(document.createElement("div"), { className: "attribute" });
    row.dataset.name = name;
    const select = document.createElement("select");
    select.id = "attr-" + name;
    select.dataset.testid = "attr-" + name;
    select.append(option("", "any"), ...values.map((v) => option(v, v)));
    const label = Object.assign(document.createElement("label"), { htmlFor: select.id, textContent: name });
    if (isIdentity) {
      const tag = Object.assign(document.createElement("span"), { className: "tag", textContent: "identity" });
      tag.title = "fixed within each identity of an identity job";
      label.append(" ", tag);
    }
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.id = "shares-" + name;
    toggle.dataset.testid = "shares-" + name;
    const toggleLabel = Object.assign(document.createElement("label"), { className: "shares-toggle" });
    toggleLabel.append(toggle, " exact shares");

    const box = Object.assign(document.createElement("div"), { className: "shares", id: "dist-" + name, hidden: true });
    box.dataset.testid = "dist-" + name;
    let shares = Object.fromEntries(values.map((v) => [v, 1 / values.length]));
    const sliders = values.map((value) => {
      const line = Object.assign(document.createElement("div"), { className: "share" });
      const slider = document.createElement("input");
      Object.assign(slider, { type: "range", min: "0", max: "100", step: "1", id: "share-" + name + "-" + value });
      slider.dataset.testid = slider.id;
      slider.dataset.value = value;
      const out = Object.assign(document.createElement("output"), { htmlFor: slider.id });
      out.dataset.testid = slider.id + "-percent";
      line.append(Object.assign(document.createElement("label"), { htmlFor: slider.id, textContent: value }), slider, out);
      box.append(line);
      slider.addEventListener("input", () => {
        shares = rebalance(shares, value, Number(slider.value) / 100);
        show();
        onChange();
      });
      return { value, slider, out };
    });
    const total = Object.assign(document.createElement("p"), { className: "help shares-total" });
    box.append(total);

    function show() {
      for (const { value, slider, out } of sliders) {
        if (document.activeElement !== slider) slider.value = String(Math.round(shares[value] * 100));
        out.value = percent(shares[value]);
        slider.setAttribute("aria-valuetext", percent(shares[value]) + " " + value);
      }
      const sum = Object.values(shares).reduce((a, b) => a + b, 0);
      total.textContent = "total " + percent(sum) + " of the " + (isIdentity ? "identities (in an identity job) or " : "") + "images";
    }

    select.addEventListener("change", () => {
      toggle.disabled = select.value !== "";
      onChange();
    });
    toggle.addEventListener("change", () => {
      box.hidden = !toggle.checked;
      select.disabled = toggle.checked;
      onChange();
    });
    show();
    row.append(label, select, toggleLabel, box);
    return {
      name,
      row,
      fixed: () => (toggle.checked ? "" : select.value),
      shares: () => (toggle.checked ? { ...shares } : null),
    };
  }

  // The attribute controls of a model (from GET /v1/models), in `container`; `onChange` runs on every edit.
  function buildAttributes(container, model, onChange) {
    const attributes = (model && model.attributes) || {};
    const identity = new Set((model && model.identity_attributes) || []);
    const rows = Object.entries(attributes).map(([name, values]) => attributeRow(name, values, identity.has(name), onChange));
    container.replaceChildren(...rows.map((r) => r.row));
    return {
      count: rows.length,
      // the request's attributes and distribution: only what was set, so a plain job stays plain
      fields() {
        const out = {};
        for (const r of rows) {
          const fixed = r.fixed();
          const shares = r.shares();
          if (fixed) (out.attributes = out.attributes || {})[r.name] = fixed;
          else if (shares) (out.distribution = out.distribution || {})[r.name] = shares;
        }
        return out;
      },
    };
  }

  // A result tar (API.md: {key}.{ext} and {key}.json per sample) -> [{key, ext, image, meta}], in order.
  function readTar(buffer) {
    const bytes = new Uint8Array(buffer);
    const text = new TextDecoder();
    const byKey = new Map();
    for (let at = 0; at + BLOCK <= bytes.length; ) {
      const header = bytes.subarray(at, at + BLOCK);
      if (header.every((b) => b === 0)) break;
      const name = text.decode(header.subarray(0, 100)).replace(/\0.*$/s, "");
      const size = parseInt(text.decode(header.subarray(124, 136)).replace(/\0.*$/s, "").trim() || "0", 8);
      const data = bytes.subarray(at + BLOCK, at + BLOCK + size);
      at += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
      const dot = name.indexOf(".");
      const key = name.slice(0, dot);
      const ext = name.slice(dot + 1);
      const sample = byKey.get(key) || { key };
      if (ext === "json") sample.meta = JSON.parse(text.decode(data));
      else Object.assign(sample, { ext, image: data });
      byKey.set(key, sample);
    }
    return [...byKey.values()];
  }

  const MIME = { png: "image/png", jpg: "image/jpeg", webp: "image/webp" };

  function describeImage(meta) {
    const attributes = Object.entries(meta.attributes || {}).map(([n, v]) => n + ": " + v);
    return "identity " + meta.identity + ", image " + meta.index + (attributes.length ? "\n" + attributes.join("\n") : "");
  }

  // The identity grid: one row per identity (its images, the variations, in index order); returns the
  // blob URLs it made, for the caller to revoke. `limit` caps the rows shown.
  function identityGrid(container, samples, limit) {
    const rows = new Map();
    for (const s of samples) {
      if (!s.meta || s.meta.identity === undefined || !s.image) continue;
      if (!rows.has(s.meta.identity)) rows.set(s.meta.identity, []);
      rows.get(s.meta.identity).push(s);
    }
    const urls = [];
    const shown = [...rows.entries()].slice(0, limit).map(([identity, images]) => {
      const row = Object.assign(document.createElement("div"), { className: "identity-row" });
      row.dataset.identity = String(identity);
      row.setAttribute("role", "row");
      const head = Object.assign(document.createElement("span"), { className: "identity-label", textContent: "#" + identity });
      head.setAttribute("role", "rowheader");
      row.append(head);
      for (const s of images) {
        const url = URL.createObjectURL(new Blob([s.image], { type: MIME[s.ext] || "application/octet-stream" }));
        urls.push(url);
        const img = Object.assign(document.createElement("img"), { src: url, width: 64, height: 64, alt: describeImage(s.meta) });
        img.title = img.alt;
        img.dataset.index = String(s.meta.index);
        img.dataset.attributes = JSON.stringify(s.meta.attributes || {});
        img.setAttribute("role", "cell");
        row.append(img);
      }
      return row;
    });
    container.replaceChildren(...shown);
    container.dataset.identities = String(rows.size);
    container.dataset.shown = String(shown.length);
    return urls;
  }

  return { buildAttributes, rebalance, readTar, identityGrid, percent };
})();
