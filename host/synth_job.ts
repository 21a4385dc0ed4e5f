/**
 * The resumable synth job on disk: reads the data file, opens the model, runs synth and, after
 * every round, rewrites the JSONL and its manifest atomically. Rerunning the same job resumes
 * after its last completed round (the settings, the model files' and the data's hashes must
 * match) and produces the same bytes as an uninterrupted run. A shard (`shard`) runs every n-th
 * round into its own file, which `cli.ts merge` combines.
 *
 * cli/synth.ts parses the flags into {@link SynthJobOptions}, prints the events and calls
 * {@link runSynthJob}; `experiment` calls it the same way.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  type RoundKey,
  runSynth,
  type SynthEvent,
  type SynthOptions,
  type SynthRecord,
} from "../admm/synth.ts";
import {
  canonicalRoundKeys,
  roundKeyId,
  type Shard,
  shardOutputPath,
  shardRoundKeys,
} from "../admm/shard.ts";
import { SynthLedger, type SynthManifest, synthSettingsRecord } from "../api/synth_manifest.ts";
import { resolveSynthSettings, type SynthSettings } from "../api/synth_settings.ts";
import type { TextCodec } from "../admm/synth.ts";
import { parseJsonl } from "../data/examples.ts";
import { defaultContext, type GpuContext } from "../kernels/device.ts";
import type { CausalLM } from "../models/model.ts";
import { writeFileAtomic } from "./atomic.ts";
import { loadModel, loadTokenizer } from "./files.ts";
import { resolveModel } from "./hub.ts";
import { bundledData, bundledModel } from "./assets.ts";

/** The default output file (in the current folder). */
export const DEFAULT_OUT = "synthetic.jsonl";

/** A problem with the job's files or settings; the CLI prints it as one line (exit code 2). */
export class SynthJobError extends Error {
  /** The error's name. */
  override name = "SynthJobError";
  /** Printed without a stack trace. */
  readonly userFacing = true;
  /** Bad input. */
  readonly exitCode = 2;
}

/** A model opened for the job: the model, its codec, and the folder its files are in (hashed). */
export interface JobModel {
  /** The model, on the GPU. */
  model: CausalLM;
  /** Its tokenizer. */
  codec: TextCodec;
  /** The folder of its files. */
  dir: string;
}

/** Opens `spec` (folder or hub id); the CLI passes one that reports download progress. */
export type JobModelOpener = (
  ctx: GpuContext,
  spec: string,
  options: { weights: "f32" | "f16" },
) => Promise<JobModel>;

/** Settings of a job: synth's (all optional, as in `synth()`) and the files'. */
export interface SynthJobOptions extends SynthSettings {
  /** Output JSONL (default {@link DEFAULT_OUT}); the manifest goes beside it. */
  out?: string;
  /** Model folder or hub id `org/name[@rev]` (default: the bundled gpt2-d128, {@link bundledModel}). */
  model?: string;
  /** Labelled JSONL (default: the bundled SST-2 validation split, {@link bundledData}). */
  data?: string;
  /** Text field of the data (default "text"). */
  textField?: string;
  /** Integer label field of the data (default "label"). */
  labelField?: string;
  /** "f16" stores the model's matrices in half precision. */
  weights?: "f32" | "f16";
  /** Start over even if `out` holds a run with other settings. */
  overwrite?: boolean;
  /**
   * What to tell a user whose `out` cannot be resumed (damaged, or another run's); default the
   * CLI's advice (`--overwrite`, another `--out`). A caller without those flags gives its own.
   */
  restartHint?: string;
  /** Stop after this many rounds in this invocation (rerun to continue). */
  maxRounds?: number;
  /** Run only this shard's rounds, into its own file. */
  /** Run only this shard's rounds, into its own file. */
  shard?: Shard | null;
  /** The command line, recorded in the manifest. */
  command?: string[];
  /** The GPU context (default: the process's shared one). */
  ctx?: GpuContext;
  /** How the model is opened (default: {@link openJobModel}). */
  openModel?: JobModelOpener;
  /** Called once the model is open, before any round (the CLI tunes matmul tiles here). */
  prepare?: (model: CausalLM, options: SynthOptions) => Promise<void>;
  /** Progress; the CLI prints it. */
  onEvent?: (e: SynthJobEvent) => void | Promise<void>;
}

/** Events of a job: synth's, and the job's own. */
export type SynthJobEvent =
  | SynthEvent
  | {
    kind: "start";
    options: SynthOptions;
    /** True when the CPU-sized defaults replaced the paper's. */
    cpuDefaults: boolean;
    adapter: string;
    /** Rounds of this job in all (this shard's only, for a shard). */
    totalRounds: number;
    out: string;
  }
  | { kind: "resume"; completedRounds: number; out: string }
  | { kind: "saved"; roundsDone: number; totalRounds: number; records: SynthRecord[] };

/** What a job leaves behind. */
export interface SynthJobResult {
  /** The JSONL and manifest written. */
  out: string;
  /** The manifest beside it. */
  manifestPath: string;
  /** Every record in `out` (earlier invocations' included). */
  records: SynthRecord[];
  /** The manifest as written last. */
  manifest: SynthManifest;
  /** Rounds still to run (rerun the job to continue). */
  roundsLeft: number;
}

/** The JSONL a job writes for `out` (a shard's own file when sharded) and its manifest. */
export function synthJobPaths(out: string, shard?: Shard | null): { out: string; manifest: string } {
  const file = shard ? shardOutputPath(out, shard) : out;
  return { out: file, manifest: file.replace(/\.jsonl$/, "") + ".manifest.json" };
}

/** The default opener: a folder, or a hub id downloaded into the cache. */
export async function openJobModel(
  ctx: GpuContext,
  spec: string,
  options: { weights: "f32" | "f16" },
): Promise<JobModel> {
  const { dir } = await resolveModel(spec);
  const codec = await loadTokenizer(dir);
  const model = await loadModel(ctx, dir, { weights: options.weights });
  return { model, codec, dir };
}

/**
 * The records of a synth output; a damaged line (e.g. truncated by a full disk) is named, with
 * `restartHint` saying what to do.
 */
export function parseRecords(
  text: string,
  path: string,
  restartHint = "pass --overwrite to start over",
): SynthRecord[] {
  const records: SynthRecord[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    try {
      records.push(JSON.parse(line) as SynthRecord);
    } catch {
      throw new SynthJobError(
        `synth: ${path}:${i + 1} is not a complete JSON line (damaged output); ${restartHint}`,
      );
    }
  });
  return records;
}

/** A manifest read for resuming, with an error that says what to do when it is damaged. */
function parseManifest(
  text: string,
  path: string,
  restartHint = "pass --overwrite to start over or choose another --out",
): SynthManifest {
  let m: Partial<SynthManifest> | null = null;
  try {
    m = JSON.parse(text);
  } catch {
    // reported below
  }
  if (
    !m || typeof m !== "object" || !Array.isArray(m.completed) || typeof m.settings !== "object" || !m.model
  ) {
    throw new SynthJobError(
      `synth: manifest '${path}' is damaged (not the JSON synth writes); ${restartHint}`,
    );
  }
  return m as SynthManifest;
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new SynthJobError(`${what} '${path}' does not exist`);
    throw new SynthJobError(`cannot read ${what} '${path}': ${(e as Error).message}`);
  }
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** sha256 of a file's bytes, hex (streamed, so big weights are not held twice). */
export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  using f = await Deno.open(path, { read: true });
  const buf = new Uint8Array(1 << 20);
  while (true) {
    const n = await f.read(buf);
    if (n === null) break;
    h.update(buf.subarray(0, n));
  }
  return h.digest("hex");
}

/** sha256 of every config, tokenizer and weights file of a model folder, by name. */
async function modelFileHashes(dir: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && /\.(json|safetensors)$/.test(e.name)) files[e.name] = await sha256File(join(dir, e.name));
  }
  return files;
}

/** Runs (or resumes) a synth job; see the module comment. */
export async function runSynthJob(o: SynthJobOptions = {}): Promise<SynthJobResult> {
  // The bundled defaults are fetched only when used (from a URL, on first use).
  const dataPath = o.data ?? await bundledData();
  const modelSpec = o.model ?? await bundledModel();
  const weights = o.weights ?? "f32";
  const { out, manifest: manifestPath } = synthJobPaths(o.out ?? DEFAULT_OUT, o.shard);
  const emit = async (e: SynthJobEvent) => await o.onEvent?.(e);
  const data = parseJsonl(await readText(dataPath, "data file"), {
    textField: o.textField ?? "text",
    labelField: o.labelField ?? "label",
    source: dataPath,
  });
  if (data.length === 0) {
    throw new SynthJobError(`synth: data file '${dataPath}' has no examples (it is empty)`);
  }

  const ctx = o.ctx ?? (await defaultContext());
  const { options, cpuDefaults } = resolveSynthSettings(o, ctx.isCpuAdapter);
  const { task } = options;
  // This shard's rounds; the other rounds count as done, so runSynth skips them.
  const allKeys = canonicalRoundKeys(
    task.labelWords.length,
    options.rhos,
    Math.floor(options.perClass / options.batch),
  );
  const shardKeys = o.shard ? new Set(shardRoundKeys(allKeys, o.shard).map(roundKeyId)) : undefined;
  const totalRounds = shardKeys?.size ?? allKeys.length;
  await emit({ kind: "start", options, cpuDefaults, adapter: ctx.adapterName, totalRounds, out });

  const { model, codec, dir: modelDir } = await (o.openModel ?? openJobModel)(ctx, modelSpec, { weights });
  try {
    const positions = model.config.positionEmbedding === "learned" ? model.config.maxPositions : Infinity;
    if (options.length > positions) {
      throw new SynthJobError(`synth: --length ${options.length} exceeds the model's ${positions} positions`);
    }
    await o.prepare?.(model, options);

    const settings = synthSettingsRecord(options, {
      // Only when not the defaults, so that manifests written before these existed still match.
      ...(weights === "f16" ? { weights } : {}),
      ...(o.textField !== undefined && o.textField !== "text" ? { textField: o.textField } : {}),
      ...(o.labelField !== undefined && o.labelField !== "label" ? { labelField: o.labelField } : {}),
    });
    const files = await modelFileHashes(modelDir);
    const dataHash = await sha256File(dataPath);
    let ledger = new SynthLedger(task.labelWords);
    if (!o.overwrite && (await exists(manifestPath)) && (await exists(out))) {
      const old = parseManifest(await readText(manifestPath, "manifest"), manifestPath, o.restartHint);
      const same = JSON.stringify(old.settings) === JSON.stringify(settings) &&
        JSON.stringify(old.model?.files) === JSON.stringify(files) && old.data?.sha256 === dataHash &&
        old.shard?.index === o.shard?.index && old.shard?.count === o.shard?.count;
      if (!same) {
        throw new SynthJobError(
          `synth: ${out} holds a run with other settings, model or data; ${
            o.restartHint ?? "pass --overwrite to replace it or choose another --out"
          }`,
        );
      }
      const completed = old.completed;
      // The JSONL is written before the manifest: drop records of a round the manifest missed.
      const records = parseRecords(await readText(out, "output"), out, o.restartHint).filter((r) =>
        completed.some((c) => c.rho === r.rho && c.classIndex === r.label && c.round === r.round)
      );
      ledger = new SynthLedger(task.labelWords, {
        records,
        completed,
        targets: old.targets ?? {},
        timings: old.timings ?? {},
        wallSeconds: old.wallSeconds ?? 0,
        invocations: old.invocations ?? [],
      });
      await emit({ kind: "resume", completedRounds: completed.length, out });
    }
    const maxRounds = o.maxRounds ?? Infinity;
    // A round counts as done when it is in the manifest, another shard's, or past maxRounds.
    const isDone = (k: RoundKey) =>
      ledger.roundsThisRun >= maxRounds || (shardKeys !== undefined && !shardKeys.has(roundKeyId(k))) ||
      ledger.isCompleted(k);
    const manifest = () =>
      ledger.manifest(
        {
          settings,
          model: { spec: modelSpec, dir: modelDir, files },
          data: { path: dataPath, sha256: dataHash },
          adapter: ctx.adapterName,
          shard: o.shard ?? undefined,
        },
        {
          ...(o.command ? { command: o.command } : {}),
          runtime: `Deno ${Deno.version.deno}`,
          adapter: ctx.adapterName,
          cpuDefaults,
        },
      );
    const save = async () => await writeFileAtomic(manifestPath, JSON.stringify(manifest(), null, 2) + "\n");

    await runSynth(model, codec, data, options, isDone, async (e) => {
      ledger.record(e);
      await emit(e);
      if (e.kind !== "round") return;
      // JSONL first, manifest second: a manifest always describes its JSONL.
      await writeFileAtomic(out, ledger.records.map((r) => JSON.stringify(r)).join("\n") + "\n");
      await save();
      await emit({
        kind: "saved",
        roundsDone: ledger.completed.length,
        totalRounds,
        records: e.records,
      });
    });
    const final = manifest();
    await writeFileAtomic(manifestPath, JSON.stringify(final, null, 2) + "\n");
    if (ledger.records.length === 0) await writeFileAtomic(out, "");
    return {
      out,
      manifestPath,
      records: ledger.records,
      manifest: final,
      roundsLeft: totalRounds - ledger.completed.length,
    };
  } finally {
    // Jobs share the process's GPU context (experiment runs several).
    model.dispose();
  }
}
