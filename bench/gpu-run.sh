#!/usr/bin/env bash
# One visit to the GPU machine (see ../shared/DESIGN.md): the whole bench (matmul ladder at
# 1024/2048/4096, row ops, attention, the synth x-step and z-step, generation) and the PyTorch
# baselines in the same run, results under $OUT, then the markdown comparison (bench/compare.ts)
# for docs/bench-gpu.md. Run through the device tool with carry [".gpu", "node_modules"]:
#   bash bench/gpu-run.sh
# Then the x-step profile (bench/xstep_profile.ts) and the f16-weights bench. Each step has a
# timeout; together at most 30 + 200 + 80 + 15 + 80 + 50 s (under 8 minutes), typically 3 to 4
# minutes on an H200. The bench streams one JSON line per entry, so a timed-out run keeps
# what it measured.
cd "$(dirname "$0")/.."
E="bash .gpu/enter.sh"
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
date -u > "$OUT/when.txt"
start=$(date +%s)
step() { echo "[$(($(date +%s) - start)) s] $*" >&2; }
step info
timeout 30 $E deno run -A cli.ts info > "$OUT/info.txt" 2>&1
step bench
timeout 200 $E deno run -A bench/main.ts --json --sizes=1024,2048,4096 --repeats=3 > "$OUT/bench.jsonl" 2> "$OUT/bench.err"
echo "bench exit: $?" >> "$OUT/bench.err"
step torch
timeout 80 python3 bench/torch_ref.py > "$OUT/torch.jsonl" 2> "$OUT/torch.err"
echo "torch exit: $?" >> "$OUT/torch.err"
step compare
timeout 15 $E deno run -A bench/compare.ts "$OUT/bench.jsonl" "$OUT/torch.jsonl" > "$OUT/compare.md" 2> "$OUT/compare.err"
step profile
timeout 80 $E deno run -A bench/xstep_profile.ts --shape=gpt2-d256 --top=15 > "$OUT/profile-d256.txt" 2>&1
if [ -f bench/f16.ts ]; then
  step f16
  timeout 50 $E deno run -A bench/f16.ts --json > "$OUT/f16.jsonl" 2> "$OUT/f16.err"
fi
step done
tail -n 3 "$OUT"/*.err
cat "$OUT"/*.jsonl
cat "$OUT/compare.md"
head -c 2500 "$OUT/profile-d256.txt"
