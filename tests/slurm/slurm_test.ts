/**
 * Sharded synth on a real Slurm: brings up a one-node cluster (tools/slurm/up.sh), submits a
 * job array of 4 synth shards on the bundled gpt2-d128 (each task finds its shard from
 * SLURM_ARRAY_TASK_ID/COUNT, no flag), merges them, and compares the sha256 of the merged JSONL
 * with a one-process run of the same command. Then one shard is lost and resubmitted alone
 * (`sbatch --array=2` with `--shards 4`), and the merge gives the same bytes again.
 *
 * Needs Debian's slurmctld, slurmd, slurm-client and munge (CI installs them) and root; skipped,
 * with the reason printed, only when the Slurm binaries are absent.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { ROOT } from "../fixtures.ts";
import { manifestSansTime } from "../synth_manifest.ts";
import { synthFlags } from "../synth_flags.ts";

const NEEDED = ["sbatch", "sinfo", "slurmctld", "slurmd", "munged"];
const SEARCH = [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/sbin", "/sbin"];
const missing = NEEDED.filter((b) =>
  !SEARCH.some((d) => {
    try {
      return Deno.statSync(join(d, b)).isFile;
    } catch {
      return false;
    }
  })
);
if (missing.length > 0) {
  console.log(
    `skipping the Slurm test: ${missing.join(", ")} not installed ` +
      "(apt-get install -y slurmctld slurmd slurm-client munge)",
  );
}

// 2 classes × 2 rounds × 1 ρ = 4 rounds: one per array task. Small enough for 2 CPU cores.
const SYNTH = [
  "synth",
  "--model",
  join(ROOT, "assets", "gpt2-d128"),
  "--data",
  join(ROOT, "assets", "sst2-validation.jsonl"),
  ...synthFlags({
    perClass: 4,
    batch: 2,
    outerSteps: 1,
    innerSteps: 2,
    initCandidates: 2,
    realPool: 8,
    realN: 4,
    refineIterations: 2, // the default (13 on a CPU adapter) would dominate the test's time
  }),
];

function sh(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

async function run(cmd: string, args: string[], env: Record<string, string>): Promise<string> {
  const r = await new Deno.Command(cmd, {
    args,
    env,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(300_000),
  }).output();
  const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  if (!r.success) throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}:\n${text}`);
  return text;
}

function sha256(path: string): string {
  return createHash("sha256").update(Deno.readFileSync(path)).digest("hex");
}

async function logsOf(dir: string): Promise<string> {
  let all = "";
  for await (const e of Deno.readDir(dir)) {
    all += `--- ${e.name}\n${await Deno.readTextFile(join(dir, e.name))}\n`;
  }
  return all;
}

Deno.test({
  name: "Slurm job array of synth shards merges to the one-process bytes; a lost shard reruns alone",
  ignore: missing.length > 0,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "gradmm-slurm-" });
    // A fixed folder, so that a cluster left behind by an interrupted run (holding the ports) is
    // found by its PID files and stopped first.
    const base = "/tmp/gradmm-slurm-test";
    const logs = join(dir, "logs");
    await Deno.mkdir(logs);
    const env: Record<string, string> = { ...Deno.env.toObject(), SLURM_CONF: join(base, "slurm.conf") };
    env.XDG_RUNTIME_DIR ??= "/tmp"; // Deno's WebGPU on lavapipe asks for it
    env.PATH = `${env.PATH ?? ""}:/usr/sbin:/sbin`;
    const deno = Deno.execPath();
    const out = join(dir, "sh.jsonl");
    // The batch script every array task runs; extra sbatch arguments are passed on to synth.
    const job = join(dir, "shard.sh");
    Deno.writeTextFileSync(
      job,
      [
        "#!/bin/bash",
        "#SBATCH --job-name=gradmm-synth --cpus-per-task=1 --time=10",
        "set -euo pipefail",
        `cd ${sh(ROOT)}`,
        `exec ${sh(deno)} run -A cli.ts ${SYNTH.map(sh).join(" ")} --out ${sh(out)} "$@"`,
        "",
      ].join("\n"),
    );
    // Submits and waits for the job. Polled here rather than with `sbatch --wait`, whose polling
    // interval grows to 10 s; without accounting, finished jobs stay visible to scontrol for
    // MinJobAge (300 s), long enough to read their exit codes.
    const sbatch = async (array: string, ...synthArgs: string[]) => {
      const id = (await run("sbatch", [
        "--parsable",
        array,
        `--output=${join(logs, "%A_%a.out")}`,
        `--chdir=${ROOT}`,
        job,
        ...synthArgs,
      ], env)).match(/^(\d+)/m)?.[1];
      if (!id) throw new Error("sbatch --parsable printed no job id");
      const deadline = performance.now() + 300_000;
      // squeue lists pending and running tasks only (and fails once the job is purged).
      const running = async () => {
        const r = await new Deno.Command("squeue", { args: ["-h", "-j", id], env, stdout: "piped" }).output();
        return r.success && new TextDecoder().decode(r.stdout).trim() !== "";
      };
      while (await running()) {
        if (performance.now() > deadline) throw new Error(`Slurm job ${id} still running after 300 s`);
        await new Promise((r) => setTimeout(r, 250));
      }
      const tasks = (await run("scontrol", ["-o", "show", "job", id], env)).trim().split("\n");
      const failed = tasks.filter((t) => !/JobState=COMPLETED .*ExitCode=0:0/.test(t));
      if (failed.length > 0) throw new Error(`Slurm job ${id} failed:\n${failed.join("\n")}`);
    };
    await run("bash", [join(ROOT, "tools", "slurm", "down.sh"), base], env);
    await run("bash", [join(ROOT, "tools", "slurm", "up.sh"), base], env);
    try {
      const t0 = performance.now();
      const one = join(dir, "one.jsonl");
      // The array and the one-process reference run side by side (the cores are shared).
      await Promise.all([
        sbatch("--array=0-3"),
        run(deno, ["run", "-A", "cli.ts", ...SYNTH, "--out", one], env),
      ]);
      const arrayLog = await logsOf(logs);
      for (let i = 0; i < 4; i++) {
        assert.match(arrayLog, new RegExp(`shard ${i}/4 \\(Slurm array task ${i}\\): 1 round\\(s\\)`));
      }
      console.log(`array of 4 shards + one-process run: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      await run(deno, ["run", "-A", "cli.ts", "merge", "--out", out], env);
      assert.equal(Deno.readTextFileSync(one).trim().split("\n").length, 8);
      assert.equal(sha256(out), sha256(one), "merged JSONL differs from the one-process JSONL");
      assert.equal(
        manifestSansTime(join(dir, "sh.manifest.json")),
        manifestSansTime(join(dir, "one.manifest.json")),
      );

      // A lost shard, resubmitted alone: --shards 4 makes array id 2 mean shard 2 of 4.
      await Deno.remove(join(dir, "sh.shard-2-of-4.jsonl"));
      await Deno.remove(join(dir, "sh.shard-2-of-4.manifest.json"));
      await sbatch("--array=2", "--shards", "4");
      await run(deno, ["run", "-A", "cli.ts", "merge", "--overwrite", "--out", out], env);
      assert.equal(sha256(out), sha256(one), "merge after rerunning shard 2 differs");
    } catch (e) {
      throw new Error(`${(e as Error).message}\njob logs:\n${await logsOf(logs)}`, { cause: e });
    } finally {
      await run("bash", [join(ROOT, "tools", "slurm", "down.sh"), base], env).catch((e) =>
        console.error(`could not bring the test cluster down: ${(e as Error).message}`)
      );
    }
    await Deno.remove(dir, { recursive: true });
  },
});
