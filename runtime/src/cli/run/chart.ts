/**
 * The `run` command's chart: per-layer density (kept / causal blocks) and attention output relative error
 * `‖o − o_dense‖ / ‖o_dense‖` of the pipeline, as two stacked Vega-Lite panels rendered headless to SVG by Vega
 * (the library `benchmarks/charts/latency.ts` uses).
 * @module
 */
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import type { LayerStats } from "./execute.ts";

/** The Vega-Lite spec: bars of density per layer, above a line of output relative error per layer (log y). */
export const layerChartSpec = (
  layers: readonly LayerStats[],
  title: string,
  subtitle: string,
): TopLevelSpec => {
  const values = layers.map((l) => ({
    layer: l.layer,
    pipeline: l.pipeline,
    density: l.density,
    // log scale: an exact layer (error 0) is drawn at the axis floor and labelled by its pipeline
    outRelErr: l.outRelErr === null ? null : Math.max(l.outRelErr, 1e-9),
  }));
  const x = { field: "layer", type: "ordinal" as const, title: "layer" };
  const color = { field: "pipeline", type: "nominal" as const, title: "attention" };
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: { text: title, subtitle },
    background: "white",
    data: { values },
    vconcat: [
      {
        width: 560,
        height: 180,
        mark: { type: "bar" },
        encoding: {
          x,
          y: {
            field: "density",
            type: "quantitative",
            title: "density (attended / causal)",
            scale: { domain: [0, 1] },
          },
          color,
          tooltip: [{ field: "layer" }, { field: "density", format: ".3f" }],
        },
      },
      {
        width: 560,
        height: 180,
        mark: { type: "line", point: true },
        encoding: {
          x,
          y: {
            field: "outRelErr",
            type: "quantitative",
            title: "output rel. error vs dense (log)",
            scale: { type: "log" },
            axis: { format: ".0e" },
          },
          color,
        },
      },
    ],
  };
};

/** Render the per-layer chart to an SVG string (headless Vega view, renderer "none"). */
export const renderLayerChart = async (
  layers: readonly LayerStats[],
  title: string,
  subtitle: string,
): Promise<string> => {
  const vgSpec = compile(layerChartSpec(layers, title, subtitle)).spec;
  const view = new vega.View(vega.parse(vgSpec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
};
