/**
 * `deno task bench`: runs every bench suite on the default WebGPU adapter and prints one table
 * at the end of the run (progress goes to stderr meanwhile), or one JSON object per line with
 * `--json`.
 *
 *   deno task bench                                   # the default run (a few minutes on a CPU adapter)
 *   deno task bench --sizes=1024,2048,4096            # the matmul ladder at those sizes
 *   deno task bench --filter=xstep                    # only entries whose name contains "xstep"
 *   deno run -A bench/main.ts --json > bench.jsonl    # machine-readable (bench/compare.ts reads it)
 *
 * Options:
 *   --json               one object per line: {name, shape, ms, gpuMs, encodeMs, submitMs, gflops,
 *                        gbps, tokensPerSecond, adapter, skipped, note}, fields that do not apply left out
 *   --filter=TEXT        only entries whose name contains TEXT (e.g. --filter=vec4, --filter=d128)
 *   --sizes=256,512,...  matmul sizes (default 256,512,1024,2048)
 *   --max-seconds=S      skip entries estimated to take longer than S seconds (default 20)
 *   --repeats=N          timed repeats per entry; the median is reported (default 3)
 *
 * Columns of the table:
 *   kernel / step  what ran: a kernel variant (matmul vec4, softmax, attention fwd), a GRADMM step
 *                  (xstep/zstep gpt2-d128: the synth bench, bench/synth.ts) or a model-level run
 *   shape          the problem size (M×N×K for matmul; B, H, T, Dh for attention; B, T for steps)
 *   ms             median wall-clock milliseconds per run, GPU→CPU sync included but amortised
 *                  over many runs per sync (bench/harness.ts `timeGpu`); the z-step and generation
 *                  wait for their read-backs, so theirs is the whole call
 *   GPU ms         median GPU milliseconds per run from timestamp queries: the summed durations of
 *                  the run's compute passes (kernels/timing.ts); empty where the adapter has no
 *                  `timestamp-query` (then the note says why)
 *   encode ms      median CPU milliseconds per run spent encoding its commands (the TypeScript
 *                  that records dispatches and copies, before the submit)
 *   submit ms      median CPU milliseconds per run in the flush after it (parameter upload and
 *                  queue.submit; a driver with a full queue blocks here, as lavapipe does).
 *                  When encode + submit is close to ms, the CPU side sets the speed, not the GPU
 *   throughput     GFLOP/s (matmul: 2·M·N·K; attention: see bench/attention.ts), GB/s (row ops:
 *                  bytes read + written once each) or tokens/s, from the wall-clock ms
 *   adapter        the WebGPU adapter (and DENO_WEBGPU_BACKEND when set)
 *   (last)         why an entry was skipped, or other notes
 *
 * Choose the backend with DENO_WEBGPU_BACKEND=vulkan|gl (both Mesa CPU adapters describe
 * themselves as "llvmpipe (LLVM …)", so the backend is added to the adapter name).
 *
 * Adding a bench: write bench/<name>.ts exporting a BenchSuite (see bench/harness.ts) and list it
 * in SUITES below.
 */
import { parseArgs } from "node:util";
import os from "node:os";
import { createContext } from "../kernels/device.ts";
import { type BenchOptions, type BenchResult, type BenchSuite, formatJson, formatTable } from "./harness.ts";
import { matmulSuite } from "./matmul.ts";
import { rowOpsSuite } from "./rowops.ts";
import { attentionSuite } from "./attention.ts";
import { synthSuite } from "./synth.ts";
import { generateSuite } from "./generate.ts";

/** The suites run by `deno task bench`, in order. */
const SUITES: BenchSuite[] = [matmulSuite, rowOpsSuite, attentionSuite, synthSuite, generateSuite];

function parseOptions(args: string[]): BenchOptions & { json: boolean } {
  const { values } = parseArgs({
    args,
    options: {
      json: { type: "boolean", default: false },
      filter: { type: "string", default: "" },
      sizes: { type: "string", default: "256,512,1024,2048" },
      "max-seconds": { type: "string", default: "20" },
      repeats: { type: "string", default: "3" },
    },
  });
  const sizes = values.sizes.split(",").map((s) => Number(s.trim()));
  if (sizes.some((s) => !Number.isInteger(s) || s <= 0)) {
    throw new Error(`--sizes: expected positive integers, got '${values.sizes}'`);
  }
  const maxSeconds = Number(values["max-seconds"]);
  const repeats = Number(values.repeats);
  if (!(maxSeconds > 0)) {
    throw new Error(`--max-seconds: expected a positive number, got '${values["max-seconds"]}'`);
  }
  if (!Number.isInteger(repeats) || repeats < 1) {
    throw new Error(`--repeats: expected a positive integer, got '${values.repeats}'`);
  }
  return { json: values.json, filter: values.filter, sizes, maxSeconds, repeats };
}

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  const ctx = await createContext();
  const backend = Deno.env.get("DENO_WEBGPU_BACKEND");
  const adapter = backend ? `${ctx.adapterName} [${backend}]` : ctx.adapterName;
  const rows: BenchResult[] = [];
  const started = performance.now();
  const loadBefore = os.loadavg()[0];
  const report = (r: BenchResult) => {
    const withAdapter = { ...r, adapter };
    if (options.json) console.log(formatJson(withAdapter));
    else {
      rows.push(withAdapter);
      const ms = r.ms === undefined ? "" : ` ${r.ms.toFixed(3)} ms`;
      console.error(`  ${r.name} ${r.shape}${ms}${r.skipped ? " (skipped)" : ""}`);
    }
  };
  for (const suite of SUITES) await suite.run(ctx, options, report);
  if (options.json) return;
  const load = os.loadavg().map((l) => l.toFixed(2)).join(" ");
  const timestamps = ctx.features.has("timestamp-query") ? "timestamp-query" : "no timestamp-query";
  console.log(
    `adapter: ${adapter} (${timestamps}); ${os.cpus().length} CPUs, load average ${load} ` +
      `(1-min ${loadBefore.toFixed(2)} at the start); ${((performance.now() - started) / 1000).toFixed(0)} s`,
  );
  console.log(formatTable(rows));
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`bench: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
