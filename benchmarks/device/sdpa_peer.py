"""PyTorch SDPA peer for the SALE benchmark: causal bf16 attention with the Llama-3.1-8B head layout.

Runs torch.nn.functional.scaled_dot_product_attention with the FLASH_ATTENTION and CUDNN_ATTENTION backends
(each alone, via torch.nn.attention.sdpa_kernel) on q [1, 32, S, 128], k/v [1, 8, S, 128] (GQA through
enable_gqa=True, or K/V repeated to 32 heads when a backend refuses GQA), causal, for each context S.
Times with CUDA events: 2 warm-ups, then the median of --iters runs. Prints one JSON array of rows
({metric: "latency_ms", impl, context, value, unit, ...}) to stdout, or writes it to --out.

Usage: python3 benchmarks/device/sdpa_peer.py --contexts 8192,16384 [--iters 5] [--decode | --queries N]
[--out rows.json]
"""

import argparse
import json
import statistics
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", default="8192,16384,32768,65536,131072")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--out", default="")
    ap.add_argument("--decode", action="store_true",
                    help="one query row against S keys (a decode step, not causal): metric decode_latency_ms")
    ap.add_argument("--queries", type=int, default=0,
                    help="N query rows after S - N keys (a question or prefill chunk on a KV cache), not masked: "
                         "the N x N triangle (N/(2S) of the work) is attended too; metric chunk_latency_ms")
    a = ap.parse_args()
    if a.queries > 0 and a.decode:
        print("sdpa_peer: --queries and --decode exclude each other", file=sys.stderr)
        return 2
    rows = []
    try:
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel
        import torch.nn.functional as F
    except Exception as e:  # no torch: report and leave the rows empty
        print(f"sdpa_peer: torch unavailable: {e}", file=sys.stderr)
        emit(rows, a.out)
        return 0
    if not torch.cuda.is_available():
        print("sdpa_peer: no CUDA device", file=sys.stderr)
        emit(rows, a.out)
        return 0
    dev = torch.device("cuda")
    gpu = torch.cuda.get_device_name(0)
    backends = [("sdpa-flash", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION)]
    for s in [int(x) for x in a.contexts.split(",") if x]:
        g = torch.Generator(device=dev).manual_seed(s)
        rows_q = 1 if a.decode else (a.queries if a.queries > 0 else s)
        causal = not a.decode and a.queries == 0
        q = torch.randn(1, a.heads, rows_q, a.dim, device=dev, dtype=torch.bfloat16, generator=g)
        k = torch.randn(1, a.kv_heads, s, a.dim, device=dev, dtype=torch.bfloat16, generator=g)
        v = torch.randn(1, a.kv_heads, s, a.dim, device=dev, dtype=torch.bfloat16, generator=g)
        rep = a.heads // a.kv_heads
        for name, be in backends:
            note = "enable_gqa"

            def call_gqa():
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)

            kr = vr = None

            def call_rep():
                return F.scaled_dot_product_attention(q, kr, vr, is_causal=causal)

            fn = call_gqa
            try:
                with sdpa_kernel(be):
                    fn()
            except Exception:
                kr = k.repeat_interleave(rep, dim=1)
                vr = v.repeat_interleave(rep, dim=1)
                fn = call_rep
                note = "kv repeated to all heads"
                try:
                    with sdpa_kernel(be):
                        fn()
                except Exception as e:
                    print(f"sdpa_peer: {name} unavailable at {s}: {e}", file=sys.stderr)
                    continue
            times = []
            with sdpa_kernel(be):
                for _ in range(2):
                    fn()
                torch.cuda.synchronize()
                for _ in range(a.iters):
                    e0 = torch.cuda.Event(enable_timing=True)
                    e1 = torch.cuda.Event(enable_timing=True)
                    e0.record()
                    fn()
                    e1.record()
                    torch.cuda.synchronize()
                    times.append(e0.elapsed_time(e1))
            ms = statistics.median(times)
            flops = 4 * a.heads * a.dim * s * (rows_q if not causal else (s + 1) / 2)
            metric = "decode_latency_ms" if a.decode else "chunk_latency_ms" if a.queries > 0 else "latency_ms"
            rows.append({
                "metric": metric, "impl": name, "context": s, "value": ms, "unit": "ms",
                "gpu": gpu, "backend": f"pytorch {torch.__version__} cuda", "dtype": "bf16",
                "tflops": flops / ms / 1e9, "note": note,
            })
            print(f"sdpa_peer: {name} S={s}: {ms:.3f} ms ({flops / ms / 1e9:.1f} TFLOP/s, {note})", file=sys.stderr)
            kr = vr = None
        del q, k, v
        torch.cuda.empty_cache()
    emit(rows, a.out)
    return 0


def emit(rows, out):
    text = json.dumps(rows, indent=1)
    if out:
        with open(out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    sys.exit(main())
