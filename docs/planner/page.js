// The planner page: plans the request of the form (or of the address) with the bundled planner and draws the
// predicted attention latency of each layer. `#result` holds the numbers as JSON (read by
// tests/e2e/planner_web_test.ts, which compares them with the Deno planner's); `data-state` on <body> is
// "done" or "error" once planning has finished.
// The bundle is built by `deno task build:planner` (git-ignored, absent from a fresh clone): imported by a
// computed URL so that `deno check .` does not resolve it.
const {
  builtinDensities,
  builtinProfile,
  builtinProfileNames,
  Cause,
  defaultOperators,
  Effect,
  Exit,
  MODELS,
  plan,
} = await import(new URL("./longctx-plans.js", import.meta.url).href);

const $ = (id) => document.getElementById(id);
const COLORS = {
  dense: "#7f8c8d",
  sale: "#2e86de",
  hip: "#e67e22",
  tokenselect: "#27ae60",
  squeezed: "#8e44ad",
};
const SVG = "http://www.w3.org/2000/svg";

/** The request of the page's address, with defaults. */
const requestFromUrl = () => {
  const q = new URLSearchParams(location.search);
  return {
    model: q.get("model") ?? "llama-3.1-8b",
    contextLength: Number(q.get("context") ?? 65536),
    device: q.get("device") ?? "h200",
    phase: q.get("phase") ?? "prefill",
  };
};

/** Plan `r` (an Effect run to its Exit, so a typed error shows its message and hint). */
const planFor = (r) =>
  Effect.runPromiseExit(Effect.gen(function* () {
    const env = {
      profile: yield* builtinProfile(r.device),
      operators: defaultOperators(),
      densities: yield* builtinDensities(),
    };
    return yield* plan({ model: r.model, contextLength: r.contextLength, phase: r.phase }, env);
  }));

/** Per-layer predicted latency (ms) and pipeline of a plan. */
const perLayer = (p) =>
  p.groups.flatMap((g) =>
    Array.from({ length: g.layers[1] - g.layers[0] }, (_, i) => ({
      layer: g.layers[0] + i,
      pipeline: g.pipeline,
      ms: g.msPerLayer,
    }))
  );

const el = (name, attrs, text) => {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
};

/** Bars of per-layer latency, with a y axis in ms and the layer index below. */
const draw = (layers) => {
  const svg = $("chart");
  svg.replaceChildren();
  const [W, H, left, bottom, top] = [900, 320, 70, 30, 10];
  const max = Math.max(...layers.map((l) => l.ms)) || 1;
  const bw = (W - left - 10) / layers.length;
  const y = (ms) => top + (H - top - bottom) * (1 - ms / max);
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(el("line", { x1: left, x2: W - 10, y1: y(t * max), y2: y(t * max), stroke: "#ddd" }));
    svg.append(
      el(
        "text",
        { x: left - 6, y: y(t * max) + 4, "text-anchor": "end", "font-size": 11 },
        (t * max).toFixed(max < 10 ? 2 : 0),
      ),
    );
  }
  svg.append(
    el("text", {
      x: 12,
      y: H / 2,
      transform: `rotate(-90 12 ${H / 2})`,
      "text-anchor": "middle",
      "font-size": 12,
    }, "ms per layer"),
  );
  for (const l of layers) {
    const x = left + l.layer * bw;
    const bar = el("rect", {
      x: x + 1,
      y: y(l.ms),
      width: Math.max(1, bw - 2),
      height: H - bottom - y(l.ms),
      fill: COLORS[l.pipeline] ?? "#444",
    });
    bar.append(el("title", {}, `layer ${l.layer}: ${l.pipeline}, ${l.ms.toFixed(2)} ms`));
    svg.append(bar);
    if (layers.length <= 40 || l.layer % 4 === 0) {
      svg.append(
        el(
          "text",
          { x: x + bw / 2, y: H - bottom + 14, "text-anchor": "middle", "font-size": 10 },
          String(l.layer),
        ),
      );
    }
  }
  svg.append(
    el("text", { x: left + (W - left) / 2, y: H - 2, "text-anchor": "middle", "font-size": 12 }, "layer"),
  );
  $("legend").replaceChildren(...[...new Set(layers.map((l) => l.pipeline))].flatMap((name) => {
    const sw = document.createElement("span");
    sw.style.background = COLORS[name] ?? "#444";
    return [sw, document.createTextNode(name)];
  }));
};

const show = async (r) => {
  document.body.dataset.state = "planning";
  $("error").textContent = "";
  const exit = await planFor(r);
  if (Exit.isFailure(exit)) {
    const e = Cause.squash(exit.cause);
    $("error").textContent = `error: ${e.message ?? String(e)}${e.hint ? ` — fix: ${e.hint}` : ""}`;
    $("chart").replaceChildren();
    $("result").textContent = JSON.stringify({ request: r, error: e.message ?? String(e) });
    document.body.dataset.state = "error";
    return;
  }
  const p = exit.value;
  const layers = perLayer(p);
  draw(layers);
  $("summary").textContent = `${p.model.id} at ${p.contextLength} tokens (${p.phase}, ${p.dtype}) on the ` +
    `${p.device.profile} profile (${p.device.adapter}): attention ${
      p.predicted.attentionMs.toFixed(1)
    } ms, ` +
    `dense everywhere ${p.predicted.denseAttentionMs.toFixed(1)} ms`;
  $("result").textContent = JSON.stringify({
    request: r,
    dtype: p.dtype,
    attentionMs: p.predicted.attentionMs,
    denseAttentionMs: p.predicted.denseAttentionMs,
    groups: p.groups.map((g) => ({ layers: g.layers, pipeline: g.pipeline, msPerLayer: g.msPerLayer })),
    perLayerMs: layers.map((l) => l.ms),
  });
  document.body.dataset.state = "done";
};

const r = requestFromUrl();
$("model").replaceChildren(...MODELS.map((m) => new Option(m.id, m.id, false, m.id === r.model)));
$("device").replaceChildren(...builtinProfileNames().map((d) => new Option(d, d, false, d === r.device)));
$("context").value = String(r.contextLength);
$("phase").value = r.phase;
$("form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const next = {
    model: $("model").value,
    contextLength: Number($("context").value),
    device: $("device").value,
    phase: $("phase").value,
  };
  history.replaceState(
    null,
    "",
    `?model=${next.model}&context=${next.contextLength}&device=${next.device}&phase=${next.phase}`,
  );
  show(next);
});
show(r);
