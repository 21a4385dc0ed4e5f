/**
 * Ours against PyTorch from one GPU visit's output: reads the bench's JSON lines
 * (`bench/main.ts --json`, and the older standalone `bench/synth.ts --json`) and
 * `bench/torch_ref.py`'s, and prints markdown tables for docs/bench-gpu.md: fp32 matmul by size,
 * the GRADMM x-step (and z-step) by model shape, and every other entry.
 *
 *   deno run -A bench/compare.ts docs/gpu/run2             # a folder: all its *.jsonl files
 *   deno run -A bench/compare.ts out/bench.jsonl out/torch.jsonl
 *
 * Lines that are not JSON objects (an nvidia-smi line, a warning) are skipped. When the same
 * (name, shape) appears twice, the later line wins. Ratios are speed ratios, ours / PyTorch:
 * GFLOP/s over GFLOP/s for matmul, PyTorch's ms over ours for steps; above 1 ours is faster.
 *
 * @module
 */
import { join } from "node:path";

/** One bench line, ours or PyTorch's (the fields compare.ts reads). */
export interface Row {
  name: string;
  shape: string;
  ms?: number;
  gpuMs?: number;
  encodeMs?: number;
  gflops?: number;
  gbps?: number;
  tokensPerSecond?: number;
  adapter?: string;
  skipped?: string;
}

/** Parses JSON lines, skipping lines that are not objects with a name and a shape. */
export function parseRows(text: string): Row[] {
  const rows: Row[] = [];
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (!t.startsWith("{")) continue;
    try {
      const o = JSON.parse(t);
      if (typeof o?.name === "string" && typeof o?.shape === "string") rows.push(o as Row);
    } catch {
      // Not JSON (a truncated last line of a timed-out run): skip it.
    }
  }
  return rows;
}

/** True for a line written by bench/torch_ref.py. */
export function isTorch(r: Row): boolean {
  return /pytorch/i.test(r.name);
}

/** A markdown table with padded columns (as `deno fmt` would write it). */
export function markdownTable(head: string[], rows: string[][], right: boolean[] = []): string {
  const widths = head.map((h, i) => Math.max(3, h.length, ...rows.map((r) => r[i].length)));
  const line = (c: string[]) =>
    `| ${c.map((v, i) => (right[i] ? v.padStart(widths[i]) : v.padEnd(widths[i]))).join(" | ")} |`;
  const rule = `| ${
    widths.map((w, i) => (right[i] ? "-".repeat(w - 1) + ":" : "-".repeat(w))).join(" | ")
  } |`;
  return [line(head), rule, ...rows.map(line)].join("\n");
}

/** Numbers with thousands separators and few decimals: 28,377 / 975 / 2.8 / 0.431. */
function num(v: number | undefined): string {
  if (v === undefined) return "—";
  const digits = v >= 100 ? 0 : v >= 10 ? 1 : v >= 1 ? 2 : 3;
  return v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A speed ratio ours / PyTorch, with "× slower" when below 1. */
function ratio(r: number | undefined): string {
  if (r === undefined || !Number.isFinite(r)) return "—";
  return r >= 1
    ? `${r.toFixed(2)} (${r.toFixed(1)}× faster)`
    : `${r.toFixed(2)} (${(1 / r).toFixed(1)}× slower)`;
}

const LAYOUT_TAG = /[ᵀ]/;

/** The matmul table: each of our variants' GFLOP/s per size, PyTorch's, and the default's ratio. */
export function matmulTable(rows: Row[]): string | null {
  const ours = rows.filter((r) => r.name.startsWith("matmul ") && !isTorch(r) && !LAYOUT_TAG.test(r.name));
  const torch = rows.filter((r) => r.name.startsWith("matmul") && isTorch(r));
  const shapes = [...new Set([...ours, ...torch].map((r) => r.shape))].sort((a, b) =>
    parseInt(a) - parseInt(b)
  );
  if (shapes.length === 0) return null;
  const variants = [...new Set(ours.map((r) => r.name))];
  const best = variants.find((v) => v.includes("(default)"));
  const find = (name: string, shape: string) =>
    ours.findLast((r) => r.name === name && r.shape === shape && r.gflops !== undefined);
  // "matmul (pytorch fp32, tf32 off)" → "PyTorch fp32, tf32 off".
  const torchName = torch[0]?.name.replace(/^matmul \(pytorch (.*)\)$/i, "PyTorch $1") ?? "PyTorch";
  const head = [
    "size",
    ...variants.map((v) => `ours: ${v.slice(7)} GFLOP/s`),
    `${torchName} GFLOP/s`,
    `ours${best ? ` (${best.slice(7).replace(" (default)", "")})` : ""} / PyTorch`,
  ];
  const body = shapes.map((shape) => {
    const t = torch.findLast((r) => r.shape === shape)?.gflops;
    const b = best ? find(best, shape)?.gflops : undefined;
    const n = parseInt(shape);
    return [
      shape === `${n}x${n}x${n}` ? `${n}³` : shape,
      ...variants.map((v) => {
        const r = find(v, shape);
        return r
          ? num(r.gflops)
          : ours.some((o) => o.name === v && o.shape === shape && o.skipped)
          ? "skipped"
          : "—";
      }),
      num(t),
      ratio(b !== undefined && t !== undefined ? b / t : undefined),
    ];
  });
  const right = head.map((_, i) => i > 0);
  let out = markdownTable(head, body, right);
  const layouts = rows.filter((r) => r.name.startsWith("matmul ") && LAYOUT_TAG.test(r.name) && r.gflops);
  if (layouts.length > 0) {
    out += `\n\nTransposed operands (${layouts[0].shape}): ` +
      layouts.map((r) => `${r.name.replace(/^matmul /, "")} ${num(r.gflops)} GFLOP/s`).join(", ") + ".";
  }
  return out;
}

/** The model shape a step's name is about, e.g. "xstep gpt2-d128" for "xstep gpt2-d128 eager". */
function stepKey(name: string): string | null {
  const m = /^(xstep|zstep) (\S+)/.exec(name);
  return m ? `${m[1]} ${m[2]}` : null;
}

/** The step table: our x-step and z-step rows with PyTorch's x-step of the same model shape. */
export function stepTable(rows: Row[]): string | null {
  const ours = rows.filter((r) => stepKey(r.name) && !isTorch(r) && r.ms !== undefined);
  const torch = rows.filter((r) => stepKey(r.name) && isTorch(r));
  if (ours.length === 0 && torch.length === 0) return null;
  const seen = new Set<string>();
  const body: string[][] = [];
  for (const r of ours) {
    const key = `${r.name}|${r.shape}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const last = ours.findLast((o) => o.name === r.name && o.shape === r.shape)!;
    const t = torch.findLast((p) => stepKey(p.name) === stepKey(r.name) && p.shape === r.shape);
    body.push([
      r.name,
      r.shape,
      `${num(last.ms)} ms`,
      last.gpuMs === undefined ? "—" : `${num(last.gpuMs)} ms`,
      t?.ms === undefined ? "—" : `${num(t.ms)} ms`,
      ratio(t?.ms !== undefined && last.ms ? t.ms / last.ms : undefined),
    ]);
  }
  for (const t of torch) {
    if (!ours.some((r) => stepKey(r.name) === stepKey(t.name))) {
      body.push([t.name, t.shape, "—", "—", `${num(t.ms)} ms`, "—"]);
    }
  }
  const torchName = torch.length > 0 ? "PyTorch eager (double backward)" : "PyTorch";
  return markdownTable(
    ["step", "shape", "ours", "ours, GPU time", torchName, "ours / PyTorch"],
    body,
    [false, false, true, true, true, true],
  );
}

/** Every other entry of ours (row kernels, attention, generation...): time, GPU time, throughput. */
export function otherTable(rows: Row[]): string | null {
  const rest = rows.filter((r) => !isTorch(r) && !r.name.startsWith("matmul ") && !stepKey(r.name));
  if (rest.length === 0) return null;
  const body = rest.map((r) => [
    r.name,
    r.shape,
    r.skipped ? `skipped: ${r.skipped}` : `${num(r.ms)} ms`,
    r.gpuMs === undefined ? "—" : `${num(r.gpuMs)} ms`,
    r.gflops !== undefined
      ? `${num(r.gflops)} GFLOP/s`
      : r.gbps !== undefined
      ? `${num(r.gbps)} GB/s`
      : r.tokensPerSecond !== undefined
      ? `${num(r.tokensPerSecond)} tok/s`
      : "",
  ]);
  return markdownTable(["entry", "shape", "time", "GPU time", "throughput"], body, [
    false,
    false,
    true,
    true,
    true,
  ]);
}

/** The whole comparison as markdown (sections that have no rows are left out). */
export function compareMarkdown(rows: Row[]): string {
  const adapters = [...new Set(rows.map((r) => r.adapter).filter((a): a is string => !!a))];
  const parts = [`Adapter: ${adapters.join(", ") || "unknown"}.`];
  const m = matmulTable(rows);
  if (m) parts.push(`## fp32 matmul (square, M = N = K)\n\n${m}`);
  const s = stepTable(rows);
  if (s) {
    parts.push(
      `## GRADMM steps (GPT-2 shapes, random weights, batch 10, 30 free + 3 suffix tokens)\n\n${s}`,
    );
  }
  const o = otherTable(rows);
  if (o) parts.push(`## Other entries\n\n${o}`);
  return parts.join("\n\n") + "\n";
}

/** The JSON-lines files named on the command line (a folder stands for its *.jsonl files). */
async function inputFiles(args: string[]): Promise<string[]> {
  const files: string[] = [];
  for (const a of args) {
    if ((await Deno.stat(a)).isDirectory) {
      const names: string[] = [];
      for await (const e of Deno.readDir(a)) if (e.isFile && e.name.endsWith(".jsonl")) names.push(e.name);
      // bench before synth before torch: ours first, and a later bench line overrides an older one.
      files.push(...names.sort().map((n) => join(a, n)));
    } else files.push(a);
  }
  return files;
}

if (import.meta.main) {
  if (Deno.args.length === 0) {
    console.error("usage: deno run -A bench/compare.ts FOLDER_OR_JSONL...");
    Deno.exit(2);
  }
  const rows: Row[] = [];
  for (const f of await inputFiles(Deno.args)) rows.push(...parseRows(await Deno.readTextFile(f)));
  console.log(compareMarkdown(rows));
}
