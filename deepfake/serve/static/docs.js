// An offline reference of the API, built from /openapi.json (no CDN): each route, what it takes, what it answers.
"use strict";

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function schemaText(schema) {
  if (!schema) return "";
  if (schema.properties) {
    const required = new Set(schema.required || []);
    return Object.entries(schema.properties).map(([name, p]) =>
      `${name}${required.has(name) ? "" : "?"}: ${p.format === "binary" ? "file" : p.type || "any"}` +
      `${p.default !== undefined ? " = " + JSON.stringify(p.default) : ""}${p.description ? "  (" + p.description + ")" : ""}`
    ).join("\n");
  }
  return JSON.stringify(schema);
}

async function main() {
  const box = document.getElementById("endpoints");
  const spec = await (await fetch("/openapi.json")).json();
  box.replaceChildren();
  box.appendChild(el("p", spec.info.description || "", "muted"));
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const card = el("section", undefined, "card");
      card.appendChild(el("h2", `${method.toUpperCase()} ${path}`));
      if (op.summary) card.appendChild(el("p", op.summary));
      if (op.security) card.appendChild(el("p", "needs Authorization: Bearer <token> when the server has a token", "muted"));
      for (const p of op.parameters || []) card.appendChild(el("p", `${p.in} parameter ${p.name}: ${(p.schema || {}).type || ""}`));
      const body = (op.requestBody || {}).content || {};
      for (const [kind, media] of Object.entries(body)) {
        card.appendChild(el("p", `body (${kind}):`));
        card.appendChild(el("pre", schemaText(media.schema)));
      }
      const codes = Object.entries(op.responses || {}).map(([code, r]) => `${code} ${r.description || ""}`);
      card.appendChild(el("p", "answers: " + codes.join("; "), "muted"));
      box.appendChild(card);
    }
  }
}

document.addEventListener("DOMContentLoaded", () => main().catch((e) => {
  document.getElementById("endpoints").textContent = "could not read /openapi.json: " + e.message;
}));
