/**
 * Test helper (Deno): the writer that `kvstore_test.ts` kills. Opens the store at `<url>` (its backend
 * directly, below the envelope), then writes `<mib>` MiB values under `<key>` forever, value `i` made from
 * seed `i`. Before each write it prints `write <i> <sha256 of the value>`, after it `done <i> <ms>`.
 *
 * Run: deno run -A kill_writer.ts <url> <key> <mib>
 * @module
 */
import { createHash } from "node:crypto";
import { encodeKvEntry } from "../envelope.ts";
import { openFileBackend } from "../file.ts";
import { openRedisBackend } from "../redis.ts";
import { openSqliteBackend } from "../sqlite.ts";
import { parseKvStoreUrl } from "../store.ts";
import { patternBytes } from "./patterns.ts";

const [url, key, mib] = Deno.args;
const loc = parseKvStoreUrl(url);
const impl = loc.backend === "file"
  ? await openFileBackend(loc.path, {})
  : loc.backend === "sqlite"
  ? await openSqliteBackend(loc.path)
  : await openRedisBackend(loc, {});
for (let i = 1;; i++) {
  const value = patternBytes(Number(mib) * 2 ** 20, i);
  const entry = encodeKvEntry(key, value);
  console.log(`write ${i} ${createHash("sha256").update(value).digest("hex")}`);
  const t0 = performance.now();
  await impl.writeEntry(key, entry);
  console.log(`done ${i} ${Math.round(performance.now() - t0)}`);
}
