/**
 * The fidelity chart of `bench fidelity` rows: accuracy over the task set (left) and perplexity change against
 * dense (right), both against density (kept / causal attention blocks, mean over layers and heads), one curve
 * per technique and context length; dense sits at density 1. RAG is drawn on the accuracy panel at its
 * context fraction (tokens of retrieved passages / document tokens), the share of the document it reads.
 * Drawn with Vega-Lite, rendered headless to SVG by Vega (`view.toSVG()`).
 * @module
 */
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

/** What the chart reads of a result row. */
export interface FidelityRow {
  readonly metric: string;
  readonly value: number;
  readonly context?: number;
  readonly impl?: string;
  readonly params?: Readonly<Record<string, string | number | boolean>>;
}

/** One point: a technique at one knob value and context length, averaged over haystacks (and runs). */
export interface FidelityPoint {
  readonly series: string;
  readonly context: number;
  /** Density, or RAG's context fraction. */
  readonly density: number;
  /** Overall accuracy: correct / tasks over every haystack. */
  readonly accuracy: number;
  /** Mean perplexity change against dense, %, (undefined for RAG). */
  readonly pplChange?: number;
  readonly knob: string;
  readonly tasks: number;
}

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/**
 * Group rows into chart points: key = impl, knob value, context; density from `density` (RAG:
 * `context_fraction`) rows, accuracy from `accuracy` rows of `task_type: "all"` (pooled counts), perplexity
 * change from `perplexity_change` rows (the exact reference: 0; none for a technique without such rows). Returns the points sorted by series, context, density.
 */
export const fidelityPoints = (rows: readonly FidelityRow[]): FidelityPoint[] => {
  const groups = new Map<string, { impl: string; knob: string; context: number; rows: FidelityRow[] }>();
  for (const r of rows) {
    if (r.context === undefined || r.impl === undefined) continue;
    const knob = r.params?.knob_value === undefined ? "" : String(r.params.knob_value);
    const k = `${r.impl}\u0000${knob}\u0000${r.context}`;
    const g = groups.get(k) ?? { impl: r.impl, knob, context: r.context, rows: [] };
    g.rows.push(r);
    groups.set(k, g);
  }
  const out: FidelityPoint[] = [];
  for (const g of groups.values()) {
    const rag = g.impl === "rag";
    const dens = g.rows.filter((r) => r.metric === (rag ? "context_fraction" : "density")).map((r) =>
      r.value
    );
    const acc = g.rows.filter((r) => r.metric === "accuracy" && r.params?.task_type === "all");
    const pc = g.rows.filter((r) => r.metric === "perplexity_change").map((r) => r.value);
    if (dens.length === 0 || acc.length === 0) continue;
    const tasks = acc.reduce((s, r) => s + Number(r.params?.tasks ?? 0), 0);
    const correct = acc.reduce((s, r) => s + Number(r.params?.correct ?? 0), 0);
    out.push({
      series: `${g.impl} @ ${g.context}`,
      context: g.context,
      density: mean(dens),
      accuracy: tasks > 0 ? correct / tasks : 0,
      // the exact reference (no knob, density 1) is the 0 line; a technique without perplexity rows (squeezed:
      // its document runs dense) has no point on the perplexity panel
      ...(rag
        ? {}
        : pc.length
        ? { pplChange: mean(pc) }
        : !g.knob && mean(dens) === 1
        ? { pplChange: 0 }
        : {}),
      knob: g.knob,
      tasks,
    });
  }
  return out.sort((a, b) => a.series.localeCompare(b.series) || a.density - b.density);
};

/** The Vega-Lite spec: two panels side by side sharing the colour legend. */
export const fidelitySpec = (points: readonly FidelityPoint[], subtitle: string): TopLevelSpec => {
  const x = {
    field: "density",
    type: "quantitative" as const,
    title: "density (kept / causal blocks; RAG: share read)",
  };
  const color = { field: "series", type: "nominal" as const, title: "technique @ context" };
  const tooltip = [
    { field: "series" },
    { field: "knob" },
    { field: "density", format: ".3f" },
    {
      field: "accuracy",
      format: ".3f",
    },
    { field: "pplChange", format: ".4f" },
    { field: "tasks" },
  ];
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: { text: "Fidelity against density, one curve per technique", subtitle },
    background: "white",
    data: { values: points.map((p) => ({ ...p })) },
    hconcat: [
      {
        width: 340,
        height: 260,
        mark: { type: "line", point: { filled: true, size: 50 } },
        encoding: {
          x,
          y: {
            field: "accuracy",
            type: "quantitative",
            title: "accuracy (all task types)",
            scale: { domain: [0, 1] },
          },
          color,
          tooltip,
        },
      },
      {
        width: 340,
        height: 260,
        transform: [{ filter: "isValid(datum.pplChange)" }],
        mark: { type: "line", point: { filled: true, size: 50 } },
        encoding: {
          x,
          y: { field: "pplChange", type: "quantitative", title: "perplexity change vs dense (%)" },
          color,
          tooltip,
        },
      },
    ],
  };
};

/** Render the chart of `rows` to SVG; `undefined` when no row makes a point. */
export const renderFidelitySvg = async (rows: readonly FidelityRow[]): Promise<string | undefined> => {
  const points = fidelityPoints(rows);
  if (points.length === 0) return undefined;
  const models = [...new Set(rows.map((r) => (r as { model?: string }).model).filter((m) => m))];
  const backends = [...new Set(rows.map((r) => (r as { backend?: string }).backend).filter((m) => m))];
  const spec = fidelitySpec(
    points,
    `${models.join(", ")} — ${backends.join(", ")}; RAG at its context fraction`,
  );
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
};
