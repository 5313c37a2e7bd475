const w = new Worker(new URL("./wk_child.ts", import.meta.url).href, { type: "module" });
const sab = new SharedArrayBuffer(16); const i32 = new Int32Array(sab);
w.postMessage(sab);
const t = performance.now();
const r = Atomics.wait(i32, 0, 0, 5000);
console.log("main wait:", r, i32[0], (performance.now() - t).toFixed(1), "ms");
(w as unknown as { unref?: () => void }).unref?.();
console.log("done main");
