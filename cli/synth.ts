/**
 * `synth`: turn a few dozen labelled examples into a synthetic set whose output-layer gradient
 * matches theirs (GRADMM). Reads flags and files, prints progress, writes the JSONL and its
 * manifest atomically after every round, and resumes after the last completed round.
 */
import { fileURLToPath } from "node:url";
import { dirname, join, resolve } from "node:path";
import { type AdmmSettings, PAPER_SETTINGS } from "../admm/admm.ts";
import { parseJsonl } from "../admm/data.ts";
import {
  type RoundKey,
  runSynth,
  type SynthEvent,
  type SynthOptions,
  type SynthRecord,
} from "../admm/synth.ts";
import type { PrivacyAccount } from "../admm/dp.ts";
import { REFINE_DEFAULTS } from "../admm/refine.ts";
import { LM_REFINE_DEFAULTS } from "../admm/refine_lm.ts";
import { customTask, getTask, type TaskSpec } from "../admm/tasks.ts";
import {
  canonicalRoundKeys,
  resolveShard,
  roundKeyId,
  type Shard,
  shardOutputPath,
  shardRoundKeys,
} from "../admm/shard.ts";
import { defaultContext } from "../kernels/device.ts";
import { openModel, WEIGHTS_HELP, weightsFlag } from "./model.ts";
import { tuneForModel } from "./tune.ts";
import { type Command, numberFlag, parseFlags, UsageError } from "./args.ts";
import { checkOutput, exists, formatDuration, readText, sha256File, writeFileAtomic } from "./io.ts";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** The built-in default model and data: shipped in the repository so synth works offline. */
export const DEFAULT_MODEL = join(ROOT, "assets", "gpt2-d128");
export const DEFAULT_DATA = join(ROOT, "assets", "sst2-validation.jsonl");
const VERSION = "0.1.0";

/** CPU-sized settings: a run of minutes on a software adapter instead of hours. */
const CPU_DEFAULTS = { perClass: 10, outerSteps: 6, innerSteps: 10, initCandidates: 16 };

const HELP = `Usage: cli.ts synth [flags]

Generates synthetic labelled texts by gradient matching (GRADMM). With no flags it runs the
built-in default: 50 SST-2 validation sentences and the bundled gpt2-d128 model, writing
synthetic.jsonl (+ synthetic.manifest.json) in the current directory. On a CPU adapter the
defaults are scaled down (printed at start); --paper restores the paper's settings.

Data and task
  --data F.jsonl          real labelled examples (default: bundled SST-2 validation split)
  --text-field NAME       text field (default text)
  --label-field NAME      integer label field (default label)
  --task NAME             sst2 | rotten_tomatoes | imdb | emotion (default sst2)
  --template T            custom task: "{text}<suffix>", e.g. "{text} It was "
  --label-words W0,W1     custom task: label word per class
  --prefix TEXT           custom task: decoder prefix ({label} = label word; default "The")
  --real-pool N           stratified pool size (default 100)
  --real N                pool examples used for the target (default 50)

Model and output
  --model DIR|ORG/NAME[@REV]  Hugging Face model (default: bundled gpt2-d128)
  --out F.jsonl           output (default synthetic.jsonl); manifest beside it
  --overwrite             start over even if --out holds a run with other settings
  --max-rounds N          stop after N rounds in this invocation (rerun the command to continue)

Sharding (many processes or GPUs; combine the shards with 'cli.ts merge', see docs/scale-out.md)
  --shard i/n             run shard i of n (0-based): every n-th round; writes OUT.shard-i-of-n.jsonl
                          Without it the shard comes from a Slurm job array (SLURM_ARRAY_TASK_ID)
                          or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with --shards N)
  --shards N              number of shards; the scheduler index (JOB_COMPLETION_INDEX or
                          SLURM_ARRAY_TASK_ID) is then the shard index: resubmit one with --array=i
  --shard none            run every round even inside an array task
${WEIGHTS_HELP}

GRADMM (defaults: the paper's; CPU adapters use smaller ones unless --paper)
  --per-class N           texts per class (paper 100, CPU 10); a multiple of --batch
  --batch N               texts optimised jointly per round (10)
  --rho R[,R...]          ADMM penalty; a list runs a sweep (0.7)
  --outer-steps N         ADMM iterations per round (paper 30, CPU 6)
  --inner-steps N         Adam steps per x-update (paper 50, CPU 10)
  --lr X                  Adam learning rate for x (0.008)
  --topk K                cosine candidates per position (200)
  --init-candidates N     random initial batches to pick from (paper 500, CPU 16)
  --length N              tokens per sequence incl. suffix (default: mean real length per class)
  --loss cos|l2           matching loss (cos)
  --select total|discrete which iterate to decode: official 'total' or the best projected tokens
  --method M              official (the paper's code path, default) | discrete (= --select
                          discrete) | refine (best projection, then token swaps proposed from the
                          matching-loss gradient, kept only when the exact loss drops and the
                          text's NLL stays within --refine-nll-slack of its start; admm/refine.ts)
                          | refine-lm (the official decode, then swaps ranked by the gradient and
                          the model's log-probabilities, kept when loss + λ·mean NLL drops and the
                          batch's mean NLL stays within --refine-nll-slack of its start;
                          admm/refine_lm.ts; at half --outer-steps it costs what official costs)
  --official              same as --method official
  --refine-iterations N   refinement iterations (40; each ≈ 5 forward/backward passes)
  --refine-nll-slack X    nats/token the NLL may rise during refinement (refine 0.3, refine-lm 0)
  --refine-lambda X       refine-lm: weight λ of the mean NLL in the objective (0.15)
  --seed N                seed for the real pool, initialisation and DP noise (42)
  --paper                 use the paper's settings even on a CPU adapter

Differential privacy (all three enable it)
  --dp-epsilon E          privacy budget ε
  --dp-delta D            δ (default 1e-4)
  --dp-clip C             per-example clipping norm (default 1.0)
  --dp-calibration analytic|official
                          σ from (ε, δ): the analytic Gaussian mechanism (default, least noise
                          for the guarantee) or the paper code's formula
  The run's (ε, δ) (parallel composition over the class targets) is printed and recorded in the
  manifest's "privacy"; everything after the noisy targets is post-processing.`;

interface Manifest {
  tool: string;
  version: string;
  settings: Record<string, unknown>;
  model: { spec: string; dir: string; files: Record<string, string> };
  data: { path: string; sha256: string };
  adapter: string;
  completed: RoundKey[];
  targets: Record<string, unknown>;
  timings: Record<string, number>;
  wallSeconds: number;
  allowedTokens?: number;
  /** Set on a shard's manifest only (`cli.ts merge` drops it). */
  shard?: Shard;
  /** DP runs: the (ε, δ) spent and what it does not cover. */
  privacy?: PrivacyAccount;
}

function parseList(s: string, what: string): number[] {
  const out = s.split(",").map((x) => Number(x.trim()));
  if (out.length === 0 || out.some((x) => !Number.isFinite(x) || x <= 0)) {
    throw new UsageError(`synth: --${what} must be a comma-separated list of positive numbers, got '${s}'`);
  }
  return out;
}

/** A manifest read for resuming, with an error that says what to do when it is damaged. */
function parseManifest(text: string, path: string): Manifest {
  let m: Partial<Manifest> | null = null;
  try {
    m = JSON.parse(text);
  } catch {
    // reported below
  }
  if (
    !m || typeof m !== "object" || !Array.isArray(m.completed) || typeof m.settings !== "object" || !m.model
  ) {
    throw new UsageError(
      `synth: manifest '${path}' is damaged (not the JSON synth writes); pass --overwrite to start over or choose another --out`,
    );
  }
  return m as Manifest;
}

/** The records of a synth output; a damaged line (e.g. truncated by a full disk) is named. */
export function parseRecords(text: string, path: string): SynthRecord[] {
  const records: SynthRecord[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    try {
      records.push(JSON.parse(line) as SynthRecord);
    } catch {
      const where = `${path}:${i + 1}`;
      throw new UsageError(
        `synth: ${where} is not a complete JSON line (damaged output); pass --overwrite to start over`,
      );
    }
  });
  return records;
}

export const synthCommand: Command = {
  name: "synth",
  summary: "generate synthetic labelled texts by gradient matching (GRADMM)",
  help: HELP,
  async run(args) {
    const { values: v } = parseFlags("synth", args, {
      data: { type: "string" },
      "text-field": { type: "string" },
      "label-field": { type: "string" },
      task: { type: "string" },
      template: { type: "string" },
      "label-words": { type: "string" },
      prefix: { type: "string" },
      "real-pool": { type: "string" },
      real: { type: "string" },
      model: { type: "string" },
      out: { type: "string" },
      overwrite: { type: "boolean" },
      "max-rounds": { type: "string" },
      "per-class": { type: "string" },
      batch: { type: "string" },
      rho: { type: "string" },
      "outer-steps": { type: "string" },
      "inner-steps": { type: "string" },
      lr: { type: "string" },
      topk: { type: "string" },
      "init-candidates": { type: "string" },
      length: { type: "string" },
      loss: { type: "string" },
      select: { type: "string" },
      method: { type: "string" },
      official: { type: "boolean" },
      "refine-iterations": { type: "string" },
      "refine-nll-slack": { type: "string" },
      "refine-lambda": { type: "string" },
      seed: { type: "string" },
      paper: { type: "boolean" },
      "dp-epsilon": { type: "string" },
      "dp-delta": { type: "string" },
      "dp-clip": { type: "string" },
      "dp-calibration": { type: "string" },
      weights: { type: "string" },
      shard: { type: "string" },
      shards: { type: "string" },
    });
    if (v.help) {
      console.log(HELP);
      return 0;
    }
    const num = (name: string, fallback: number, opts?: Parameters<typeof numberFlag>[4]) =>
      numberFlag("synth", name, (v as Record<string, unknown>)[name], fallback, opts);

    // ---- everything that can be checked before touching the GPU
    let task: TaskSpec;
    if (v.template || v["label-words"]) {
      if (!v.template || !v["label-words"]) {
        throw new UsageError("synth: a custom task needs both --template and --label-words");
      }
      task = customTask({
        template: v.template,
        labelWords: v["label-words"].split(",").map((w) => w.trim()),
        prefix: v.prefix,
      });
    } else {
      task = getTask(v.task ?? "sst2");
    }
    const weights = weightsFlag("synth", v.weights);
    const loss = v.loss ?? "cos";
    if (loss !== "cos" && loss !== "l2") {
      throw new UsageError(`synth: --loss must be cos or l2, got '${loss}'`);
    }
    const method = v.official ? "official" : (v.method ?? "official");
    if (!["official", "discrete", "refine", "refine-lm"].includes(method)) {
      throw new UsageError(
        `synth: --method must be official, discrete, refine or refine-lm, got '${method}'`,
      );
    }
    if (v.official && v.method !== undefined && v.method !== "official") {
      throw new UsageError(`synth: --official contradicts --method ${v.method}; pass one of them`);
    }
    // refine-lm starts from the official decode: the most fluent one.
    const select = v.select ?? (method === "official" || method === "refine-lm" ? "total" : "discrete");
    if (select !== "total" && select !== "discrete") {
      throw new UsageError(`synth: --select must be total or discrete, got '${select}'`);
    }
    const dpRequested = v["dp-epsilon"] !== undefined;
    if (!dpRequested && (v["dp-delta"] !== undefined || v["dp-clip"] !== undefined)) {
      throw new UsageError("synth: --dp-delta and --dp-clip need --dp-epsilon");
    }
    const calibration = v["dp-calibration"] ?? "analytic";
    if (calibration !== "analytic" && calibration !== "official") {
      throw new UsageError(`synth: --dp-calibration must be analytic or official, got '${calibration}'`);
    }
    if (!dpRequested && v["dp-calibration"] !== undefined) {
      throw new UsageError("synth: --dp-calibration needs --dp-epsilon");
    }
    const dataPath = v.data ?? DEFAULT_DATA;
    const data = parseJsonl(await readText(dataPath, "data file"), {
      textField: v["text-field"] ?? "text",
      labelField: v["label-field"] ?? "label",
      source: dataPath,
    });
    if (data.length === 0) {
      throw new UsageError(`synth: data file '${dataPath}' has no examples (it is empty)`);
    }
    // A shard writes its own file beside --out, so that every array task can share one command line.
    const shard = resolveShard({ shard: v.shard, shards: v.shards }, Deno.env.toObject());
    const out = shard ? shardOutputPath(v.out ?? "synthetic.jsonl", shard) : v.out ?? "synthetic.jsonl";
    const manifestPath = out.replace(/\.jsonl$/, "") + ".manifest.json";
    // Before any compute: the output must be writable, not an input, and not someone else's file.
    await checkOutput(out, {
      command: "synth",
      kind: "file",
      inputs: [dataPath, v.model ?? DEFAULT_MODEL],
      companions: [manifestPath],
      isOurs: () => exists(manifestPath),
      overwrite: !!v.overwrite,
    });

    const ctx = await defaultContext();
    const cpu = ctx.isCpuAdapter && !v.paper;
    const pick = (paper: number, small: number) => (cpu ? small : paper);
    const perClass = num("per-class", pick(100, CPU_DEFAULTS.perClass), { min: 1, integer: true });
    const batch = num("batch", Math.min(10, perClass), { min: 1, max: 256, integer: true });
    const admm: Omit<AdmmSettings, "rho"> = {
      ...PAPER_SETTINGS,
      outerSteps: num("outer-steps", pick(PAPER_SETTINGS.outerSteps, CPU_DEFAULTS.outerSteps), {
        min: 1,
        integer: true,
      }),
      innerSteps: num("inner-steps", pick(PAPER_SETTINGS.innerSteps, CPU_DEFAULTS.innerSteps), {
        min: 0,
        integer: true,
      }),
      lr: num("lr", PAPER_SETTINGS.lr, { min: 0 }),
      initCandidates: num(
        "init-candidates",
        pick(PAPER_SETTINGS.initCandidates, CPU_DEFAULTS.initCandidates),
        { min: 1, integer: true },
      ),
      matching: loss,
      select,
      freezeSuffixGradient: task.freezeSuffixGradient,
    };
    const options: SynthOptions = {
      task,
      realPool: num("real-pool", 100, { min: 1, integer: true }),
      real: num("real", 50, { min: 1, integer: true }),
      perClass,
      batch,
      rhos: parseList(v.rho ?? "0.7", "rho"),
      topk: num("topk", 200, { min: 1, integer: true }),
      length: num("length", 0, { min: 0, max: 1024, integer: true }),
      seed: num("seed", 42, { min: 0, integer: true }),
      admm,
      dp: dpRequested
        ? {
          epsilon: num("dp-epsilon", 1, { min: 1e-9 }),
          delta: num("dp-delta", 1e-4, { min: 1e-300, max: 0.999999 }),
          clip: num("dp-clip", 1.0, { min: 1e-12 }),
          calibration,
        }
        : undefined,
      refine: method === "refine"
        ? {
          ...REFINE_DEFAULTS,
          iterations: num("refine-iterations", REFINE_DEFAULTS.iterations, { min: 0, integer: true }),
          nllSlack: num("refine-nll-slack", REFINE_DEFAULTS.nllSlack, { min: 0 }),
        }
        : undefined,
      refineLm: method === "refine-lm"
        ? {
          ...LM_REFINE_DEFAULTS,
          iterations: num("refine-iterations", LM_REFINE_DEFAULTS.iterations, { min: 0, integer: true }),
          nllSlack: num("refine-nll-slack", LM_REFINE_DEFAULTS.nllSlack, { min: 0 }),
          lambda: num("refine-lambda", LM_REFINE_DEFAULTS.lambda, { min: 0 }),
        }
        : undefined,
    };
    // This shard's rounds; the other rounds count as done, so runSynth skips them.
    const shardKeys = shard
      ? new Set(
        shardRoundKeys(
          canonicalRoundKeys(task.labelWords.length, options.rhos, Math.floor(perClass / batch)),
          shard,
        ).map(roundKeyId),
      )
      : undefined;
    if (shard) {
      console.error(
        `shard ${shard.index}/${shard.count} (${shard.source}): ${shardKeys!.size} round(s), writing ${out}` +
          (shardKeys!.size === 0 ? " (no rounds: more shards than rounds)" : ""),
      );
    }
    if (
      !method.startsWith("refine") &&
      (v["refine-iterations"] !== undefined || v["refine-nll-slack"] !== undefined)
    ) {
      throw new UsageError(
        "synth: --refine-iterations and --refine-nll-slack need --method refine or refine-lm",
      );
    }
    if (method !== "refine-lm" && v["refine-lambda"] !== undefined) {
      throw new UsageError("synth: --refine-lambda needs --method refine-lm");
    }
    if (cpu) {
      console.error(
        `note: '${ctx.adapterName}' is a CPU adapter: using CPU-sized defaults (per-class ${perClass}, outer ${admm.outerSteps}, ` +
          `inner ${admm.innerSteps}, init candidates ${admm.initCandidates}); --paper for the paper's settings`,
      );
    }

    // ---- model
    const modelSpec = v.model ?? DEFAULT_MODEL;
    const { model, tokenizer: codec, dir: modelDir } = await openModel(ctx, modelSpec, { weights });
    const positions = model.config.positionEmbedding === "learned" ? model.config.maxPositions : Infinity;
    if (options.length > positions) {
      model.dispose();
      throw new UsageError(`synth: --length ${options.length} exceeds the model's ${positions} positions`);
    }
    // Matmul tiles for this adapter: tuned on first use on a GPU, then read from the disk cache.
    await tuneForModel(model, {
      batch,
      length: options.length || 33,
      workload: "synth",
      log: (line) => console.error(line),
    });

    // ---- resume
    const settingsRecord = {
      // Only when f16, so that manifests of f32 runs (written before the flag existed) still match.
      ...(weights === "f16" ? { weights } : {}),
      // Likewise the field names: only when not the defaults (they choose which texts are read).
      ...(v["text-field"] !== undefined && v["text-field"] !== "text" ? { textField: v["text-field"] } : {}),
      ...(v["label-field"] !== undefined && v["label-field"] !== "label"
        ? { labelField: v["label-field"] }
        : {}),
      ...options,
      task: task.name,
      template: task.suffix,
      labelWords: task.labelWords,
      prefix: task.labelWords.map((_, c) => task.decodePrefix(c)),
      admm,
    };
    const files: Record<string, string> = {};
    for await (const e of Deno.readDir(modelDir)) {
      if (e.isFile && /\.(json|safetensors)$/.test(e.name)) {
        files[e.name] = await sha256File(join(modelDir, e.name));
      }
    }
    const dataHash = await sha256File(dataPath);
    let records: SynthRecord[] = [];
    let resumedTargets: Record<string, unknown> = {};
    let completed: RoundKey[] = [];
    const started = performance.now();
    let previousWall = 0;
    const timings: Record<string, number> = { init: 0, zstep: 0, xstep: 0, final: 0 };
    if (!v.overwrite && (await exists(manifestPath)) && (await exists(out))) {
      const old = parseManifest(await readText(manifestPath, "manifest"), manifestPath);
      const same =
        JSON.stringify(old.settings) === JSON.stringify(JSON.parse(JSON.stringify(settingsRecord))) &&
        JSON.stringify(old.model.files) === JSON.stringify(files) && old.data.sha256 === dataHash &&
        old.shard?.index === shard?.index && old.shard?.count === shard?.count;
      if (!same) {
        throw new UsageError(
          `synth: ${out} holds a run with other settings, model or data; pass --overwrite to replace it or choose another --out`,
        );
      }
      records = parseRecords(await readText(out, "output"), out);
      completed = old.completed;
      // The JSONL is written before the manifest: drop records of a round the manifest missed.
      records = records.filter((r) =>
        completed.some((c) => c.rho === r.rho && c.classIndex === r.label && c.round === r.round)
      );
      previousWall = old.wallSeconds;
      Object.assign(timings, old.timings);
      resumedTargets = old.targets ?? {};
      console.error(`resuming: ${completed.length} completed round(s) in ${out}`);
    }
    const maxRounds = num("max-rounds", Infinity, { min: 1 });
    // A round counts as done when it is in the manifest, or when this invocation reached --max-rounds.
    const isDone = (k: RoundKey) =>
      roundsThisRun >= maxRounds || (shardKeys !== undefined && !shardKeys.has(roundKeyId(k))) ||
      completed.some((c) => c.rho === k.rho && c.classIndex === k.classIndex && c.round === k.round);
    const manifest = (): Manifest => ({
      tool: "gradmm-ts synth",
      version: VERSION,
      settings: JSON.parse(JSON.stringify(settingsRecord)),
      model: { spec: modelSpec, dir: modelDir, files },
      data: { path: dataPath, sha256: dataHash },
      adapter: ctx.adapterName,
      completed,
      targets: orderedTargets(),
      timings,
      wallSeconds: previousWall + (performance.now() - started) / 1000,
      allowedTokens,
      ...(shard ? { shard: { index: shard.index, count: shard.count } } : {}),
      privacy,
    });
    // Targets of classes finished in an earlier invocation are kept; listed in class order, so
    // that the manifest does not depend on which invocation or shard computed them.
    const targets: Record<string, unknown> = { ...resumedTargets };
    const orderedTargets = () =>
      Object.fromEntries(task.labelWords.filter((w) => w in targets).map((w) => [w, targets[w]]));
    let allowedTokens: number | undefined;
    let privacy: PrivacyAccount | undefined;
    let totalRounds = 1;
    let roundsDone = completed.length;
    const runStart = performance.now();
    let roundsThisRun = 0;

    const onEvent = async (e: SynthEvent) => {
      if (e.kind === "plan") {
        if (options.topk > e.allowedTokens) {
          throw new UsageError(
            `synth: --topk ${options.topk} exceeds the ${e.allowedTokens} token ids this model's filter allows; ` +
              `give --topk ${e.allowedTokens} or less`,
          );
        }
        allowedTokens = e.allowedTokens;
        privacy = e.privacy;
        if (privacy) {
          console.error(
            `privacy: this run spends (ε = ${privacy.epsilon.toPrecision(4)}, δ = ${privacy.delta}) in all ` +
              `(${privacy.calibration} σ; one Gaussian release per class, parallel composition; ` +
              `σ = ${privacy.releases.map((r) => r.sigma.toPrecision(4)).join("/")}); not covered: ` +
              privacy.notCovered.join("; "),
          );
        }
        totalRounds = shardKeys?.size ?? e.classes * e.roundsPerClass * e.rhos.length;
        console.error(
          `plan: ${e.classes} classes × ${e.roundsPerClass} round(s) × ${e.rhos.length} ρ; sequence length ${
            e.length.join("/")
          } tokens; ` +
            `${e.allowedTokens} token ids allowed by the filter`,
        );
      } else if (e.kind === "target") {
        targets[task.labelWords[e.classIndex]] = e.report;
        const r = e.report;
        console.error(
          `target '${task.labelWords[e.classIndex]}': ${r.examples} real examples, ‖signal‖ = ${
            r.signalNorm.toExponential(3)
          }` +
            (r.sigma !== undefined
              ? `; DP noise σ = ${r.sigma.toExponential(3)} per element, expected ‖noise‖ = ${
                r.noiseNorm!.toExponential(3)
              } ` +
                `(${
                  (r.noiseNorm! / r.signalNorm).toExponential(2)
                }× the signal), ${r.clipped} example(s) clipped`
              : ""),
        );
      } else if (e.kind === "step") {
        const elapsed = (performance.now() - runStart) / 1000;
        const frac = (roundsThisRun + e.progress.outerStep / e.progress.outerSteps) /
          Math.max(1e-9, totalRounds - (roundsDone - roundsThisRun));
        const eta = frac > 0 ? elapsed / frac - elapsed : NaN;
        console.error(
          `class ${task.labelWords[e.key.classIndex]} ρ=${e.key.rho} round ${
            e.key.round + 1
          }: step ${e.progress.outerStep}/${e.progress.outerSteps} ` +
            `total ${e.progress.totalLoss.toFixed(4)} match(z) ${e.progress.discreteLoss.toFixed(4)} ` +
            `elapsed ${formatDuration(elapsed)} eta ${formatDuration(eta)}`,
        );
      } else {
        records.push(...e.records);
        completed.push(e.key);
        roundsDone++;
        roundsThisRun++;
        for (const [k, ms] of Object.entries(e.timings)) timings[k] = (timings[k] ?? 0) + ms / 1000;
        await writeFileAtomic(out, records.map((r) => JSON.stringify(r)).join("\n") + "\n");
        await writeFileAtomic(manifestPath, JSON.stringify(manifest(), null, 2) + "\n");
        console.error(
          `round done (${roundsDone}/${totalRounds}): match loss ${
            e.records[0].match_loss.toFixed(4)
          }; e.g. "${e.records[0].text}"`,
        );
      }
    };
    try {
      await runSynth(model, codec, data, options, isDone, onEvent);
    } finally {
      // Commands share the process's GPU context (experiment runs synth several times).
      model.dispose();
    }
    await writeFileAtomic(manifestPath, JSON.stringify(manifest(), null, 2) + "\n");
    if (records.length === 0) await writeFileAtomic(out, "");
    const left = totalRounds - completed.length;
    console.error(
      `wrote ${records.length} texts to ${out} (manifest: ${manifestPath})` +
        (left > 0 ? `; ${left} round(s) left: rerun the same command to continue` : ""),
    );
    return 0;
  },
};
