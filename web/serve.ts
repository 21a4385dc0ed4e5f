/**
 * `deno task web`: builds the demo page and serves it with the bundled model and data on
 * 127.0.0.1 (PORT, default 8000). Open the printed URL in a browser with WebGPU.
 *
 * @module
 */
import { buildDemo, REPO_ROOT } from "./build.ts";
import { demoMounts, serveStatic } from "./server.ts";

const port = Number(Deno.env.get("PORT") ?? 8000);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`PORT=${Deno.env.get("PORT")} is not a port number (0–65535)`);
  Deno.exit(2);
}
try {
  await buildDemo();
} catch (e) {
  console.error((e as Error).message);
  Deno.exit(1);
}
const server = serveStatic(demoMounts(REPO_ROOT), port);
console.log(`gradmm-ts demo: ${server.url}  (Ctrl-C to stop)`);
console.log(`  automatic runs: ${server.url}?auto=generate&prompt=The%20movie%20was&tokens=20`);
console.log(`                  ${server.url}?auto=synth&perClass=2&outer=2`);
