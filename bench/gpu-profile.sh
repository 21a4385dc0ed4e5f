#!/usr/bin/env bash
# A short GPU visit that profiles the x-step (bench/xstep_profile.ts: eager vs replayed step,
# encode time, GPU time per kernel from timestamp queries) and, in the same run, PyTorch's eager
# x-step. Run through the device tool with carry [".gpu", "node_modules"]: bash bench/gpu-profile.sh
cd "$(dirname "$0")/.."
E="bash .gpu/enter.sh"
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
date -u > "$OUT/when.txt"
timeout 150 $E deno run -A bench/xstep_profile.ts --shape=gpt2-d256 --top=30 > "$OUT/profile-d256.txt" 2>&1
timeout 120 $E deno run -A bench/xstep_profile.ts --shape=gpt2-d128 --top=20 > "$OUT/profile-d128.txt" 2>&1
timeout 90 python3 bench/torch_ref.py --xstep-only > "$OUT/torch.jsonl" 2> "$OUT/torch.err"
tail -n 5 "$OUT"/*.err
cat "$OUT"/profile-*.txt "$OUT/torch.jsonl"
