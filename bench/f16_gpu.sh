#!/usr/bin/env bash
# One GPU visit for f16 weights (docs/f16.md): the f16 tests on the real GPU, bench/f16.ts (f32 vs
# f16 head products, x-step and decode step, with the alternative kernel plans) and the accuracy
# figures (bench/f16_accuracy.ts). Results under $OUT. Run through the device tool with carry
# [".gpu", "node_modules"]:
#   bash bench/f16_gpu.sh
# Step timeouts: 150 + 240 + 120 s = 8.5 minutes at most; expected 3 to 4 on an H200 (drop the
# accuracy step to save device time: its figures barely depend on the adapter).
cd "$(dirname "$0")/.."
E="bash .gpu/enter.sh"
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
start=$(date +%s)
step() { echo "[$(($(date +%s) - start)) s] $*" >&2; }
step tests
timeout 150 $E deno test -A --no-check=remote tests/kernels/matmul_f16_test.ts tests/models/f16_test.ts \
  > "$OUT/f16-tests.txt" 2>&1
echo "tests exit: $?" >> "$OUT/f16-tests.txt"
step bench
timeout 240 $E deno run -A bench/f16.ts --json --d=128,256 --repeats=3 --rounds=2 --plans \
  > "$OUT/f16.jsonl" 2> "$OUT/f16.err"
echo "bench exit: $?" >> "$OUT/f16.err"
step accuracy
timeout 120 $E deno run -A bench/f16_accuracy.ts --sentences=50 > "$OUT/f16-accuracy.md" 2>&1
echo "accuracy exit: $?" >> "$OUT/f16-accuracy.md"
step done
tail -n 3 "$OUT/f16-tests.txt" "$OUT/f16.err"
cat "$OUT/f16.jsonl"
