/**
 * `deno task bench`: runs the bench suites on the default WebGPU adapter and prints a table
 * (kernel, shape, ms, GFLOP/s or GB/s, adapter), or one JSON object per line with `--json`.
 *
 * Options:
 *   --json               one `{name, shape, ms, gflops, gbps, adapter}` object per line
 *   --filter=TEXT        only entries whose name contains TEXT (e.g. --filter=vec4)
 *   --sizes=256,512,...  matmul sizes (default 256,512,1024,2048)
 *   --max-seconds=S      skip entries estimated to take longer than S seconds (default 20)
 *   --repeats=N          timed repeats per entry; the median is reported (default 3)
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
import {
  type BenchOptions,
  type BenchResult,
  type BenchSuite,
  formatHeader,
  formatJson,
  formatRow,
} from "./harness.ts";
import { matmulSuite } from "./matmul.ts";
import { rowOpsSuite } from "./rowops.ts";
import { generateSuite } from "./generate.ts";

/**
 * The suites run by `deno task bench`, in order. bench/synth.ts (the GRADMM steps) is run on its
 * own (`deno run -A bench/synth.ts`), as bench/gpu-run.sh does.
 */
const SUITES: BenchSuite[] = [matmulSuite, rowOpsSuite, generateSuite];

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
  if (!options.json) {
    const load = os.loadavg().map((l) => l.toFixed(2)).join(" ");
    console.log(
      `${formatHeader(adapter)}`.replace("\n", `  (load average ${load}, ${os.cpus().length} CPUs)\n`),
    );
  }
  const report = (r: BenchResult) => {
    const withAdapter = { ...r, adapter };
    console.log(options.json ? formatJson(withAdapter) : formatRow(withAdapter));
  };
  for (const suite of SUITES) await suite.run(ctx, options, report);
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`bench: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
