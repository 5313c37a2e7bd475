/**
 * Check a rendered RESULTS.md against the JSON rows it was rendered from, independently of the renderer's
 * arithmetic: every suite-table line's values must be the JSON rows' values (in run order, to the 4
 * significant digits printed), its n/median/min/max/spread must follow from them, every row must appear in
 * exactly one line, and each roofline line's achieved TFLOP/s and TB/s must equal counted work / median time.
 * Returns a list of mismatches (empty = consistent).
 * @module
 */
import { describeBase, implOf, SEP } from "../../benchmarks/render.ts";
import type { Row } from "../../benchmarks/lib/results.ts";

/** Split a markdown table line into cells, honouring `\|` escapes. */
export const cells = (line: string): string[] =>
  line.trim().replace(/^\|/, "").replace(/\|$/, "").split(/(?<!\\)\|/).map((c) =>
    c.trim().replaceAll("\\|", "|")
  );

/** Parse a printed number ("3.822", "1.678e+8", "—" → NaN). */
const num = (s: string): number => (s === "" || s === "—" ? NaN : Number(s.replace(/×$/, "")));

/** Same number to the printed precision (4 significant digits; relative 6e-4, or exact zero). */
export const close = (printed: number, exact: number): boolean =>
  printed === exact || Math.abs(printed - exact) <= 6e-4 * Math.max(Math.abs(exact), 1e-300);

const med = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m] : 0.5 * (s[m - 1] + s[m]);
};

interface Table {
  readonly header: string[];
  readonly lines: string[][];
}

/** Tables under each `## ` heading: heading → tables (header + body lines). */
const tablesBySection = (md: string): Map<string, Table[]> => {
  const out = new Map<string, Table[]>();
  let section = "";
  let cur: Table | undefined;
  for (const raw of md.split("\n")) {
    if (raw.startsWith("## ")) {
      section = raw.slice(3).trim();
      cur = undefined;
      continue;
    }
    if (!raw.startsWith("|")) {
      cur = undefined;
      continue;
    }
    const c = cells(raw);
    if (!cur) {
      cur = { header: c, lines: [] };
      out.set(section, [...(out.get(section) ?? []), cur]);
    } else if (!c.every((x) => /^-+$/.test(x))) {
      cur.lines.push(c);
    }
  }
  return out;
};

/**
 * Whether a row fits a line's details cell: op/dtype/model exactly; each of the row's params present, with its
 * value among the `/`-separated values shown (params that varied by run are listed that way).
 */
export const detailsFit = (r: Row, details: string): boolean => {
  const shown = new Map<string, string>();
  for (const part of details === "" ? [] : details.split(SEP)) {
    const i = part.indexOf("=");
    shown.set(part.slice(0, i), part.slice(i + 1));
  }
  for (const part of describeBase(r)) {
    const i = part.indexOf("=");
    if (shown.get(part.slice(0, i)) !== part.slice(i + 1)) return false;
  }
  for (const k of ["op", "dtype", "model"]) {
    if (shown.has(k) && !(k in r)) return false;
  }
  for (const [k, v] of Object.entries(r.params ?? {})) {
    if (!shown.get(k)?.split(" / ").includes(String(v))) return false;
  }
  return true;
};

const runOf = (r: Row): string =>
  (r.run !== undefined ? `r${r.run}` : "") + (r.repeat !== undefined ? `.${r.repeat}` : "");

/** Compare RESULTS.md text with suites (suite → rows). */
export const checkResultsMd = (md: string, suites: ReadonlyMap<string, readonly Row[]>): string[] => {
  const errors: string[] = [];
  const sections = tablesBySection(md);
  for (const [suite, rows] of suites) {
    if (rows.length === 0) continue;
    const t = sections.get(`Suite \`${suite}\``)?.[0];
    if (!t) {
      errors.push(`suite ${suite}: no table in RESULTS.md`);
      continue;
    }
    const col = (name: string) => t.header.indexOf(name);
    const used = new Set<Row>();
    for (const c of t.lines) {
      const get = (name: string) => c[col(name)];
      const ctx = get("context");
      const match = rows.filter((r) =>
        r.metric === get("metric") && r.unit === get("unit") && r.gpu === get("gpu") &&
        String(r.context ?? "") === ctx && implOf(r) === get("impl") && detailsFit(r, get("details"))
      );
      const where = `suite ${suite}, line "${c.slice(0, 4).join(" | ")}"`;
      if (match.length === 0) {
        errors.push(`${where}: no JSON row matches`);
        continue;
      }
      for (const r of match) used.add(r);
      if (Number(get("n")) !== match.length) errors.push(`${where}: n=${get("n")} but ${match.length} rows`);
      const printed = get("values (run order)").split(", ").map((v) => {
        const m = /^(\S+)(?: \((\S+)\))?$/.exec(v);
        return { value: m ? num(m[1]) : NaN, run: m?.[2] ?? "" };
      });
      const values = match.map((r) => r.value);
      const unmatched = [...match];
      for (const p of printed) {
        const i = unmatched.findIndex((r) => runOf(r) === p.run && close(p.value, r.value));
        if (i < 0) errors.push(`${where}: printed value ${p.value} (${p.run}) is not a JSON row's value`);
        else unmatched.splice(i, 1);
      }
      if (unmatched.length) errors.push(`${where}: ${unmatched.length} JSON value(s) not printed`);
      const checks: [string, number][] = [
        ["median", med(values)],
        ["min", Math.min(...values)],
        ["max", Math.max(...values)],
      ];
      for (const [name, want] of checks) {
        if (!close(num(get(name)), want)) errors.push(`${where}: ${name} ${get(name)} ≠ ${want}`);
      }
      if (values.length > 1) {
        const spread = (Math.max(...values) - Math.min(...values)) / Math.abs(med(values));
        const printedSpread = Number(get("spread").replace(" %", "")) / 100;
        if (Math.abs(printedSpread - spread) > 0.0005 + 1e-9) {
          errors.push(`${where}: spread ${get("spread")} ≠ ${(100 * spread).toFixed(2)} %`);
        }
      }
    }
    const missing = rows.filter((r) => !used.has(r));
    if (missing.length) errors.push(`suite ${suite}: ${missing.length} JSON row(s) appear in no table line`);
  }

  // Roofline lines: achieved rates = counted work / median time of the matching rows.
  const roof = sections.get("Roofline notes")?.find((t) => t.header.includes("TFLOP/s"));
  for (const c of roof?.lines ?? []) {
    const h = roof!.header;
    const get = (name: string) => c[h.indexOf(name)];
    const rows = (suites.get(get("suite")) ?? []).filter((r) =>
      r.metric === get("metric") && r.gpu === get("gpu") && String(r.context ?? "") === get("context") &&
      implOf(r) === get("impl") && detailsFit(r, get("details"))
    );
    const where = `roofline line "${c.slice(0, 5).join(" | ")}"`;
    if (rows.length === 0) {
      errors.push(`${where}: no JSON row matches`);
      continue;
    }
    const t = med(rows.map((r) => r.timeMs ?? r.value));
    if (!close(num(get("median time (ms)")), t)) {
      errors.push(`${where}: median time ${get("median time (ms)")} ≠ ${t}`);
    }
    const r0 = rows[0];
    if (r0.flops !== undefined && !close(num(get("TFLOP/s")), r0.flops / (t * 1e-3) / 1e12)) {
      errors.push(`${where}: TFLOP/s ${get("TFLOP/s")} ≠ ${r0.flops / (t * 1e-3) / 1e12}`);
    }
    if (r0.bytes !== undefined && !close(num(get("TB/s")), r0.bytes / (t * 1e-3) / 1e12)) {
      errors.push(`${where}: TB/s ${get("TB/s")} ≠ ${r0.bytes / (t * 1e-3) / 1e12}`);
    }
  }
  return errors;
};
