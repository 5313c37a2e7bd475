/**
 * Latency against context length, log–log, one line per implementation (our dense, our SALE, PyTorch SDPA
 * flash and cuDNN, …), drawn with Vega-Lite and rendered headless to SVG by Vega (`view.toSVG()`, no DOM).
 *
 * Points come from result rows with `metric: "latency_ms"` and a `context`: the median over repeated runs is
 * the point, the min–max range over runs is a vertical rule (the spread). One model is drawn: the one with the
 * most latency rows (the chart subtitle names it and the GPU).
 * @module
 */
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import type { Row } from "../lib/results.ts";

/** One point of the chart: median and spread over runs of one implementation at one context (tokens, ms). */
export interface LatencyPoint {
  readonly series: string;
  readonly context: number;
  readonly medianMs: number;
  readonly minMs: number;
  readonly maxMs: number;
  readonly n: number;
}

/** The median of a non-empty list (mean of the two middle values for even lengths). */
export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Which series a latency row belongs to: `impl`, else `backend`, with `dtype` when given. */
export const seriesOf = (r: Row): string => `${r.impl ?? r.backend}${r.dtype ? ` ${r.dtype}` : ""}`;

/** Latency rows chosen for the chart, and the GPU(s) and model they were drawn for. */
export interface LatencySelection {
  /** GPU name(s) of the rows drawn, joined with " / " when the suites name one machine differently. */
  readonly gpu: string;
  readonly model: string;
  readonly points: readonly LatencyPoint[];
  /** Series left out as stages of another series (e.g. `ours-sale-estimation` of `ours-sale`). */
  readonly stages: readonly string[];
  /** Distinct `note`s of the drawn rows, with the contexts they apply to (caveats the caption repeats). */
  readonly notes: readonly {
    readonly note: string;
    readonly series: readonly string[];
    readonly contexts: readonly number[];
  }[];
}

/**
 * Pick the chart's points from rows of any suite: `latency_ms` rows with a `context`, for the model with the
 * most such rows (all GPUs: one suite run is one machine); grouped by series and context. A series whose
 * `impl` is another series' `impl` plus `-suffix` is a stage of it (e.g. `ours-sale-estimation`) and is left
 * out, so the chart shows end-to-end implementations. Returns `undefined` when there are no points.
 */
export const selectLatency = (rows: readonly Row[]): LatencySelection | undefined => {
  const lat = rows.filter((r) => r.metric === "latency_ms" && r.context !== undefined && r.unit === "ms");
  if (lat.length === 0) return undefined;
  const models = new Map<string, number>();
  for (const r of lat) models.set(r.model ?? "", (models.get(r.model ?? "") ?? 0) + 1);
  const [model] = [...models.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))[0];
  const mine = lat.filter((r) => (r.model ?? "") === model);
  const impls = [...new Set(mine.map((r) => r.impl ?? r.backend))];
  const isStage = (i: string) => impls.some((o) => o !== i && i.startsWith(`${o}-`));
  const drawn = mine.filter((r) => !isStage(r.impl ?? r.backend));
  const groups = new Map<string, { series: string; context: number; values: number[] }>();
  for (const r of drawn) {
    const series = seriesOf(r);
    const k = `${series}\u0000${r.context}`;
    const g = groups.get(k) ?? { series, context: r.context!, values: [] };
    g.values.push(r.value);
    groups.set(k, g);
  }
  const points = [...groups.values()]
    .map((g) => ({
      series: g.series,
      context: g.context,
      medianMs: median(g.values),
      minMs: Math.min(...g.values),
      maxMs: Math.max(...g.values),
      n: g.values.length,
    }))
    .sort((a, b) => a.series.localeCompare(b.series) || a.context - b.context);
  return {
    gpu: [...new Set(drawn.map((r) => r.gpu))].join(" / "),
    model,
    points,
    stages: impls.filter(isStage).sort(),
    notes: [...Map.groupBy(drawn.filter((r) => r.note), (r) => r.note!).entries()].map(([note, rs]) => ({
      note,
      series: [...new Set(rs.map(seriesOf))].sort(),
      contexts: [...new Set(rs.map((r) => r.context!))].sort((a, b) => a - b),
    })),
  };
};

/** The Vega-Lite spec of the chart (log–log axes; points, lines, and min–max rules for the spread). */
export const latencySpec = (sel: LatencySelection): TopLevelSpec => {
  const x = {
    field: "context",
    type: "quantitative" as const,
    title: "context length (tokens, log scale; K = 1024)",
    scale: { type: "log" as const, base: 2 },
    axis: {
      values: [...new Set(sel.points.map((p) => p.context))].sort((a, b) => a - b),
      labelExpr: "datum.value >= 1024 ? datum.value / 1024 + 'K' : datum.value",
    },
  };
  const y = {
    field: "medianMs",
    type: "quantitative" as const,
    title: "latency (ms, log scale; median of runs, bar = min–max)",
    scale: { type: "log" as const },
  };
  const color = { field: "series", type: "nominal" as const, title: "implementation" };
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: {
      text: "Attention prefill latency vs context length",
      subtitle: `${sel.gpu}${sel.model ? ` — ${sel.model}` : ""}`,
    },
    width: 560,
    height: 380,
    background: "white",
    data: { values: sel.points.map((p) => ({ ...p })) },
    layer: [
      {
        mark: { type: "rule", strokeWidth: 2 },
        encoding: { x, y: { ...y, field: "minMs" }, y2: { field: "maxMs" }, color },
      },
      {
        mark: { type: "line", point: { filled: true, size: 50 } },
        encoding: {
          x,
          y,
          color,
          tooltip: [
            { field: "series" },
            { field: "context" },
            { field: "medianMs", format: ".4g" },
            { field: "n" },
          ],
        },
      },
    ],
  };
};

/** Render the chart to an SVG string (headless Vega view, renderer "none"). `undefined` without points. */
export const renderLatencySvg = async (rows: readonly Row[]): Promise<string | undefined> => {
  const sel = selectLatency(rows);
  if (!sel) return undefined;
  const vgSpec = compile(latencySpec(sel)).spec;
  const view = new vega.View(vega.parse(vgSpec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
};
