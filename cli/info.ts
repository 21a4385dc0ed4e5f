/** `info`: what WebGPU adapter this machine gives us, with its limits and features. */
import { createContext } from "../kernels/device.ts";
import { type Command, JSON_HELP, parseFlags } from "./args.ts";

export const infoCommand: Command = {
  name: "info",
  summary: "print the WebGPU adapter, its limits and features",
  help: `Usage: cli.ts info [--json]

Prints the adapter that WebGPU picks on this machine (vendor, architecture, description),
the limits the engine requests at the adapter's real values, and the optional features.
DENO_WEBGPU_BACKEND=vulkan or gl chooses the backend.

${JSON_HELP}

Examples
  deno run -A cli.ts info
  DENO_WEBGPU_BACKEND=vulkan deno run -A cli.ts info --json`,
  async run(args) {
    const { values } = parseFlags("info", args, { json: { type: "boolean" } });
    if (values.help) {
      console.log(this.help);
      return 0;
    }
    const ctx = await createContext();
    const report = {
      adapter: ctx.adapter,
      cpuAdapter: ctx.isCpuAdapter,
      limits: ctx.limits,
      features: [...ctx.features].sort(),
    };
    if (values.json) {
      console.log(JSON.stringify(report));
      return 0;
    }
    const a = ctx.adapter;
    console.log(`adapter:      ${a.description || "(no description)"}`);
    console.log(`vendor:       ${a.vendor || "-"}`);
    console.log(`architecture: ${a.architecture || "-"}`);
    console.log(`device:       ${a.device || "-"}`);
    console.log(`kind:         ${ctx.isCpuAdapter ? "CPU (software rasterizer)" : "GPU"}`);
    console.log(`features:     ${report.features.join(", ") || "-"}`);
    console.log("limits:");
    for (const [k, v] of Object.entries(ctx.limits)) console.log(`  ${k.padEnd(36)} ${v}`);
    return 0;
  },
};
