"""PyTorch prefill peer for CacheGen's time to first token: the recompute a stored KV cache saves.

A Llama-3.1-8B-shaped forward (hidden 4096, 32 layers, 32/8 heads, head dim 128, MLP 14336, RMSNorm, RoPE θ
500000, SwiGLU; bf16; torch.nn.functional.scaled_dot_product_attention, causal, GQA through enable_gqa) over S
tokens, from hidden states to the last token's logits (vocab 128256) — the prefill of a context of S tokens,
as the best stack on this GPU runs it (cuBLAS GEMMs, SDPA's flash or cuDNN kernel). The weights are random; one
layer's weights serve all 32 layers (speed does not depend on the values, and each layer's 436 MB of weights is
far beyond the L2 cache, so sharing them changes no memory traffic). Times with CUDA events: one warm-up, then
the median of --iters runs. Prints one JSON array of rows ({metric: "prefill_ms", impl, context, value, ...}).

Usage: python3 benchmarks/device/prefill_peer.py [--contexts 8192,32768] [--iters 3] [--out rows.json]
"""

import argparse
import json
import statistics
import sys

from sdpa_peer import emit  # the same JSON rows out (this folder is on sys.path when run as a script)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", default="8192,16384,32768,65536")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--backend", default="cudnn,flash", help="SDPA backends to time, each alone")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    rows = []
    try:
        import torch
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except Exception as e:
        print(f"prefill_peer: torch unavailable: {e}", file=sys.stderr)
        emit(rows, a.out)
        return 0
    if not torch.cuda.is_available():
        print("prefill_peer: no CUDA device", file=sys.stderr)
        emit(rows, a.out)
        return 0
    dev, dt = torch.device("cuda"), torch.bfloat16
    gpu = torch.cuda.get_device_name(0)
    E, L, H, KH, D, F_, V = 4096, 32, 32, 8, 128, 14336, 128256
    g = torch.Generator(device=dev).manual_seed(0)

    def w(*shape):
        return (torch.randn(*shape, device=dev, dtype=dt, generator=g) * (shape[-1] ** -0.5)).contiguous()

    wqkv, wo = w((H + 2 * KH) * D, E), w(E, H * D)
    wgu, wd = w(2 * F_, E), w(E, F_)
    n1 = torch.ones(E, device=dev, dtype=dt)
    n2 = torch.ones(E, device=dev, dtype=dt)
    head = w(V, E)
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}

    def rms(x, wt):
        return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5)).to(dt) * wt

    def rope_tables(S):
        inv = 1.0 / (500000.0 ** (torch.arange(0, D, 2, device=dev, dtype=torch.float32) / D))
        ang = torch.arange(S, device=dev, dtype=torch.float32)[:, None] * inv[None, :]
        return torch.cos(ang).to(dt), torch.sin(ang).to(dt)

    def rope(x, cos, sin):  # x [1, h, S, D], rotate-half
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def forward(x, cos, sin, be):
        S = x.shape[0]
        for _ in range(L):
            h = rms(x, n1)
            qkv = h @ wqkv.t()
            q = qkv[:, : H * D].view(S, H, D).transpose(0, 1)[None]
            k = qkv[:, H * D: (H + KH) * D].view(S, KH, D).transpose(0, 1)[None]
            v = qkv[:, (H + KH) * D:].view(S, KH, D).transpose(0, 1)[None]
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            with sdpa_kernel(backends[be]):
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            x = x + o[0].transpose(0, 1).reshape(S, H * D) @ wo.t()
            gu = rms(x, n2) @ wgu.t()
            x = x + (F.silu(gu[:, :F_]) * gu[:, F_:]) @ wd.t()
        return rms(x[-1:], n1) @ head.t()

    with torch.inference_mode():
        for S in [int(s) for s in a.contexts.split(",") if s.strip()]:
            x = torch.randn(S, E, device=dev, dtype=dt, generator=g)
            cos, sin = rope_tables(S)
            for be in [b.strip() for b in a.backend.split(",") if b.strip()]:
                try:
                    forward(x, cos, sin, be)
                    torch.cuda.synchronize()
                    times = []
                    for _ in range(a.iters):
                        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        s.record()
                        forward(x, cos, sin, be)
                        e.record()
                        torch.cuda.synchronize()
                        times.append(s.elapsed_time(e))
                except Exception as ex:  # a backend that refuses the shape: say so, keep going
                    print(f"prefill_peer: {be} at {S}: {ex}", file=sys.stderr)
                    continue
                ms = statistics.median(times)
                flops = 2 * S * L * (E * (H + 2 * KH) * D + H * D * E + 3 * E * F_) + 2 * E * V \
                    + L * 4 * H * D * S * S / 2
                rows.append({
                    "metric": "prefill_ms", "value": ms, "unit": "ms", "context": S,
                    "model": "llama-3.1-8b (random bf16 weights, one layer's shared by all 32)",
                    "backend": "torch", "impl": f"torch-sdpa-{be}", "dtype": "bf16", "gpu": gpu,
                    "flops": flops, "timeMs": ms,
                    "params": {"iters": a.iters, "layers": L, "torch": torch.__version__,
                               "tflops": flops / ms / 1e9},
                })
                print(f"prefill_peer: {be} S={S}: {ms:.1f} ms ({flops / ms / 1e9:.0f} TFLOP/s)", file=sys.stderr)
            del x
            torch.cuda.empty_cache()
    emit(rows, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
