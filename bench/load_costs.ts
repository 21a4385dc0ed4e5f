/**
 * What a load costs inside a compute shader on this adapter: the microbenchmarks behind the
 * matmul design (see kernels/matmul.ts and docs/bench-cpu.md).
 * `deno run -A bench/load_costs.ts [--json]`
 *
 * Each probe runs a loop of 256 steps in 65,536 invocations; the body does one kind of load (or
 * only FMAs) and the result is reported as nanoseconds per 8 invocations (one 256-bit SIMD vector
 * on llvmpipe) per step. On CPU adapters the time is process CPU time divided by the core count
 * ("cpu-ns"), which other processes on the machine disturb much less than wall-clock time.
 */
import { parseArgs } from "node:util";
import os from "node:os";
import process from "node:process";
import { createContext, type GpuContext } from "../kernels/device.ts";
import { median } from "./harness.ts";

const N = 1 << 20;
const STEPS = 256;
const GROUPS = 1024;
const WG = 64;

/** Loop bodies: `k` is the step, `lid` the global invocation index, `acc` an f32 accumulator. */
const PROBES: { name: string; body: string; unrolled?: boolean }[] = [
  { name: "empty loop step", body: "acc += 1.0;" },
  { name: "storage load f32", body: `acc += A[(k * 64u + lid) & ${N - 1}u];` },
  {
    name: "storage load vec4",
    body: `let v = A4[(k * 64u + lid) & ${N / 4 - 1}u]; acc += v.x + v.y + v.z + v.w;`,
  },
  {
    name: "storage load vec4, same address",
    body: `let v = A4[(k * 7u + wid.x) & ${N / 4 - 1}u]; acc += v.x + v.w;`,
  },
  { name: "workgroup load vec4", body: "let v = S[(k * 64u + lid) & 1023u]; acc += v.x + v.y + v.z + v.w;" },
  { name: "uniform load vec4", body: "let v = U[(k * 64u + lid) & 4095u]; acc += v.x + v.y + v.z + v.w;" },
  { name: "private array load vec4", body: "let v = P[(k + lid) & 15u]; acc += v.x + v.y + v.z + v.w;" },
  {
    name: "16 independent FMAs",
    body: Array.from({ length: 16 }, (_, i) => `r${i % 8} = fma(r${i % 8}, 1.0001, 0.5);`).join(" "),
  },
  {
    name: "unrolled: storage f32, constant address",
    body: `acc += A[(k * 7u) & ${N - 1}u];`,
    unrolled: true,
  },
  {
    name: "unrolled: storage f32, per-workgroup address",
    body: `acc += A[(wid.x * 64u + k * 7u) & ${N - 1}u];`,
    unrolled: true,
  },
];

function shader(body: string, unrolled: boolean): string {
  const loop = unrolled
    ? Array.from({ length: STEPS }, (_, k) => `{ let k = ${k}u; ${body} }`).join("\n  ")
    : `for (var k = 0u; k < ${STEPS}u; k++) { ${body} }`;
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> A4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@group(0) @binding(3) var<uniform> U: array<vec4<f32>, 4096>;
var<workgroup> S: array<vec4<f32>, 1024>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let lid = li + wid.x * ${WG}u;
  var P: array<vec4<f32>, 16>;
  for (var i = 0u; i < 16u; i++) { P[i] = vec4<f32>(f32(i + lid)); }
  for (var i = li; i < 1024u; i += ${WG}u) { S[i] = vec4<f32>(f32(i)); }
  workgroupBarrier();
  var acc = 0.0;
  var r0 = acc; var r1 = acc + 1.0; var r2 = acc + 2.0; var r3 = acc + 3.0;
  var r4 = acc + 4.0; var r5 = acc + 5.0; var r6 = acc + 6.0; var r7 = acc + 7.0;
  ${loop}
  // Every binding is used, so all probes share one bind group layout.
  O[lid] = acc + r0 + r1 + r2 + r3 + r4 + r5 + r6 + r7 + A[0] + A4[1].x + U[2].y + S[3].z + P[4].w;
}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ args: Deno.args, options: { json: { type: "boolean", default: false } } });
  const ctx: GpuContext = await createContext();
  const dev = ctx.device;
  const storage = (bytes: number) =>
    dev.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  const a = storage(N * 4);
  dev.queue.writeBuffer(a, 0, new Float32Array(N).fill(0.5));
  const out = storage(GROUPS * WG * 4);
  const u = dev.createBuffer({ size: 65536, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const probes = PROBES.map((p) => {
    const pipeline = ctx.pipeline(shader(p.body, !!p.unrolled));
    const bindGroup = dev.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [a, a, out, u].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    return { ...p, pipeline, bindGroup, samples: [] as number[] };
  });
  const cores = ctx.isCpuAdapter ? os.cpus().length : 1;
  for (let round = 0; round < 4; round++) {
    for (const p of probes) {
      const enc = () => {
        const e = dev.createCommandEncoder();
        const pass = e.beginComputePass();
        pass.setPipeline(p.pipeline);
        pass.setBindGroup(0, p.bindGroup);
        pass.dispatchWorkgroups(GROUPS);
        pass.end();
        dev.queue.submit([e.finish()]);
      };
      enc(); // compile / warm up
      await dev.queue.onSubmittedWorkDone();
      const t = performance.now();
      const c0 = process.cpuUsage();
      for (let i = 0; i < 3; i++) enc();
      await dev.queue.onSubmittedWorkDone();
      const used = process.cpuUsage(c0);
      const ms = ctx.isCpuAdapter ? (used.user + used.system) / 1000 / cores : performance.now() - t;
      if (round > 0) p.samples.push(ms / 3);
    }
  }
  const vectors = (GROUPS * WG * STEPS) / 8;
  const unit = ctx.isCpuAdapter ? "cpu-ns" : "ns";
  if (!values.json) {
    console.log(
      `adapter: ${ctx.adapterName}, load average ${
        os.loadavg()[0].toFixed(2)
      }; ${unit} per 8 invocations per step`,
    );
  }
  for (const p of probes) {
    const ns = (median(p.samples) * 1e6) / vectors;
    if (values.json) console.log(JSON.stringify({ name: p.name, ns, unit, adapter: ctx.adapterName }));
    else console.log(`${p.name.padEnd(48)} ${ns.toFixed(2).padStart(8)}`);
  }
}

if (import.meta.main) await main();
