#!/usr/bin/env bash
# One GPU visit for the flash attention kernels (kernels/attention_flash.ts): the attention
# tests on the real GPU, then bench/attention_flash.ts (row vs flash kernels, with a flash-vs-rows
# comparison on every shape), a block-shape sweep at two shapes, and the PyTorch baseline.
# Results under $OUT. Run through the device tool with carry [".gpu", "node_modules"]:
#   bash bench/attention_flash_gpu.sh
# Step timeouts: 120 + 200 + 2·80 + 60 s = 9 minutes at most; expected about 4 on an H200
# (drop the sweep or the torch step to save device time).
cd "$(dirname "$0")/.."
E="bash .gpu/enter.sh"
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
start=$(date +%s)
step() { echo "[$(($(date +%s) - start)) s] $*" >&2; }
step tests
timeout 120 $E deno test -A --no-check=remote tests/autograd/attention_flash_test.ts tests/autograd/attention_test.ts \
  > "$OUT/attention-tests.txt" 2>&1
echo "tests exit: $?" >> "$OUT/attention-tests.txt"
step bench
timeout 200 $E deno run -A bench/attention_flash.ts --json --parts --check > "$OUT/attention.jsonl" 2> "$OUT/attention.err"
echo "bench exit: $?" >> "$OUT/attention.err"
step sweep
for f in "gpt2-d256" "phi-1.5 B10 H32 T1024"; do
  timeout 80 $E deno run -A bench/attention_flash.ts --json --kernel=flash --sweep --filter="$f" \
    >> "$OUT/attention-sweep.jsonl" 2>> "$OUT/attention.err"
done
step torch
timeout 60 python3 bench/attention_torch.py > "$OUT/attention-torch.jsonl" 2> "$OUT/attention-torch.err"
echo "torch exit: $?" >> "$OUT/attention-torch.err"
step done
tail -n 4 "$OUT/attention-tests.txt" "$OUT"/*.err
cat "$OUT/attention.jsonl" "$OUT/attention-torch.jsonl"
grep 'flash best' "$OUT/attention-sweep.jsonl"
