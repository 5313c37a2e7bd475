/**
 * @internal The `file:///abs/dir` backend: one file `<key>.kv` per key. A put writes the envelope to a new
 * temporary file `.tmp-<key>-<pid>-<random>` in the same folder, fsyncs it, renames it over `<key>.kv`
 * (atomic on POSIX) and fsyncs the folder, so a reader finds the old file or the new one, whole. A writer
 * killed before the rename leaves only its temporary file, which a later open removes once it is older than
 * `staleTempMs`.
 * @module
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import type { BackendImpl } from "./backend.ts";
import { ioError, KvStoreError } from "./errors.ts";
import type { KvStoreOptions } from "./store.ts";

const code = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && typeof (e as { code?: unknown }).code === "string"
    ? (e as { code: string }).code
    : undefined;

const hintFor = (e: unknown): string => {
  switch (code(e)) {
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return "give this process write access to the store's folder, or use another folder";
    case "ENOSPC":
    case "EDQUOT":
      return "free disk space, or delete entries of the store";
    case "ENOTDIR":
    case "EEXIST":
      return "the store's path (or a parent) is a file: use a folder path";
    default:
      return "check the store's folder (permissions, free space, the file system)";
  }
};

/** fsync a folder, so a rename in it is durable (ignored where folders cannot be opened or synced). */
const syncDir = async (dir: string): Promise<void> => {
  let fh;
  try {
    fh = await open(dir, "r");
    await fh.sync();
  } catch {
    // Some file systems refuse fsync on a folder; the rename is still atomic there.
  } finally {
    await fh?.close().catch(() => {});
  }
};

/** Open (creating) the folder `dir` as a store. */
export const openFileBackend = async (dir: string, options: KvStoreOptions): Promise<BackendImpl> => {
  try {
    await mkdir(dir, { recursive: true });
    const s = await stat(dir);
    if (!s.isDirectory()) throw Object.assign(new Error(`${dir} is not a folder`), { code: "ENOTDIR" });
  } catch (e) {
    throw ioError(e, "open", `the KV store folder ${dir}`, hintFor(e));
  }
  // Remove temporary files of writers that died long ago (a live writer's is younger than staleTempMs).
  const staleMs = options.staleTempMs ?? 3_600_000;
  try {
    const now = Date.now();
    for (const name of await readdir(dir)) {
      if (!name.startsWith(".tmp-")) continue;
      const p = join(dir, name);
      const s = await stat(p).catch(() => undefined);
      if (s?.isFile() && now - s.mtimeMs > staleMs) await unlink(p).catch(() => {});
    }
  } catch {
    // An unreadable folder fails at the first operation, with its own message.
  }
  const file = (key: string) => join(dir, `${key}.kv`);
  const where = (key: string) => file(key);
  return {
    where,
    mapError: (e, op, key) => ioError(e, op, where(key), hintFor(e)),
    readEntry: async (key) => {
      try {
        const b = await readFile(file(key));
        return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
      } catch (e) {
        if (code(e) === "ENOENT") return undefined;
        if (code(e) === "EISDIR") {
          throw new KvStoreError({
            reason: "corrupt",
            message: `${where(key)} is a folder, not an entry`,
            hint: "remove it; the store keeps one file per key",
          });
        }
        throw e;
      }
    },
    writeEntry: async (key, entry) => {
      const tmp = join(dir, `.tmp-${key}-${process.pid}-${randomBytes(6).toString("hex")}`);
      let renamed = false;
      try {
        const fh = await open(tmp, "wx", 0o644);
        try {
          await fh.writeFile(entry);
          await fh.sync();
        } finally {
          await fh.close();
        }
        await rename(tmp, file(key));
        renamed = true;
        await syncDir(dir);
      } finally {
        if (!renamed) await rm(tmp, { force: true }).catch(() => {});
      }
    },
    remove: async (key) => {
      try {
        await unlink(file(key));
      } catch (e) {
        if (code(e) === "ENOENT") return false;
        throw e;
      }
      await syncDir(dir);
      return true;
    },
    exists: async (key) => {
      try {
        return (await stat(file(key))).isFile();
      } catch (e) {
        if (code(e) === "ENOENT") return false;
        throw e;
      }
    },
    close: () => Promise.resolve(),
  };
};
