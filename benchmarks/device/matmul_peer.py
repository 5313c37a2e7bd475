"""cuBLAS peer for the subgroup-matrix matmul benchmark: torch.matmul of two [N, N] fp16 matrices (fp32
accumulation inside cuBLAS, fp16 output), timed with CUDA events: 3 warm-ups, then the median of --iters
launches. Prints one JSON array of rows ({metric, value, unit, ...}) to stdout, or writes it to --out.

Usage: python3 benchmarks/device/matmul_peer.py --size 8192 [--iters 20] [--out rows.json]
"""

import argparse
import json
import statistics
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    rows = []
    try:
        import torch
    except Exception as e:
        print(f"matmul_peer: torch unavailable: {e}", file=sys.stderr)
        return emit(rows, a.out)
    if not torch.cuda.is_available():
        print("matmul_peer: no CUDA device", file=sys.stderr)
        return emit(rows, a.out)
    n = a.size
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(n, n, device="cuda", dtype=torch.float16, generator=g)
    y = torch.randn(n, n, device="cuda", dtype=torch.float16, generator=g)
    for _ in range(3):
        torch.matmul(x, y)
    torch.cuda.synchronize()
    times = []
    for _ in range(a.iters):
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        e0.record()
        torch.matmul(x, y)
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1))
    ms = statistics.median(times)
    tflops = 2 * n**3 / ms / 1e9
    rows.append({
        "metric": "matmul_f16_tensor_tflops", "value": round(tflops, 1), "unit": "TFLOP/s",
        "backend": f"pytorch {torch.__version__} cuda", "impl": "cublas", "gpu": torch.cuda.get_device_name(0),
        "op": "matmul", "dtype": "f16", "flops": 2 * n**3, "timeMs": ms,
        "params": {"M": n, "N": n, "K": n, "iters": a.iters},
    })
    print(f"matmul_peer: cuBLAS fp16 {n}^3: {ms:.3f} ms, {tflops:.1f} TFLOP/s", file=sys.stderr)
    return emit(rows, a.out)


def emit(rows, out):
    text = json.dumps(rows, indent=1)
    if out:
        with open(out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
