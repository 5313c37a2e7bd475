/**
 * CacheGen's GPU decoder (`cachegen.decode`, ops/cachegen/decode_gpu.ts) on wgpu (lavapipe here) against the
 * host decoder, bit for bit: real containers of structured KV at levels 1–3, several layers with different
 * bins, odd token counts, slices below, at and past 256, precisions 12/14/16; degenerate histograms (one symbol —
 * the lowest, the middle, the highest valid one and the alphabet's last, whose upper bound is 2¹⁶ — and uniform),
 * never-seen symbols (16 bits each) and junk streams (random bytes and lengths under real CDFs: every
 * arithmetic path of the coder). `decodeKvOnDevice` equals `decodeKv` and writes into a larger cache at a
 * position without touching the rest; a corrupt, truncated, foreign or stale container is refused with a typed
 * `CacheGenError` before any device call (counted); a checksummed container with out-of-range symbols is
 * `corrupt` after the decode, and the caller's cache is left as it was.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect, Exit } from "effect";
import { type Backend, graph, type HostTensor, hostTensor, run } from "@longctx/graph";
import { cachegen, kernels } from "@longctx/ops";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { openWgpuBackend } from "./gpu_helper.ts";
import { rng } from "./ref64.ts";

const wgpu: Backend | undefined = await openWgpuBackend();
const PROV = { model: "test-model", tokensSha256: "ab".repeat(32) };

type Inputs = ReturnType<typeof cachegen.deviceInputs>;

/** `cachegen.decode` on `backend` as a one-node graph. */
const onBackend = async (backend: Backend, p: cachegen.CacheGenDecodeParams, inputs: Inputs) => {
  const g = graph("t:cachegen.decode");
  const node = g.add(cachegen.decode, p, {
    cdf: g.input("cdf", cachegen.decode.inputs.cdf),
    scales: g.input("scales", cachegen.decode.inputs.scales),
    ends: g.input("ends", cachegen.decode.inputs.ends),
    streams: g.input("streams", cachegen.decode.inputs.streams),
  });
  g.output("kv", node.kv);
  g.output("invalid", node.invalid);
  const built = await Effect.runPromise(g.build());
  const copy = Object.fromEntries(
    Object.entries(inputs).map((
      [k, t],
    ) => [k, hostTensor(t.desc.dtype, t.desc.dims, t.desc.shape, t.data.slice() as never)]),
  );
  const r = await Effect.runPromise(run(built, backend, copy as never));
  return {
    kv: r.outputs.kv.data as Float32Array,
    invalid: r.outputs.invalid.data as Uint32Array,
    path: r.report.nodes[0]?.path,
  };
};

const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);

/** Elements whose bits differ (so −0 ≠ +0 and NaN payloads count), and the first of them. */
const differ = (a: Float32Array, b: Float32Array): { n: number; first: number } => {
  assert.equal(a.length, b.length, "lengths");
  const x = bits(a), y = bits(b);
  let n = 0, first = -1;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) (n++, first < 0 && (first = i));
  return { n, first };
};

/** The host decoder's K/V (`decompressKv`) as one `[rows, kvHeads, tokens, headDim]` tensor. */
const hostKv = async (c: cachegen.CompressedKv): Promise<Float32Array> => {
  const { k, v } = await Effect.runPromise(cachegen.decompressKv(c));
  const slab = k[0].length, out = new Float32Array(2 * k.length * slab);
  [...k, ...v].forEach((x, r) => out.set(x, r * slab));
  return out;
};

/** GPU vs the operator's CPU path bit for bit (kv and invalid); returns the CPU result. */
const checkGpu = async (what: string, p: cachegen.CacheGenDecodeParams, ins: Inputs) => {
  const cpu = cachegen.decode.cpu(p, ins);
  const gpu = await onBackend(wgpu!, p, ins);
  assert.equal(gpu.path, "gpu", `${what}: the node ran its gpu lowering`);
  const d = differ(gpu.kv, cpu.kv.data);
  assert.equal(
    d.n,
    0,
    `${what}: ${d.n} outputs differ from the host decoder's, first at ${d.first}: gpu ${gpu.kv[d.first]}, ` +
      `cpu ${cpu.kv.data[d.first]}`,
  );
  assert.deepEqual([...gpu.invalid], [...cpu.invalid.data], `${what}: invalid counts`);
  return cpu;
};

const geometryParams = (level: number, slice: number, precision = 16) =>
  cachegen.cachegenParams({
    level,
    slice,
    precision,
    keyFirstLayers: 1,
    keySecondLayers: 2,
    valueFirstLayers: 1,
  });

/**
 * A compressed chunk from a symbol tensor `u8 [rows, tokens, C]` directly (degenerate histograms): CDFs counted
 * over `histogramOf` (default the symbols), scales positive fp16 from a seed.
 */
const fromSymbols = (
  symbols: Uint8Array,
  dims: cachegen.KvDims,
  p: cachegen.CacheGenParams,
  seed: number,
  histogramOf: Uint8Array = symbols,
): cachegen.CompressedKv => {
  const { layers: L, kvHeads: H, headDim: d, tokens: N } = dims, C = H * d, rows = 2 * L;
  const bins = cachegen.layerBins(p, L), lp = Math.max(...bins.key, ...bins.value) + 1;
  const cdf: cachegen.CdfTable = { data: new Uint16Array(rows * C * lp), lp, precision: p.precision };
  for (let r = 0; r < rows; r++) {
    cachegen.rowCdf(histogramOf, r * N * C, N, C, lp, p.precision, cdf.data, r * C * lp);
  }
  const coded = cachegen.encodeSymbols(symbols, cdf, { rows, tokens: N, channels: C, slice: p.slice });
  const r = rng(seed);
  const scales = Uint16Array.from(
    { length: rows * N },
    (_, i) => i % 97 === 5 ? 0 : i % 89 === 7 ? 0x0123 : kernels.floatToHalf(0.01 + 20 * r()),
  );
  return {
    dims,
    params: p,
    keyBins: bins.key,
    valueBins: bins.value,
    cdf,
    scales,
    lengths: coded.lengths,
    streams: coded.bytes,
  };
};

test(
  "cachegen.decode on wgpu: real containers (levels 1–3, odd sizes, slices, precisions) = the host decoder, bit for bit",
  async () => {
    // [layers, kvHeads, headDim, tokens, level, slice, precision]
    const cases: [number, number, number, number, number, number, number][] = [
      [2, 2, 64, 300, 2, 256, 16],
      [3, 1, 16, 17, 1, 5, 16],
      [2, 2, 32, 257, 3, 100, 16],
      [4, 1, 8, 256, 1, 256, 12],
      [2, 3, 8, 1, 3, 256, 14],
      [3, 2, 8, 513, 2, 300, 16],
    ];
    for (const [L, H, d, N, level, slice, precision] of cases) {
      const dims = { layers: L, kvHeads: H, headDim: d, tokens: N };
      const p = geometryParams(level, slice, precision);
      const { k, v } = cachegen.structuredKv(dims, 5 + N);
      const c = await Effect.runPromise(cachegen.compressKv(k, v, dims, p));
      const what = `L${L} H${H} d${d} N${N} level ${level} slice ${slice} p${precision}`;
      const cpu = await checkGpu(what, cachegen.cachegenDecodeParams(p), cachegen.deviceInputs(c));
      const d2 = differ(cpu.kv.data, await hostKv(c));
      assert.equal(d2.n, 0, `${what}: the CPU path = decompressKv`);
      assert.ok(cpu.invalid.data.every((x) => x === 0), `${what}: no invalid symbols`);
    }
  },
  { ignore: wgpu === undefined },
);

test("cachegen.decode on wgpu: degenerate histograms, never-seen symbols, the workgroup sizes", async () => {
  const dims = { layers: 2, kvHeads: 2, headDim: 16, tokens: 259 }, C = 32, rows = 4, N = dims.tokens;
  const p = geometryParams(2, 256);
  const bins = cachegen.layerBins(p, 2), all = [...bins.key, ...bins.value];
  const lp = Math.max(...all) + 1;
  const make = (f: (r: number, t: number, c: number) => number) => {
    const s = new Uint8Array(rows * N * C);
    for (let r = 0; r < rows; r++) {
      for (let t = 0; t < N; t++) for (let c = 0; c < C; c++) s[(r * N + t) * C + c] = f(r, t, c);
    }
    return s;
  };
  const top = (r: number) => 2 * cachegen.maxOf(all[r]);
  const kinds: Record<string, Uint8Array> = {
    "one symbol: 0": make(() => 0),
    "one symbol: MAX": make((r) => top(r) / 2),
    "one symbol: 2·MAX": make((r) => top(r)),
    "uniform": make((r, t, c) => (t + c) % (top(r) + 1)),
    "one symbol per channel": make((r, _t, c) => c % (top(r) + 1)),
  };
  for (const [name, s] of Object.entries(kinds)) {
    const c = fromSymbols(s, dims, p, 9);
    const cpu = await checkGpu(name, cachegen.cachegenDecodeParams(p), cachegen.deviceInputs(c));
    assert.equal(differ(cpu.kv.data, await hostKv(c)).n, 0, `${name}: = decompressKv`);
  }
  // the alphabet's last symbol (upper bound 2^16): decodes exactly, counted as invalid in every row (above 2·MAX)
  const last = fromSymbols(make(() => lp - 2), dims, p, 10);
  const cpu = await checkGpu(
    "one symbol: lp − 2",
    cachegen.cachegenDecodeParams(p),
    cachegen.deviceInputs(last),
  );
  assert.deepEqual([...cpu.invalid.data], [N * C, N * C, N * C, N * C]);
  // never-seen symbols: CDFs from one symbol, streams of others (≈ 16 bits each), every workgroup size
  const seen = make(() => 3), unseen = make((r, t, c) => (t * 7 + c * 3 + r) % (top(r) + 1));
  const c = fromSymbols(unseen, dims, p, 11, seen);
  for (const wg of [32, 64, 128, 256]) {
    const dp = cachegen.cachegenDecodeParams({ ...p, workgroupSize: wg });
    const out = await checkGpu(`never-seen symbols, workgroup ${wg}`, dp, cachegen.deviceInputs(c));
    assert.equal(differ(out.kv.data, await hostKv(c)).n, 0);
  }
}, { ignore: wgpu === undefined });

test(
  "cachegen.decode on wgpu: junk streams under real CDFs decode to the host decoder's junk, in bounds",
  async () => {
    for (const [seed, N, slice, precision] of [[1, 70, 32, 16], [2, 300, 256, 16], [3, 41, 7, 12]]) {
      const dims = { layers: 2, kvHeads: 1, headDim: 24, tokens: N }, C = 24;
      const p = geometryParams(1 + (seed % 3), slice, precision);
      const { k, v } = cachegen.structuredKv(dims, seed);
      const real = await Effect.runPromise(cachegen.compressKv(k, v, dims, p));
      const r = rng(50 + seed), streams = real.lengths.length;
      const lengths = Uint16Array.from({ length: streams }, () => Math.floor(r() * 40));
      const total = lengths.reduce((a, b) => a + b, 0);
      const bytes = Uint8Array.from({ length: total }, () => Math.floor(r() * 256));
      const junk = { ...real, lengths, streams: bytes };
      const dp = cachegen.cachegenDecodeParams(p);
      const cpu = await checkGpu(`junk ${seed}`, dp, cachegen.deviceInputs(junk));
      assert.equal(cpu.kv.data.length, 4 * N * C);
      // junk ends too (past the words, decreasing): zeros read past every end on both paths
      const ins = cachegen.deviceInputs(junk);
      const ends = Uint32Array.from(ins.ends.data, (e, i) => (i % 5 === 1 ? e + 1000 : i % 7 === 3 ? 0 : e));
      await checkGpu(
        `junk ends ${seed}`,
        dp,
        { ...ins, ends: hostTensor("u32", ins.ends.desc.dims, ins.ends.desc.shape, ends) } as Inputs,
      );
    }
  },
  { ignore: wgpu === undefined },
);

test("cachegen.decode: shape errors name the port; the example call is a real container", async () => {
  const dims = { layers: 2, kvHeads: 2, headDim: 8, tokens: 20 };
  const p = geometryParams(2, 8);
  const { k, v } = cachegen.structuredKv(dims, 1);
  const ins = cachegen.deviceInputs(await Effect.runPromise(cachegen.compressKv(k, v, dims, p)));
  const descs = Object.fromEntries(Object.entries(ins).map(([n, t]) => [n, t.desc]));
  const infer = (d: Record<string, unknown>, q: Partial<cachegen.CacheGenDecodeParams> = {}) =>
    Effect.runSyncExit(cachegen.decode.infer(cachegen.cachegenDecodeParams({ ...p, ...q }), d as never));
  const ok = infer(descs);
  assert.ok(
    Exit.isSuccess(ok) && ok.value.kv.shape.join() === "4,2,20,8" && ok.value.invalid.shape.join() === "4",
  );
  for (
    const [what, d, q, port] of [
      ["another slice", descs, { slice: 16 }, "ends"],
      ["another level's lp", descs, { level: 1 }, "cdf"],
      ["odd rows", { ...descs, scales: { ...descs.scales, shape: [3, 20] } }, {}, "ends"],
      ["no stream words", { ...descs, streams: { ...descs.streams, shape: [0] } }, {}, "streams"],
    ] as const
  ) {
    const r = infer(d as Record<string, unknown>, q);
    assert.ok(Exit.isFailure(r), what);
    if (Exit.isFailure(r)) assert.match(String(r.cause), new RegExp(`${port}:`), what);
  }
  const ex = cachegen.decode.example!.inputs!({ kvRows: 4, kvHeads: 2, headDim: 16, tokens: 33 });
  const exDescs = Object.fromEntries(Object.entries(ex).map(([n, t]) => [n, (t as HostTensor).desc]));
  assert.ok(
    Exit.isSuccess(
      infer(exDescs, { slice: 256, level: 2, keyFirstLayers: 10, keySecondLayers: 20, valueFirstLayers: 2 }),
    ),
  );
  const out = cachegen.decode.cpu(cachegen.cachegenDecodeParams(), ex as Inputs);
  assert.ok(out.invalid.data.every((x) => x === 0) && out.kv.data.some((x) => x !== 0));
});

/** A backend that counts its device calls (allocate, upload, download, compile, dispatch). */
const counting = (b: Backend) => {
  const calls: string[] = [];
  const watched = new Set(["allocate", "upload", "download", "compile", "dispatch"]);
  const proxy = new Proxy(b, {
    get(t, k, r) {
      const v = Reflect.get(t, k, r);
      if (typeof k === "string" && watched.has(k) && typeof v === "function") {
        return (...a: unknown[]) => (calls.push(k), (v as (...x: unknown[]) => unknown).apply(t, a));
      }
      return typeof v === "function" ? v.bind(t) : v;
    },
  });
  return { backend: proxy as Backend, calls };
};

const failure = async <A>(e: Effect.Effect<A, unknown>) => {
  const r = await Effect.runPromise(Effect.result(e));
  assert.equal(r._tag, "Failure", "expected a failure");
  return (r as { failure: { _tag: string; reason?: string } }).failure;
};

const readF32 = async (b: Backend, buf: Parameters<Backend["download"]>[0]) =>
  new Float32Array((await Effect.runPromise(b.download(buf))).slice().buffer);

test("decodeKvOnDevice: = decodeKv per layer; into a larger cache at a position; on wgpu and the cpu backend", async () => {
  const dims = { layers: 3, kvHeads: 2, headDim: 16, tokens: 37 },
    { layers: L, kvHeads: H, headDim: d } = dims;
  const p = geometryParams(2, 16);
  const { k, v } = cachegen.structuredKv(dims, 21);
  const bytes = await Effect.runPromise(cachegen.encodeKv(k, v, dims, p, PROV));
  const want = await Effect.runPromise(cachegen.decodeKv(bytes, PROV));
  const cpuBackend = await Effect.runPromise(makeCpuBackend());
  try {
    for (const b of [...(wgpu ? [wgpu] : []), cpuBackend]) {
      const got = await Effect.runPromise(cachegen.decodeKvOnDevice(b, bytes, { expect: PROV }));
      assert.equal(got.capacity, 37);
      for (let l = 0; l < L; l++) {
        assert.equal(differ(await readF32(b, got.k[l]), want.k[l]).n, 0, `${b.kind} K layer ${l}`);
        assert.equal(differ(await readF32(b, got.v[l]), want.v[l]).n, 0, `${b.kind} V layer ${l}`);
      }
      got.release();
      got.release();
      // into a cache of 100 tokens at position 41: the rest keeps its contents
      const cap = 100, pos = 41, fill = -7.5;
      const cache = {
        k: [] as Parameters<Backend["release"]>[0][],
        v: [] as Parameters<Backend["release"]>[0][],
      };
      for (let l = 0; l < L; l++) {
        for (const list of [cache.k, cache.v]) {
          const buf = await Effect.runPromise(b.allocate(H * cap * d * 4, "cache"));
          await Effect.runPromise(b.upload(buf, new Float32Array(H * cap * d).fill(fill)));
          list.push(buf);
        }
      }
      const into = await Effect.runPromise(
        cachegen.decodeKvOnDevice(b, bytes, { into: { ...cache, capacity: cap, pos } }),
      );
      assert.equal(into.k[1], cache.k[1]);
      for (let l = 0; l < L; l++) {
        for (const [buf, x] of [[cache.k[l], want.k[l]], [cache.v[l], want.v[l]]] as const) {
          const y = await readF32(b, buf);
          for (let h = 0; h < H; h++) {
            for (let t = 0; t < cap; t++) {
              const row = y.subarray((h * cap + t) * d, (h * cap + t + 1) * d);
              if (t >= pos && t < pos + 37) {
                const src = x.subarray((h * 37 + t - pos) * d, (h * 37 + t - pos + 1) * d);
                assert.equal(differ(row, src).n, 0, `${b.kind} layer ${l} head ${h} token ${t}`);
              } else assert.ok(row.every((z) => z === fill), `${b.kind} untouched token ${t}`);
            }
          }
        }
      }
      into.release();
      // a chunk that does not fit, or the wrong layer count: bad-input, before any decoding
      const e1 = await failure(
        cachegen.decodeKvOnDevice(b, bytes, { into: { ...cache, capacity: cap, pos: 70 } }),
      );
      assert.equal(e1.reason, "bad-input");
      const e2 = await failure(
        cachegen.decodeKvOnDevice(b, bytes, {
          into: { k: cache.k.slice(1), v: cache.v, capacity: cap, pos: 0 },
        }),
      );
      assert.equal(e2.reason, "bad-input");
      for (const x of [...cache.k, ...cache.v]) b.release(x);
    }
  } finally {
    await Effect.runPromise(cpuBackend.close());
  }
});

test("decodeKvOnDevice: a corrupt, truncated, foreign or stale container is refused before any device call", async () => {
  const dims = { layers: 2, kvHeads: 1, headDim: 16, tokens: 40 };
  const p = geometryParams(1, 256);
  const { k, v } = cachegen.structuredKv(dims, 4);
  const bytes = await Effect.runPromise(cachegen.encodeKv(k, v, dims, p, PROV));
  const flipped = bytes.slice();
  flipped[Math.floor(bytes.length * 0.7)] ^= 0x10;
  const foreign = bytes.slice();
  foreign[0] = 0x58;
  const cpuBackend = await Effect.runPromise(makeCpuBackend());
  try {
    for (const base of [...(wgpu ? [wgpu] : []), cpuBackend]) {
      const { backend, calls } = counting(base);
      for (
        const [what, b, expect, reason] of [
          ["a flipped bit", flipped, undefined, "checksum"],
          ["cut short", bytes.subarray(0, bytes.length - 100), undefined, "truncated"],
          ["foreign magic", foreign, undefined, "bad-magic"],
          ["another model", bytes, { ...PROV, model: "other" }, "stale"],
          ["other dims", bytes, { ...PROV, dims: { tokens: 41 } }, "stale"],
        ] as const
      ) {
        const e = await failure(cachegen.decodeKvOnDevice(backend, b, expect ? { expect } : {}));
        assert.equal(e._tag, "CacheGenError", what);
        assert.equal(e.reason, reason, what);
        assert.deepEqual(calls, [], `${what}: no device call`);
      }
      // the same backend counts a sound container's calls
      (await Effect.runPromise(cachegen.decodeKvOnDevice(backend, bytes, { expect: PROV }))).release();
      assert.ok(calls.includes("dispatch") && calls.includes("upload"), `${base.kind}: calls counted`);
    }
  } finally {
    await Effect.runPromise(cpuBackend.close());
  }
});

test("decodeKvOnDevice: symbols out of range under a valid checksum are corrupt, and the cache is untouched", async () => {
  const dims = { layers: 2, kvHeads: 1, headDim: 8, tokens: 30 }, N = 30, C = 8;
  const p = geometryParams(2, 256);
  const bins = cachegen.layerBins(p, 2), lp = Math.max(...bins.key, ...bins.value) + 1;
  // row 3 (V of layer 1, 16 bins: 2·MAX = 14) holds symbols up to lp − 2 = 31
  const s = new Uint8Array(4 * N * C);
  for (let i = 0; i < s.length; i++) s[i] = i >= 3 * N * C ? (i % 5 === 0 ? lp - 2 : 3) : 5;
  const c = fromSymbols(s, dims, p, 3);
  const bytes = await Effect.runPromise(cachegen.serializeKv(c, PROV));
  const host = await failure(cachegen.decodeKv(bytes));
  assert.equal(host.reason, "corrupt");
  const cpuBackend = await Effect.runPromise(makeCpuBackend());
  try {
    for (const b of [...(wgpu ? [wgpu] : []), cpuBackend]) {
      const cache = {
        k: [] as Parameters<Backend["release"]>[0][],
        v: [] as Parameters<Backend["release"]>[0][],
      };
      for (let l = 0; l < 2; l++) {
        for (const list of [cache.k, cache.v]) {
          const buf = await Effect.runPromise(b.allocate(N * C * 4, "cache"));
          await Effect.runPromise(b.upload(buf, new Float32Array(N * C).fill(2)));
          list.push(buf);
        }
      }
      const e = await failure(
        cachegen.decodeKvOnDevice(b, bytes, { into: { ...cache, capacity: N, pos: 0 } }),
      );
      assert.equal(e.reason, "corrupt", b.kind);
      assert.match((e as unknown as { message: string }).message, /row 3: 48 decoded symbols above 14/);
      for (const x of [...cache.k, ...cache.v]) {
        assert.ok((await readF32(b, x)).every((z) => z === 2), `${b.kind}: cache untouched`);
        b.release(x);
      }
    }
  } finally {
    await Effect.runPromise(cpuBackend.close());
  }
});

test("cachegen.encode → cachegen.decode as one graph (cpu; wgpu: encode's CPU path, the decode's kernel) equals the host codec; NaN / beyond-fp16 values counted and coded as 0", async () => {
  const cpu = await Effect.runPromise(makeCpuBackend());
  try {
    for (
      const [dims, p, seed] of [
        [{ layers: 2, kvHeads: 2, headDim: 64, tokens: 37 }, { level: 2 }, 1],
        [{ layers: 3, kvHeads: 1, headDim: 32, tokens: 300 }, { level: 3, slice: 100 }, 2],
        [{ layers: 1, kvHeads: 4, headDim: 16, tokens: 257 }, { level: 1, precision: 14 }, 3],
      ] as const
    ) {
      const params = cachegen.cachegenParams(p);
      const { k, v } = cachegen.structuredKv(dims, 40 + seed);
      const rows = 2 * dims.layers, slab = dims.kvHeads * dims.tokens * dims.headDim;
      const kv = new Float32Array(rows * slab);
      [...k, ...v].forEach((x, r) => kv.set(x, r * slab));
      const g = graph("t:cachegen.encode-decode");
      const e = g.add(cachegen.encode, params, { kv: g.input("kv", cachegen.encode.inputs.kv) });
      const d = g.add(cachegen.decode, cachegen.cachegenDecodeParams(params), {
        cdf: e.cdf,
        scales: e.scales,
        ends: e.ends,
        streams: e.streams,
      });
      g.output("kv", d.kv);
      g.output("bad", e.invalid);
      const built = await Effect.runPromise(g.build());
      const want = await hostKv(Effect.runSync(cachegen.compressKv(k, v, dims, params)));
      const input = () => ({
        kv: hostTensor(
          "f32",
          cachegen.encode.inputs.kv.dims,
          [rows, dims.kvHeads, dims.tokens, dims.headDim],
          kv,
        ),
      });
      for (const backend of [cpu, ...(wgpu ? [wgpu] : [])]) {
        const r = await Effect.runPromise(run(built, backend, input() as never));
        const got = r.outputs.kv.data as Float32Array;
        const diff = differ(got, want);
        assert.equal(
          diff.n,
          0,
          `${backend.kind} ${JSON.stringify(dims)}: ${diff.n} values differ, first ${diff.first}`,
        );
        assert.ok((r.outputs.bad.data as Uint32Array).every((x) => x === 0));
      }
    }
    // bad values: counted per row, coded as 0 (the rest of the row as without them)
    const dims = { layers: 1, kvHeads: 1, headDim: 16, tokens: 20 };
    const { k, v } = cachegen.structuredKv(dims, 9);
    const kv = new Float32Array([...k[0], ...v[0]]);
    kv[3] = Number.NaN;
    kv[5] = Infinity;
    kv[320 + 7] = 1e6;
    const out = cachegen.encode.cpu(
      cachegen.cachegenParams(),
      { kv: hostTensor("f32", cachegen.encode.inputs.kv.dims, [2, 1, 20, 16], kv) } as never,
    );
    assert.deepEqual([...(out.invalid.data as Uint32Array)], [2, 1]);
    const dec = cachegen.decode.cpu(cachegen.cachegenDecodeParams(), {
      cdf: out.cdf,
      scales: out.scales,
      ends: out.ends,
      streams: out.streams,
    });
    assert.ok([3, 5, 327].every((j) => dec.kv.data[j] === 0), "bad values decode to 0");
    assert.ok(
      kv.every((x, j) => !Number.isFinite(x) || Math.abs(x) > 65504 || Number.isFinite(dec.kv.data[j])),
    );
  } finally {
    await Effect.runPromise(cpu.close());
  }
});
