// The page: send the text box's lines to POST /translate, list the translations, and draw the selected
// line's attention as an SVG heatmap (rows: output tokens, columns: source tokens). No libraries.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let translations = [];

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

async function loadInfo() {
  try {
    const response = await fetch("/info");
    const info = await response.json();
    $("model-info").textContent =
      `${info.src_lang} → ${info.tgt_lang} · model ${info.model_name} · ` +
      `vocab ${info.vocab.src}/${info.vocab.tgt} · up to ${info.limits.max_lines} lines`;
    const beam = $("beam-size");
    beam.max = info.limits.max_beam_size;
    beam.value = info.search_defaults.beam_size;
  } catch (err) {
    $("model-info").textContent = `model description unavailable (${err})`;
  }
}

async function translate() {
  const lines = $("source").value.replace(/\s+$/, "").split("\n");
  if (lines.length === 1 && lines[0].trim() === "") {
    setStatus("Type a sentence first.", true);
    return;
  }
  const button = $("translate");
  button.disabled = true;
  setStatus("translating…", false);
  try {
    const response = await fetch("/translate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        lines,
        beam_size: Number($("beam-size").value),
        nbest: 1,
        attention: true,
      }),
    });
    const body = await response.json();
    if (!response.ok) {
      setStatus(`error ${response.status}: ${body.error}`, true);
      return;
    }
    translations = body.translations;
    setStatus(`${translations.length} line(s) in ${Math.round(body.elapsed_ms)} ms`, false);
    showResults();
  } catch (err) {
    setStatus(`request failed: ${err}`, true);
  } finally {
    button.disabled = false;
  }
}

function showResults() {
  const list = $("results");
  list.replaceChildren();
  translations.forEach((t, index) => {
    const item = document.createElement("li");
    const source = document.createElement("span");
    source.className = "source";
    source.textContent = t.source || "(empty line)";
    const target = document.createElement("span");
    target.className = "target";
    target.textContent = t.text;
    item.append(source, target);
    if (t.hypotheses.length) {
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = `score ${Number(t.hypotheses[0].score).toFixed(3)}`;
      item.append(score);
    }
    item.addEventListener("click", () => select(index));
    list.append(item);
  });
  const first = translations.findIndex((t) => t.attention && t.attention.weights.length);
  select(first >= 0 ? first : 0);
}

function select(index) {
  [...$("results").children].forEach((item, i) => item.classList.toggle("selected", i === index));
  const t = translations[index];
  $("attention-caption").textContent = t ? `— line ${index + 1}` : "";
  drawHeatmap(t ? t.attention : null);
}

// white → dark blue, for a weight in [0, 1]
function color(weight) {
  const w = Math.max(0, Math.min(1, weight));
  const from = [247, 251, 255];
  const to = [8, 48, 107];
  const rgb = from.map((f, i) => Math.round(f + (to[i] - f) * Math.sqrt(w)));
  return `rgb(${rgb.join(",")})`;
}

function svgElement(name, attributes, text) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

function drawHeatmap(attention) {
  const box = $("heatmap");
  box.replaceChildren();
  if (!attention || !attention.weights.length) {
    const note = document.createElement("p");
    note.className = "hint";
    note.textContent = "No attention for an empty line.";
    box.append(note);
    return;
  }
  const src = attention.src_tokens;
  const tgt = attention.tgt_tokens;
  const cell = Math.max(14, Math.min(32, Math.floor(900 / src.length)));
  const charWidth = 7.5;
  const left = 12 + charWidth * Math.max(...tgt.map((t) => t.length));
  const top = 12 + 0.75 * charWidth * Math.max(...src.map((t) => t.length));
  const width = left + cell * src.length + 4;
  const height = top + cell * tgt.length + 4;
  const svg = svgElement("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  svg.setAttribute("aria-label", "attention heatmap");

  src.forEach((token, j) => {
    const x = left + j * cell + cell / 2;
    const y = top - 6;
    svg.append(
      svgElement(
        "text",
        { x, y, transform: `rotate(-45 ${x} ${y})`, class: "src-label", "data-col": j },
        token,
      ),
    );
  });
  tgt.forEach((token, i) => {
    const y = top + i * cell + cell / 2 + 4;
    svg.append(
      svgElement("text", { x: left - 6, y, "text-anchor": "end", class: "tgt-label", "data-row": i }, token),
    );
  });
  attention.weights.forEach((row, i) => {
    row.forEach((weight, j) => {
      svg.append(
        svgElement("rect", {
          x: left + j * cell,
          y: top + i * cell,
          width: cell - 1,
          height: cell - 1,
          fill: color(weight),
          class: "cell",
          "data-row": i,
          "data-col": j,
          "data-weight": weight,
        }),
      );
    });
  });
  svg.addEventListener("mousemove", (event) => hover(event, attention));
  svg.addEventListener("mouseleave", () => hover(null, attention));
  box.append(svg);
}

function hover(event, attention) {
  const tooltip = $("tooltip");
  const target = event && event.target.closest("rect.cell");
  document.querySelectorAll("#heatmap text.active").forEach((t) => t.classList.remove("active"));
  if (!target) {
    tooltip.hidden = true;
    return;
  }
  const i = Number(target.dataset.row);
  const j = Number(target.dataset.col);
  const weight = attention.weights[i][j];
  tooltip.replaceChildren();
  const parts = [
    ["source", attention.src_tokens[j], "tt-src"],
    ["target", attention.tgt_tokens[i], "tt-tgt"],
    ["weight", weight.toFixed(4), "tt-weight"],
  ];
  parts.forEach(([name, value, cls], k) => {
    const label = document.createElement("span");
    label.textContent = `${k ? " · " : ""}${name} `;
    const strong = document.createElement("strong");
    strong.className = cls;
    strong.textContent = value;
    tooltip.append(label, strong);
  });
  document.querySelector(`#heatmap text.src-label[data-col="${j}"]`).classList.add("active");
  document.querySelector(`#heatmap text.tgt-label[data-row="${i}"]`).classList.add("active");
  tooltip.style.left = `${event.clientX + 14}px`;
  tooltip.style.top = `${event.clientY + 14}px`;
  tooltip.hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  $("translate").addEventListener("click", translate);
  $("source").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) translate();
  });
  loadInfo();
});
