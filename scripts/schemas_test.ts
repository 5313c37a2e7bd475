/**
 * The JSON Schema files in docs/schemas/ are what `scripts/schemas.ts` generates from the Effect Schemas (a stale
 * file fails here), and the documents the repository ships decode with those schemas.
 */
import { readFileSync } from "node:fs";
import { Schema } from "effect";
import { DensityTable, DeviceProfile } from "@longctx/plans";
import { assert, test } from "../tests/harness.ts";
import { schemaFiles } from "./schemas.ts";

const root = new URL("../", import.meta.url).pathname;

test("docs/schemas: every file is up to date with its Effect Schema", () => {
  const files = schemaFiles();
  assert.equal(files.length, 5);
  for (const f of files) {
    const onDisk = readFileSync(root + f.file, "utf8");
    assert.equal(onDisk, f.text, `${f.file} is stale: run bash scripts/deno.sh run -A scripts/schemas.ts`);
    const json = JSON.parse(onDisk);
    assert.equal(json.$schema, "https://json-schema.org/draft/2020-12/schema");
    assert.ok(json.required.includes("version"), `${f.file}: documents carry a version`);
  }
});

test("docs/schemas: the shipped profiles and density tables decode with their schemas", () => {
  for (const name of ["h200", "cpu", "lavapipe"]) {
    const p = Schema.decodeUnknownSync(DeviceProfile)(
      JSON.parse(readFileSync(`${root}plans/profiles/${name}.json`, "utf8")),
    );
    assert.equal(p.version, 1);
  }
  const t = Schema.decodeUnknownSync(DensityTable)(
    JSON.parse(readFileSync(`${root}plans/profiles/density-smollm2-135m.json`, "utf8")),
  );
  assert.ok(t.samples.length > 0);
});
