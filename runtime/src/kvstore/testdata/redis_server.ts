/**
 * Test helper (Deno and Bun): start Debian's `redis-server` (installed by `scripts/setup.sh`, step 2) on a
 * free loopback port in a temporary folder, run a function against it, then stop it and remove the folder,
 * whether the function passed or threw. A process exit also kills a server still running.
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createConnection, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import process from "node:process";

/** The `redis-server` binary: on PATH, else Debian's `/usr/bin/redis-server`; undefined when absent. */
export const redisServerPath = (): string | undefined => {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/bin", "/usr/sbin", "/usr/local/bin"];
  for (const d of dirs) {
    if (d && existsSync(join(d, "redis-server"))) return join(d, "redis-server");
  }
  return undefined;
};

/** Why the Redis tests cannot run here, or undefined when they can. */
export const redisSkipReason: string | undefined = redisServerPath() === undefined
  ? "redis-server is not installed (not on PATH, not /usr/bin/redis-server); scripts/setup.sh installs " +
    "Debian's redis-server in step 2 when run as root (or: apt-get install redis-server)"
  : undefined;

/** A free TCP port on 127.0.0.1 (the kernel's choice; the listener is closed before returning). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s: Server = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a !== null ? a.port : 0;
      s.close(() => resolve(port));
    });
  });

const canConnect = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const c = createConnection({ host: "127.0.0.1", port });
    const done = (ok: boolean) => {
      c.removeAllListeners();
      c.destroy();
      resolve(ok);
    };
    c.once("connect", () => done(true));
    c.once("error", () => done(false));
  });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const exited = (p: ChildProcess): Promise<void> =>
  p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => p.once("exit", () => r()));

/** Stop a server: SIGTERM, then SIGKILL after 5 s; resolves once it has exited. */
const stop = async (p: ChildProcess): Promise<void> => {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = exited(p);
  p.kill("SIGTERM");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), 5000));
  if (await Promise.race([gone, late]) === "late") {
    p.kill("SIGKILL");
    await gone;
  }
  clearTimeout(timer);
};

/** A running test server. */
export interface RedisServer {
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  /** Its port. */
  readonly port: number;
  /** Its log so far. */
  readonly log: () => string;
}

/**
 * Run `fn` against a fresh redis-server (no persistence, loopback only), then stop it and delete its folder,
 * also when `fn` throws. `extra` adds server arguments (e.g. `["--proto-max-bulk-len", "1mb"]`).
 */
export const withRedisServer = async <A>(
  fn: (s: RedisServer) => Promise<A>,
  extra: string[] = [],
): Promise<A> => {
  const bin = redisServerPath();
  if (!bin) throw new Error(redisSkipReason);
  const dir = mkdtempSync(join(tmpdir(), "longctx-redis-"));
  let logFile = join(dir, "redis-0.log");
  const log = () => existsSync(logFile) ? readFileSync(logFile, "utf8") : "";
  let child: ChildProcess | undefined;
  const onExit = () => child?.kill("SIGKILL");
  process.on("exit", onExit);
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      const port = await freePort();
      logFile = join(dir, `redis-${attempt}.log`);
      const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--logfile", logFile];
      args.push("--save", "", "--appendonly", "no", "--daemonize", "no", ...extra);
      const p = spawn(bin, args, { stdio: "ignore" });
      child = p;
      const t0 = Date.now();
      while (Date.now() - t0 < 10_000) {
        if (p.exitCode !== null || p.signalCode !== null) break;
        if (await canConnect(port)) {
          return await fn({ url: `redis://127.0.0.1:${port}`, port, log });
        }
        await sleep(20);
      }
      await stop(p);
      if (!/already in use/i.test(log())) {
        throw new Error(`redis-server did not start on port ${port}:\n${log().slice(-2000)}`);
      }
    }
    throw new Error("redis-server found no free port in 5 attempts");
  } finally {
    if (child) await stop(child);
    process.off("exit", onExit);
    rmSync(dir, { recursive: true, force: true });
  }
};
