"""PyTorch baseline for bench/attention_flash.ts (run on the GPU machine, where PyTorch is installed).

Times causal attention in fp32 at the same shapes, forward and backward, with
torch.nn.functional.scaled_dot_product_attention (PyTorch picks its fused kernel; for fp32 on
CUDA that is the memory-efficient one) and, for reference, the unfused math (q kᵀ, masked softmax,
p v). Prints one JSON object per line like the Deno bench: {name, shape, ms, gflops, adapter},
names `attention fwd torch-sdpa`, `attention bwd torch-math`, ...; GFLOP/s count 4·Dh per visible
(causal) pair forward and 10·Dh backward, as bench/attention_flash.ts does.

Usage: python3 bench/attention_torch.py [--batches 1,10] [--filter TEXT] [--device cuda]
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def shapes(batches):
    out = [("gpt2-d256 x-step", 10, 8, 33, 32, False)]
    for t in (256, 1024, 2048):
        for b in batches:
            out.append(("phi-1.5", b, 32, t, 64, False))
    for t in (1024, 2048):
        out.append(("phi-2", 1, 32, t, 80, False))
    out.append(("decode", 10, 32, 1, 64, True))  # 1 query over 1024 keys, forward only
    return out


def timed(fn, device, budget_s=0.1):
    fn()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    reps = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        if time.perf_counter() - t0 > budget_s or reps >= 1024:
            break
        reps *= 2
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / reps * 1000)
    times.sort()
    return times[1]


def math_attention(q, k, v):
    tq, tk = q.shape[2], k.shape[2]
    s = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(tk - tq)
    return s.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def sdpa(q, k, v):
    if q.shape[2] == k.shape[2]:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v)  # one query after every key: nothing to mask


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,10")
    ap.add_argument("--filter", default="")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    dev = a.device
    adapter = torch.cuda.get_device_name() + " (PyTorch)" if dev == "cuda" else "cpu (PyTorch)"
    for label, b, h, tq, dh, decode in shapes([int(x) for x in a.batches.split(",")]):
        tk = 1024 if decode else tq
        shape = f"B{b} H{h} " + (f"Tq{tq} Tk{tk}" if tq != tk else f"T{tq}") + f" Dh{dh}"
        if a.filter and a.filter.lower() not in f"{label} {shape}".lower():
            continue
        pairs = b * h * sum(min(tk, tk - tq + i + 1) for i in range(tq))
        q = torch.randn(b, h, tq, dh, device=dev, requires_grad=True)
        k = torch.randn(b, h, tk, dh, device=dev, requires_grad=True)
        v = torch.randn(b, h, tk, dh, device=dev, requires_grad=True)
        g = torch.randn(b, h, tq, dh, device=dev)
        for kname, fn in (("torch-sdpa", sdpa), ("torch-math", math_attention)):
            try:
                with torch.no_grad():
                    ms = timed(lambda: fn(q, k, v), dev)
                print(json.dumps({"name": f"attention fwd {kname}", "shape": shape, "ms": round(ms, 4),
                                  "gflops": round(4 * dh * pairs / ms / 1e6, 3), "adapter": adapter}), flush=True)
                if decode:
                    continue
                y = fn(q, k, v)
                ms = timed(lambda: torch.autograd.grad(y, (q, k, v), g, retain_graph=True), dev)
                print(json.dumps({"name": f"attention bwd {kname}", "shape": shape, "ms": round(ms, 4),
                                  "gflops": round(10 * dh * pairs / ms / 1e6, 3), "adapter": adapter}), flush=True)
                del y
            except torch.cuda.OutOfMemoryError:
                print(json.dumps({"name": f"attention fwd {kname}", "shape": shape, "adapter": adapter,
                                  "skipped": "out of memory"}), flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
