"""PyTorch baselines for the GPU bench (run on the GPU machine, where PyTorch is installed).

Prints one JSON object per line in the same form as `deno task bench --json`:
  - fp32 matmul with TF32 disabled (cuBLAS SGEMM) at the shapes of our matmul bench;
  - the GRADMM x-step in eager PyTorch as the official code runs it: forward from input
    embeddings, CE at the last position, gradient of the output layer with create_graph=True,
    1 - cos to a target, and the double backward to the embeddings; then clip and Adam.
    GPT-2 shapes (gpt2-d128 / gpt2-d256), random weights, batch 10, 30 free tokens + 3 prompt tokens.

Usage: python3 bench/torch_ref.py [--xstep-only] [--device cuda]
"""
import argparse
import json
import math
import time

import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def timed(fn, reps, device):
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / reps * 1000)
    times.sort()
    return times[1]


class Block(torch.nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1 = torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.proj = torch.nn.Linear(d, d)
        self.ln2 = torch.nn.LayerNorm(d)
        self.fc = torch.nn.Linear(d, 4 * d)
        self.out = torch.nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, -1e30).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.out(torch.nn.functional.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class Gpt2(torch.nn.Module):
    def __init__(self, vocab, d, layers, heads, positions):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, d)
        self.wpe = torch.nn.Embedding(positions, d)
        self.blocks = torch.nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.lnf = torch.nn.LayerNorm(d)

    def last_hidden(self, x):
        pos = torch.arange(x.shape[1], device=x.device)
        h = x + self.wpe(pos)
        for blk in self.blocks:
            h = blk(h)
        return self.lnf(h)


def xstep_bench(name, d, layers, heads, device):
    torch.manual_seed(0)
    vocab, batch, free, prompt = 50257, 10, 30, 3
    model = Gpt2(vocab, d, layers, heads, 256).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.wte.weight  # tied output layer
    head.requires_grad_(True)
    x = torch.randn(batch, free + prompt, d, device=device, requires_grad=True)
    z = torch.randn_like(x)
    lam = torch.zeros_like(x)
    target = torch.randn(vocab, d, device=device) * 1e-3
    labels = torch.full((batch,), 1049, device=device)
    opt = torch.optim.Adam([x], lr=0.008)
    rho = 0.7

    def step():
        opt.zero_grad()
        h = model.last_hidden(x)[:, -1]
        ce = torch.nn.functional.cross_entropy(h @ head.t(), labels)
        (g,) = torch.autograd.grad(ce, [head], create_graph=True)
        match = 1 - torch.nn.functional.cosine_similarity(g.flatten(), target.flatten(), dim=0)
        loss = match + rho / 2 * ((x - z + lam / rho) ** 2).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([x], 1.0)
        opt.step()

    ms = timed(step, 20, device)
    print(json.dumps({"name": f"xstep {name} (pytorch eager, double backward)", "shape": f"B={batch} T={free + prompt}",
                      "ms": round(ms, 3), "adapter": torch.cuda.get_device_name() if device == "cuda" else "cpu"}))


def matmul_bench(device):
    for n in (256, 512, 1024, 2048, 4096):
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        reps = max(3, min(200, int(2e11 / (2 * n ** 3))))
        ms = timed(lambda: a @ b, reps, device)
        print(json.dumps({"name": "matmul (pytorch fp32, tf32 off)", "shape": f"{n}x{n}x{n}", "ms": round(ms, 4),
                          "gflops": round(2 * n ** 3 / ms / 1e6, 1),
                          "adapter": torch.cuda.get_device_name() if device == "cuda" else "cpu"}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--xstep-only", action="store_true")
    args = ap.parse_args()
    if not args.xstep_only:
        matmul_bench(args.device)
    xstep_bench("gpt2-d128", 128, 4, 4, args.device)
    xstep_bench("gpt2-d256", 256, 6, 8, args.device)
