/**
 * `merge`: combines the shard outputs of a sharded `synth` run (`--shard i/n`, Slurm job arrays,
 * Kubernetes Indexed Jobs) into the file a one-process run of the same command writes.
 *
 * What "the same" covers: the merged JSONL is byte for byte the one-process JSONL (records in the
 * one-process order: class, then ρ, then round), provided every shard ran on the same kind of
 * adapter with the same matmul tiles (see docs/scale-out.md). The merged manifest has the same
 * keys in the same order and equal tool, version, settings, model, data, completed, targets and
 * allowedTokens; `timings` and `wallSeconds` are the sums over the shards (compute spent, not
 * elapsed time), `adapter` lists the shards' adapters when they differ, and `invocations` (command
 * lines, start and end times, runtimes) lists every shard's. Model and data paths
 * are shard 0's (nodes may keep the model in different places; their hashes must agree).
 */
import { basename, dirname, join } from "node:path";
import { canonicalRoundKeys, parseShardOutputPath, roundKeyId, shardRoundKeys } from "../admm/shard.ts";
import type { RoundKey } from "../admm/synth.ts";
import type { SynthManifest } from "../api/synth_manifest.ts";
import { type Command, parseFlags, resultPrinter } from "./args.ts";
import { exists, readText, writeFileAtomic } from "./io.ts";

const HELP = `Usage: cli.ts merge --out F.jsonl [SHARD.jsonl ...] [--overwrite]

Combines the outputs of a sharded synth run into the JSONL (+ manifest) that one process running
the same command would have written. With no SHARD files it takes every F.shard-i-of-n.jsonl beside
--out. Refuses, naming the files, when a shard is missing, appears twice, is unfinished, or ran
with other settings, model or data.

  --out F.jsonl     the merged output (the --out the shards were run with); manifest beside it
  --overwrite       replace an existing F.jsonl
  --json            print the result as one JSON object on stdout

Examples
  deno run -A cli.ts synth --shard 0/2 --out runs/sst2.jsonl    # on one GPU or node
  deno run -A cli.ts synth --shard 1/2 --out runs/sst2.jsonl    # on another
  deno run -A cli.ts merge --out runs/sst2.jsonl
  deno run -A cli.ts merge --out all.jsonl a/x.shard-0-of-2.jsonl b/x.shard-1-of-2.jsonl

A failed or lost shard is rerun alone with its own flag (--shard 1/2, or sbatch --array=1 with
--shards 2 in the batch script); it resumes from its last finished round. See docs/scale-out.md.`;

/** A shard set that cannot be merged; printed without a stack trace. */
export class MergeError extends Error {
  override name = "MergeError";
  readonly userFacing = true;
}

/**
 * A shard's manifest as host/synth_job.ts writes it; merge reads the settings that decide the
 * round order, and reads `invocations` as optional (manifests written before they were recorded).
 */
type ShardManifest = Omit<SynthManifest, "settings" | "invocations" | "model" | "data"> & {
  settings:
    & { labelWords: string[]; rhos: number[]; perClass: number; batch: number }
    & Record<string, unknown>;
  model: NonNullable<SynthManifest["model"]>;
  data: NonNullable<SynthManifest["data"]>;
  invocations?: SynthManifest["invocations"];
};

interface LoadedShard {
  file: string;
  manifestFile: string;
  manifest: ShardManifest;
  index: number;
  count: number;
  /** JSONL lines, exactly as written by synth. */
  lines: string[];
}

function manifestPathOf(out: string): string {
  return out.replace(/\.jsonl$/, "") + ".manifest.json";
}

/** Every "OUT.shard-i-of-n.jsonl" beside `out`, sorted by name. */
async function findShardFiles(out: string): Promise<string[]> {
  const dir = dirname(out);
  const stem = basename(out).replace(/\.jsonl$/, "");
  const found: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      const p = parseShardOutputPath(e.name);
      if (e.isFile && p && p.out === `${stem}.jsonl`) found.push(join(dir, e.name));
    }
  } catch (e) {
    throw new MergeError(`cannot list '${dir}' for shard outputs: ${(e as Error).message}`);
  }
  return found.sort();
}

async function loadShard(file: string): Promise<LoadedShard> {
  const manifestFile = manifestPathOf(file);
  if (!(await exists(manifestFile))) {
    throw new MergeError(`${file} has no manifest ${manifestFile}: it is not a finished synth shard`);
  }
  let manifest: ShardManifest;
  try {
    manifest = JSON.parse(await readText(manifestFile, "manifest"));
  } catch (e) {
    throw new MergeError(`${manifestFile} is not valid JSON (${(e as Error).message})`);
  }
  if (manifest.tool !== "gradmm-ts synth" || !manifest.settings || !Array.isArray(manifest.completed)) {
    throw new MergeError(`${manifestFile} is not a gradmm-ts synth manifest`);
  }
  if (!manifest.shard) {
    throw new MergeError(`${file} is the output of an unsharded synth run (its manifest has no shard)`);
  }
  const lines = (await readText(file, "shard output")).split("\n").filter((l) => l.trim());
  return { file, manifestFile, manifest, index: manifest.shard.index, count: manifest.shard.count, lines };
}

/** Checks that the shards are exactly 0..n-1 of one n; returns them in index order. */
function checkShardSet(shards: LoadedShard[]): LoadedShard[] {
  const counts = [...new Set(shards.map((s) => s.count))];
  if (counts.length > 1) {
    throw new MergeError(
      "the shards come from runs split different ways: " +
        shards.map((s) => `${s.file} (shard ${s.index} of ${s.count})`).join(", "),
    );
  }
  const n = counts[0];
  const byIndex = new Map<number, LoadedShard[]>();
  for (const s of shards) byIndex.set(s.index, [...(byIndex.get(s.index) ?? []), s]);
  for (const [i, list] of byIndex) {
    if (list.length > 1) {
      throw new MergeError(
        `shard ${i} of ${n} appears more than once: ${list.map((s) => s.file).join(", ")}`,
      );
    }
  }
  const missing = Array.from({ length: n }, (_, i) => i).filter((i) => !byIndex.has(i));
  if (missing.length > 0) {
    const example = shards[0].file.replace(/\.shard-\d+-of-\d+\.jsonl$/, "");
    throw new MergeError(
      `missing shard(s) ${missing.join(", ")} of ${n}: expected ${
        missing.map((i) => `${example}.shard-${i}-of-${n}.jsonl`).join(", ")
      }; run each with synth --shard i/${n} and the same flags`,
    );
  }
  return Array.from({ length: n }, (_, i) => byIndex.get(i)![0]);
}

/** Checks that every shard ran the same job as shard 0: same tool, settings, model and data. */
function checkSameJob(shards: LoadedShard[]): void {
  const ref = shards[0].manifest;
  const fields: [string, (m: ShardManifest) => unknown][] = [
    ["tool version", (m) => m.version],
    ["settings", (m) => m.settings],
    ["model files", (m) => m.model.files],
    ["data", (m) => m.data.sha256],
    ["allowed tokens", (m) => m.allowedTokens],
  ];
  for (const s of shards.slice(1)) {
    for (const [what, get] of fields) {
      if (JSON.stringify(get(s.manifest)) !== JSON.stringify(get(ref))) {
        throw new MergeError(
          `${s.manifestFile} and ${shards[0].manifestFile} differ in their ${what}: ` +
            "the shards were not run with the same command, model and data",
        );
      }
    }
  }
}

/** The records of each round of a shard, checking the shard finished exactly its own rounds. */
function roundsOf(s: LoadedShard, expected: RoundKey[], batch: number): Map<string, string[]> {
  const mine = new Set(expected.map(roundKeyId));
  const done = new Set(s.manifest.completed.map(roundKeyId));
  const foreign = [...done].filter((k) => !mine.has(k));
  if (foreign.length > 0) {
    throw new MergeError(
      `${s.manifestFile} lists round(s) that belong to other shards (${foreign[0]}): it was not split ` +
        `${s.index}/${s.count} over the same settings`,
    );
  }
  const missing = expected.filter((k) => !done.has(roundKeyId(k)));
  if (missing.length > 0) {
    throw new MergeError(
      `shard ${s.index} of ${s.count} (${s.file}) has finished ${done.size} of its ${expected.length} ` +
        `round(s), next: ${roundKeyId(missing[0])}; rerun that shard (synth --shard ${s.index}/${s.count} ` +
        "with the same flags resumes it)",
    );
  }
  const byKey = new Map<string, string[]>(expected.map((k) => [roundKeyId(k), []]));
  s.lines.forEach((line, i) => {
    let r: { rho: number; label: number; round: number };
    try {
      r = JSON.parse(line);
    } catch {
      throw new MergeError(`${s.file}, line ${i + 1}: not valid JSON`);
    }
    const id = roundKeyId({ rho: r.rho, classIndex: r.label, round: r.round });
    const list = byKey.get(id);
    if (!list) throw new MergeError(`${s.file}, line ${i + 1}: a record of ${id}, which is not this shard's`);
    list.push(line);
  });
  for (const [id, list] of byKey) {
    if (list.length !== batch) {
      throw new MergeError(`${s.file} holds ${list.length} record(s) of ${id}, expected ${batch} (--batch)`);
    }
  }
  return byKey;
}

/** The merged JSONL text and manifest object of a complete, consistent set of shards. */
export function mergeShards(
  loaded: LoadedShard[],
  warn: (line: string) => void = () => {},
): { jsonl: string; manifest: Record<string, unknown> } {
  const shards = checkShardSet(loaded);
  checkSameJob(shards);
  const ref = shards[0].manifest;
  const { labelWords, rhos, perClass, batch } = ref.settings;
  const keys = canonicalRoundKeys(labelWords.length, rhos, Math.floor(perClass / batch));
  const linesByKey = new Map<string, string[]>();
  for (const s of shards) {
    for (const [id, lines] of roundsOf(s, shardRoundKeys(keys, s), batch)) linesByKey.set(id, lines);
  }
  const lines = keys.flatMap((k) => linesByKey.get(roundKeyId(k))!);

  // Targets: one per class, identical in every shard that computed it (same adapter and tiles).
  const targets: Record<string, unknown> = {};
  for (const word of labelWords) {
    const reports = shards.filter((s) => word in s.manifest.targets).map((s) => s.manifest.targets[word]);
    if (reports.length === 0) continue;
    targets[word] = reports[0];
    if (reports.some((r) => JSON.stringify(r) !== JSON.stringify(reports[0]))) {
      warn(
        `note: the shards computed different targets for class '${word}' (different adapters or ` +
          "matmul tiles?); the merged records are valid, but not byte-identical to a one-process run",
      );
    }
  }
  const timings: Record<string, number> = {};
  for (const s of shards) {
    for (const [k, sec] of Object.entries(s.manifest.timings)) timings[k] = (timings[k] ?? 0) + sec;
  }
  const adapters = [...new Set(shards.map((s) => s.manifest.adapter))];
  // Spread shard 0's manifest so the keys keep synth's order; only the shard marker goes.
  const { shard: _shard, ...rest } = ref;
  const manifest = {
    ...rest,
    adapter: adapters.join(", "),
    completed: keys,
    targets,
    timings,
    wallSeconds: shards.reduce((a, s) => a + s.manifest.wallSeconds, 0),
    invocations: shards.flatMap((s) => s.manifest.invocations ?? []),
  };
  return { jsonl: lines.length > 0 ? lines.join("\n") + "\n" : "", manifest };
}

export const mergeCommand: Command = {
  name: "merge",
  summary: "combine the shard outputs of a sharded synth run into one output",
  help: HELP,
  async run(args) {
    const { values: v, positionals } = parseFlags("merge", args, {
      out: { type: "string" },
      overwrite: { type: "boolean" },
      json: { type: "boolean" },
    }, { positionals: true });
    if (v.help) {
      console.log(HELP);
      return 0;
    }
    if (!v.out) throw new MergeError("merge: --out F.jsonl is required (the --out the shards were run with)");
    const out = v.out;
    const manifestPath = manifestPathOf(out);
    const files = positionals.length > 0 ? positionals : await findShardFiles(out);
    if (files.length === 0) {
      const stem = out.replace(/\.jsonl$/, "");
      throw new MergeError(
        `merge: no shard outputs ${stem}.shard-i-of-n.jsonl found; name the shard files or check --out`,
      );
    }
    if (!v.overwrite && ((await exists(out)) || (await exists(manifestPath)))) {
      throw new MergeError(`merge: ${out} exists; pass --overwrite to replace it`);
    }
    const loaded: LoadedShard[] = [];
    for (const f of files) loaded.push(await loadShard(f));
    const { jsonl, manifest } = mergeShards(loaded, (line) => console.error(line));
    // JSONL first, manifest second, as synth writes them: a manifest always describes its JSONL.
    await writeFileAtomic(out, jsonl);
    await writeFileAtomic(manifestPath, JSON.stringify(manifest, null, 2) + "\n");
    const records = jsonl ? jsonl.split("\n").length - 1 : 0;
    console.error(`merged ${loaded.length} shard(s): ${records} texts in ${out} (manifest: ${manifestPath})`);
    resultPrinter(v.json).json({
      out,
      manifest: manifestPath,
      shards: loaded.map((s) => s.file),
      texts: records,
    });
    return 0;
  },
};
