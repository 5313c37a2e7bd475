/**
 * Merge the kernels of one `calibrate` output into a device profile of the same device (as the H200 profile's
 * `hip.mask.f16` / `dense.indexAttn.f16` run was): each kernel of `--from` replaces the entry of the same
 * operator and phase in `--into` (else is appended), and `--into`'s `merged` list records the run (its
 * operators, phase, date, commit and command). The result is validated as a profile before it is written.
 *
 *   deno run -A plans/bench/merge_profile.ts --into plans/profiles/h200.json --from /tmp/h200-decode.json
 *
 * `--out` (default `--into`) is where it goes. Refuses two profiles of different adapters or backends.
 * @module
 */
import { parseArgs } from "node:util";
import { readFileSync, writeFileSync } from "node:fs";
import { Effect } from "effect";
import { decodeProfile, type DeviceProfile, fitKey } from "@longctx/plans";

const { values: a } = parseArgs({
  args: Deno.args,
  options: { into: { type: "string" }, from: { type: "string" }, out: { type: "string" } },
});
if (!a.into || !a.from) {
  console.error("usage: --into <profile.json> --from <calibrate output.json> [--out <profile.json>]");
  Deno.exit(2);
}
type Doc = DeviceProfile & { merged?: unknown[] };
const read = (path: string): Doc => {
  const doc = JSON.parse(readFileSync(path, "utf8")) as Doc;
  Effect.runSync(decodeProfile(doc)); // a profile, or a typed error naming what is wrong
  return doc;
};
const into = read(a.into), from = read(a.from);
if (into.device.adapter !== from.device.adapter || into.device.backend !== from.device.backend) {
  console.error(
    `${a.from} was measured on ${from.device.adapter} (${from.device.backend}), ${a.into} on ` +
      `${into.device.adapter} (${into.device.backend}): merge only runs of one device`,
  );
  Deno.exit(1);
}
const key = (k: DeviceProfile["kernels"][number]) => fitKey(k.operator, k.phase);
const incoming = new Map(from.kernels.map((k) => [key(k), k]));
const kernels = [...into.kernels.map((k) => incoming.get(key(k)) ?? k)];
for (const k of from.kernels) if (!into.kernels.some((x) => key(x) === key(k))) kernels.push(k);
const phases = [...new Set(from.kernels.map((k) => k.phase ?? "prefill"))];
const out: Doc = {
  ...into,
  kernels,
  merged: [...(into.merged ?? []), {
    operators: from.kernels.map((k) => k.operator),
    ...(phases.length === 1 && phases[0] === "decode" ? { phase: "decode" } : {}),
    date: from.date,
    commit: from.commit,
    command: from.command,
  }],
};
Effect.runSync(decodeProfile(out));
writeFileSync(a.out ?? a.into, JSON.stringify(out, null, 2) + "\n");
console.error(
  `wrote ${a.out ?? a.into}: ${from.kernels.length} kernels from ${a.from} ` +
    `(${from.kernels.filter((k) => into.kernels.some((x) => key(x) === key(k))).length} replaced)`,
);
