/**
 * `synth --shard i/n` + `merge` end to end on tiny-gpt2: the merged JSONL is byte-identical to a
 * one-process run of the same command (and the manifest equal but for timings), an unfinished,
 * missing, duplicated or mismatched shard is refused with its file named, and a shard rerun alone
 * resumes and merges to the same bytes. The same flow under a real Slurm is tests/slurm/.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { gpuTest } from "../helpers.ts";
import { shared } from "../shared.ts";
import { runCli } from "./capture.ts";
import { manifestSansTime } from "../synth_manifest.ts";
import { synthFlags, TINY_SYNTH } from "../synth_flags.ts";

// 2 classes × 2 ρ × 2 rounds = 8 rounds; 3 shards get 3, 3 and 2 of them.
const TINY = synthFlags({ ...TINY_SYNTH, rho: "0.7,0.3", outerSteps: 1 });

async function ok(argv: string[]): Promise<string> {
  const r = await runCli(argv);
  if (r.code !== 0) throw new Error(`${argv.join(" ")} exited ${r.code}:\n${r.stderr}`);
  return r.stderr;
}

async function refused(argv: string[], re: RegExp): Promise<void> {
  const r = await runCli(argv);
  assert.notEqual(r.code, 0, `${argv.join(" ")} was accepted`);
  assert.match(r.stderr, re, `${argv.join(" ")}: unexpected message`);
}

Deno.test({
  name: "synth --shard i/n + merge on tiny-gpt2: same bytes as one process; bad shard sets refused",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const model = shared("models", "tiny-gpt2");
    const synth = (...a: string[]) => ["synth", ...TINY, "--model", model, ...a];
    const whole = join(dir, "whole.jsonl");
    await ok(synth("--out", whole));

    const out = join(dir, "sh.jsonl");
    const shardFile = (i: number, n = 3) => join(dir, `sh.shard-${i}-of-${n}.jsonl`);
    const log0 = await ok(synth("--out", out, "--shard", "0/3"));
    assert.match(log0, /shard 0\/3 \(--shard\): 3 round\(s\)/);
    // Shard 1 stops after one round: merge must refuse it as unfinished, then it resumes.
    await ok(synth("--out", out, "--shard", "1/3", "--max-rounds", "1"));
    await ok(synth("--out", out, "--shard", "2/3"));
    await refused(
      ["merge", "--out", out],
      /shard 1 of 3 .*sh\.shard-1-of-3\.jsonl\) has finished 1 of its 3/,
    );
    await ok(synth("--out", out, "--shard", "1/3"));
    // Shard 1 has rounds of both classes; the resumed invocation computed only class 1's target,
    // and keeps class 0's from the first one.
    const m1 = JSON.parse(Deno.readTextFileSync(join(dir, "sh.shard-1-of-3.manifest.json")));
    assert.equal(Object.keys(m1.targets).length, 2, `targets after resume: ${Object.keys(m1.targets)}`);

    // A lost shard: refused by name, then rerun alone.
    await Deno.remove(shardFile(2));
    await refused(["merge", "--out", out], /missing shard\(s\) 2 of 3: expected .*sh\.shard-2-of-3\.jsonl/);
    await ok(synth("--out", out, "--shard", "2/3"));

    await ok(["merge", "--out", out]);
    const a = Deno.readFileSync(whole), b = Deno.readFileSync(out);
    assert.equal(a.length, b.length);
    assert.ok(a.every((x, i) => x === b[i]), "merged JSONL differs from the one-process JSONL");
    assert.equal(Deno.readTextFileSync(out).trim().split("\n").length, 16);
    assert.equal(
      manifestSansTime(join(dir, "sh.manifest.json")),
      manifestSansTime(join(dir, "whole.manifest.json")),
    );
    // The merged output is a finished one-process output: the one-process command resumes it
    // with nothing left to do, and leaves the records as they are.
    const resumed = await ok(synth("--out", out));
    assert.match(resumed, /resuming: 8 completed round\(s\)/);
    assert.ok(Deno.readFileSync(out).every((x, i) => x === a[i]));

    await refused(["merge", "--out", out], /exists; pass --overwrite/);
    // The same shard twice (e.g. copied from two nodes).
    const copy = join(dir, "copy");
    await Deno.mkdir(copy);
    await Deno.copyFile(shardFile(0), join(copy, "sh.shard-0-of-3.jsonl"));
    await Deno.copyFile(
      join(dir, "sh.shard-0-of-3.manifest.json"),
      join(copy, "sh.shard-0-of-3.manifest.json"),
    );
    const all = [shardFile(0), shardFile(1), shardFile(2)];
    await refused(
      ["merge", "--overwrite", "--out", out, ...all, join(copy, "sh.shard-0-of-3.jsonl")],
      /shard 0 of 3 appears more than once: .*sh\.shard-0-of-3\.jsonl, .*copy\/sh\.shard-0-of-3\.jsonl/,
    );
    // A shard of a run with other settings.
    const other = join(dir, "other.jsonl");
    await ok(synth("--out", other, "--shard", "1/3", "--seed", "7"));
    await refused(
      [
        "merge",
        "--overwrite",
        "--out",
        out,
        shardFile(0),
        join(dir, "other.shard-1-of-3.jsonl"),
        shardFile(2),
      ],
      /other\.shard-1-of-3\.manifest\.json and .*sh\.shard-0-of-3\.manifest\.json differ in their settings/,
    );
    // Shards of the same output split two ways.
    await ok(synth("--out", out, "--shard", "1/2", "--max-rounds", "1"));
    await refused(
      ["merge", "--overwrite", "--out", out],
      /split different ways: .*shard 0 of 3.*shard 1 of 2/,
    );
    // An unsharded output is not a shard.
    await refused(["merge", "--overwrite", "--out", out, whole], /output of an unsharded synth run/);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "synth: bad shard settings fail before any work",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const o = join(dir, "o.jsonl");
    await refused(["synth", "--shard", "3/3", "--out", o], /shard index 3 is not below the shard count 3/);
    await refused(["synth", "--shards", "2", "--out", o], /needs a scheduler's index/);
    await refused(["merge", "--out", o], /no shard outputs .*o\.shard-i-of-n\.jsonl found/);
    await refused(["merge"], /--out F\.jsonl is required/);
    await Deno.remove(dir, { recursive: true });
  },
});
