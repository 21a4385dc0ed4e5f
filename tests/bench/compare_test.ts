import assert from "node:assert";
import { compareMarkdown, matmulTable, parseRows, stepTable } from "../../bench/compare.ts";

const LINES = `NVIDIA H200, 143771 MiB
{"name":"matmul naive","shape":"1024x1024x1024","ms":1,"gflops":2000,"adapter":"GPU"}
{"name":"matmul blocked (default)","shape":"1024x1024x1024","ms":0.2,"gflops":10000,"adapter":"GPU"}
{"name":"matmul naive","shape":"4096x4096x4096","adapter":"GPU","skipped":"too long"}
{"name":"matmul blocked (default)","shape":"4096x4096x4096","ms":5,"gflops":25000,"adapter":"GPU"}
{"name":"matmul blocked (default) Aᵀ·B","shape":"4096x4096x4096","ms":16,"gflops":8500,"adapter":"GPU"}
{"name":"xstep gpt2-d128 eager","shape":"B=10 T=33","ms":40,"gpuMs":3,"adapter":"GPU"}
{"name":"xstep gpt2-d128","shape":"B=10 T=33","ms":4,"gpuMs":3,"adapter":"GPU"}
{"name":"softmax","shape":"4096x1024","ms":0.11,"gbps":305,"adapter":"GPU"}
{"name": "matmul (pytorch fp32, tf32 off)", "shape": "1024x1024x1024", "ms": 0.05, "gflops": 40000.0, "adapter": "GPU"}
{"name": "matmul (pytorch fp32, tf32 off)", "shape": "4096x4096x4096", "ms": 2.5, "gflops": 50000.0, "adapter": "GPU"}
{"name": "xstep gpt2-d128 (pytorch eager, double backward)", "shape": "B=10 T=33", "ms": 8.0, "adapter": "GPU"}
{"name":"truncated","sha`;

/** The cells of a markdown table row, trimmed. */
function cells(line: string): string[] {
  return line.split("|").slice(1, -1).map((c) => c.trim());
}

/** The rows of a markdown table (header and rule dropped), as cells. */
function body(table: string): string[][] {
  return table.split("\n").filter((l) => l.startsWith("|")).slice(2).map(cells);
}

Deno.test("compare: parses bench lines, skipping what is not a JSON object", () => {
  const rows = parseRows(LINES);
  assert.strictEqual(rows.length, 11);
  assert.strictEqual(rows[0].name, "matmul naive");
});

Deno.test("compare: matmul table puts ours and PyTorch side by side with the default's speed ratio", () => {
  const table = matmulTable(parseRows(LINES))!;
  assert.deepStrictEqual(cells(table.split("\n")[0]), [
    "size",
    "ours: naive GFLOP/s",
    "ours: blocked (default) GFLOP/s",
    "PyTorch fp32, tf32 off GFLOP/s",
    "ours (blocked) / PyTorch",
  ]);
  assert.deepStrictEqual(body(table), [
    ["1024³", "2,000", "10,000", "40,000", "0.25 (4.0× slower)"],
    ["4096³", "skipped", "25,000", "50,000", "0.50 (2.0× slower)"],
  ]);
  assert.match(table, /Transposed operands \(4096x4096x4096\): blocked \(default\) Aᵀ·B 8,500 GFLOP\/s\./);
});

Deno.test("compare: step table matches each of our x-steps to PyTorch's of the same model", () => {
  const table = stepTable(parseRows(LINES))!;
  assert.deepStrictEqual(body(table), [
    ["xstep gpt2-d128 eager", "B=10 T=33", "40.0 ms", "3.00 ms", "8.00 ms", "0.20 (5.0× slower)"],
    ["xstep gpt2-d128", "B=10 T=33", "4.00 ms", "3.00 ms", "8.00 ms", "2.00 (2.0× faster)"],
  ]);
  const md = compareMarkdown(parseRows(LINES));
  assert.deepStrictEqual(body(md.slice(md.indexOf("## Other entries"))), [
    ["softmax", "4096x1024", "0.110 ms", "—", "305 GB/s"],
  ]);
  assert.strictEqual(compareMarkdown([]), "Adapter: unknown.\n");
});
