#!/usr/bin/env bash
# One visit to the GPU machine (see ../shared/DESIGN.md): the bench, the synth bench and the
# PyTorch baselines in the same run, results under $OUT. Run through the device tool with
# carry [".gpu", "node_modules"]:  bash bench/gpu-run.sh
cd "$(dirname "$0")/.."
E="bash .gpu/enter.sh"
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
date -u > "$OUT/when.txt"
timeout 60 $E deno run -A cli.ts info > "$OUT/info.txt" 2>&1
timeout 300 $E deno run -A bench/main.ts --json --sizes=256,512,1024,2048,4096 --repeats=3 > "$OUT/bench.jsonl" 2> "$OUT/bench.err"
timeout 120 $E deno run -A bench/synth.ts --json > "$OUT/synth.jsonl" 2> "$OUT/synth.err"
timeout 120 python3 bench/torch_ref.py > "$OUT/torch.jsonl" 2> "$OUT/torch.err"
tail -n 3 "$OUT"/*.err
cat "$OUT"/*.jsonl
