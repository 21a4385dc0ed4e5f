/**
 * `synth`: turn a few dozen labelled examples into a synthetic set whose output-layer gradient
 * matches theirs (GRADMM). Parses the flags into the typed options of the resumable job
 * (host/synth_job.ts), prints its progress, and calls it; the defaults are the library's
 * (api/defaults.ts).
 */
import { type ResolvedShard, resolveShard } from "../admm/shard.ts";
import type { SynthOptions } from "../admm/synth.ts";
import { type NllTarget, parseNllTarget } from "../admm/refine_lm.ts";
import { admmPasses, roundPasses } from "../admm/passes.ts";
import type { SynthSettings } from "../api/synth_settings.ts";
import { SYNTH_DEFAULTS, SYNTH_METHODS, type SynthMethod, usesLmRefine } from "../api/defaults.ts";
import { customTask, getTask, type TaskSpec } from "../data/tasks.ts";
import { defaultContext } from "../kernels/device.ts";
import type { CausalLM } from "../models/model.ts";
import {
  DEFAULT_OUT,
  type JobModel,
  runSynthJob,
  type SynthJobEvent,
  synthJobPaths,
} from "../host/synth_job.ts";
import { openModel, WEIGHTS_HELP, weightsFlag } from "./model.ts";
import { tuneForModel } from "./tune.ts";
import { type Command, JSON_HELP, numberFlag, parseFlags, resultPrinter, UsageError } from "./args.ts";
import { Progress } from "./progress.ts";
import { announceFetch, checkOutput, exists } from "./io.ts";
import { bundledData, bundledModel } from "../host/assets.ts";

export { parseRecords } from "../host/synth_job.ts";

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
  --real-n N              real examples (the first of the pool) building the target (default 50)

Model and output
  --model DIR|ORG/NAME[@REV]  Hugging Face model (default: bundled gpt2-d128)
  --out F.jsonl           output (default synthetic.jsonl); manifest beside it
  --overwrite             start over even if --out holds a run with other settings
  --max-rounds N          stop after N rounds in this invocation (rerun the command to continue)
${JSON_HELP}

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
  --outer-steps N         ADMM iterations per round (paper 30, CPU 6; lm-guided 28 / 1)
  --inner-steps N         Adam steps per x-update (paper 50, CPU 10)
  --lr X                  Adam learning rate for x (0.008)
  --top-k K               cosine candidates per position (200)
  --init-candidates N     random initial batches to pick from (paper 500, CPU 16)
  --length N              tokens per sequence incl. suffix (default: mean real length per class)
  --loss cos|l2           matching loss (cos)
  --method M              lm-guided (default): the match-aware decode (--decode-beta 35), then
                          token swaps ranked by the matching gradient and the model's
                          log-probabilities, aimed at the real examples' own NLL + 0.1, in
                          official's budget (paper: 28 outer steps + 67 swap iterations; CPU: 1
                          outer step + 35 swap iterations, what official's 6 outer steps cost)
                          | official (the paper's code path, exact parity; = --official)
                          | discrete (= --select discrete) | refine (best projection, then swaps
                          kept only when the exact loss drops; admm/refine.ts) | refine-lm (the
                          official decode, then swaps for loss + λ·mean NLL; admm/refine_lm.ts)
                          Measured: docs/gradmm-decisions.md
  --official              same as --method official
  --decode-beta B         blend decode: LM log-prob + B·cosine, top-k ∪ LM top 8 (lm-guided 35;
                          otherwise the official decode)
  --select total|discrete which iterate to decode: official 'total' or the best projected tokens
  --refine-iterations N   refinement iterations (40; lm-guided: paper 67, CPU 35; each 3 passes)
  --refine-nll-slack X    nats/token the NLL may rise during refinement (refine 0.3, else 0)
  --refine-lambda X       weight λ of the mean NLL in the swaps' objective (refine-lm 0.15,
                          lm-guided 0.03)
  --refine-nll-target T   aim the batch's mean NLL at T nats/token, or at the class's real
                          examples' own ('real', 'real+X'; not with DP; lm-guided: real+0.1
                          without DP, none with it)
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
  manifest's "privacy"; everything after the noisy targets is post-processing.

Examples
  deno run -A cli.ts synth
  deno run -A cli.ts synth --data my.jsonl --per-class 20 --rho 0.5,0.7 --out my-synthetic.jsonl
  deno run -A cli.ts synth --dp-epsilon 4 --dp-delta 1e-5 --json

Old flag names still accepted: --real (now --real-n), --topk (now --top-k).`;

/** --refine-nll-target: a number of nats/token, 'real' or 'real+X'. */
function nllTargetFlag(given: string | undefined): NllTarget | undefined {
  if (given === undefined) return undefined;
  try {
    return parseNllTarget(given);
  } catch {
    throw new UsageError(`synth: --refine-nll-target must be nats/token, 'real' or 'real+X', got '${given}'`);
  }
}

function parseList(s: string, what: string): number[] {
  const out = s.split(",").map((x) => Number(x.trim()));
  if (out.length === 0 || out.some((x) => !Number.isFinite(x) || x <= 0)) {
    throw new UsageError(`synth: --${what} must be a comma-separated list of positive numbers, got '${s}'`);
  }
  return out;
}

/** Opens `--model` for a synth job as every command does (one-line errors, download progress). */
export async function openSynthModel(
  ctx: Parameters<typeof openModel>[0],
  spec: string,
  options: { weights: "f32" | "f16" },
): Promise<JobModel> {
  const { model, tokenizer, dir } = await openModel(ctx, spec, options);
  return { model, codec: tokenizer, dir };
}

/** Tunes the matmul tiles for synth's shapes (on first use on a GPU; then read from the disk cache). */
export async function tuneForSynth(model: CausalLM, options: SynthOptions): Promise<void> {
  await tuneForModel(model, {
    batch: options.batch,
    length: options.length || 33,
    workload: "synth",
    log: (line) => console.error(line),
  });
}

/** The progress display of a synth job (stderr): `onEvent` for the job, `finish` clears its line. */
export interface SynthProgressPrinter {
  onEvent(e: SynthJobEvent): void;
  finish(): void;
}

/**
 * The progress printer of a synth job: a bar with an ETA on a terminal, plain lines otherwise
 * (cli/progress.ts); `shard` names where the shard came from.
 */
export function synthProgressPrinter(shard: ResolvedShard | undefined): SynthProgressPrinter {
  let task: TaskSpec | null = null;
  let topk = 0;
  let totalRounds = 1;
  let resumed = 0;
  let roundsDone = 0;
  // The share of a round's passes spent in its ADMM steps; the rest is the refinement's swaps.
  let admmShare = 1;
  // Created at the plan, when the rounds are known; lines before it go straight to stderr.
  let progress: Progress | null = null;
  const say = (line: string) => (progress ? progress.log(line) : console.error(line));
  const printer = (e: SynthJobEvent) => {
    if (e.kind === "start") {
      task = e.options.task;
      topk = e.options.topk;
      totalRounds = e.totalRounds;
      const { admm, refine, refineLm } = e.options;
      admmShare = admmPasses(admm) / roundPasses(admm, refine, refineLm);
      if (shard) {
        console.error(
          `shard ${shard.index}/${shard.count} (${shard.source}): ${e.totalRounds} round(s), writing ${e.out}` +
            (e.totalRounds === 0 ? " (no rounds: more shards than rounds)" : ""),
        );
      }
      if (e.cpuDefaults) {
        const { perClass, admm } = e.options;
        console.error(
          `note: '${e.adapter}' is a CPU adapter: using CPU-sized defaults (per-class ${perClass}, outer ${admm.outerSteps}, ` +
            `inner ${admm.innerSteps}, init candidates ${admm.initCandidates}); --paper for the paper's settings`,
        );
      }
    } else if (e.kind === "resume") {
      resumed = e.completedRounds;
      roundsDone = resumed;
      say(`resuming: ${e.completedRounds} completed round(s) in ${e.out}`);
    } else if (e.kind === "plan") {
      if (topk > e.allowedTokens) {
        throw new UsageError(
          `synth: --top-k ${topk} exceeds the ${e.allowedTokens} token ids this model's filter allows; ` +
            `give --top-k ${e.allowedTokens} or less`,
        );
      }
      const privacy = e.privacy;
      if (privacy) {
        console.error(
          `privacy: this run spends (ε = ${privacy.epsilon.toPrecision(4)}, δ = ${privacy.delta}) in all ` +
            `(${privacy.calibration} σ; one Gaussian release per class, parallel composition; ` +
            `σ = ${privacy.releases.map((r) => r.sigma.toPrecision(4)).join("/")}); not covered: ` +
            privacy.notCovered.join("; "),
        );
      }
      progress = new Progress({ label: "synth", total: totalRounds, unit: "rounds", start: resumed });
      console.error(
        `plan: ${e.classes} classes × ${e.roundsPerClass} round(s) × ${e.rhos.length} ρ; sequence length ${
          e.length.join("/")
        } tokens; ` +
          `${e.allowedTokens} token ids allowed by the filter`,
      );
    } else if (e.kind === "target") {
      const r = e.report;
      say(
        `target '${task!.labelWords[e.classIndex]}': ${r.examples} real examples, ‖signal‖ = ${
          r.signalNorm.toExponential(3)
        }` +
          (r.sigma !== undefined
            ? `; DP noise σ = ${r.sigma.toExponential(3)} per element, expected ‖noise‖ = ${
              r.noiseNorm!.toExponential(3)
            } ` +
              `(${
                (r.noiseNorm! / r.signalNorm).toExponential(2)
              }× the signal), ${r.clipped} example(s) clipped`
            : "") +
          (e.nllTarget === undefined ? "" : `; refine-lm NLL target ${e.nllTarget.toFixed(3)} nats/token`),
      );
    } else if (e.kind === "step") {
      progress?.update(
        roundsDone + admmShare * e.progress.outerStep / e.progress.outerSteps,
        `class ${task!.labelWords[e.key.classIndex]} ρ=${e.key.rho} round ${e.key.round + 1} ` +
          `step ${e.progress.outerStep}/${e.progress.outerSteps}: ` +
          `total ${e.progress.totalLoss.toFixed(4)} match(z) ${e.progress.discreteLoss.toFixed(4)}`,
      );
    } else if (e.kind === "refine") {
      const { iteration, iterations, swaps } = e.progress;
      progress?.update(
        roundsDone + admmShare + (1 - admmShare) * (iterations > 0 ? iteration / iterations : 1),
        `class ${task!.labelWords[e.key.classIndex]} ρ=${e.key.rho} round ${e.key.round + 1} ` +
          `swaps: iteration ${iteration}/${iterations}, ${swaps} applied`,
      );
    } else if (e.kind === "saved") {
      roundsDone = e.roundsDone;
      progress?.update(roundsDone);
      say(
        `round done (${e.roundsDone}/${e.totalRounds}): match loss ${
          e.records[0].match_loss.toFixed(4)
        }; e.g. "${e.records[0].text}"`,
      );
    }
  };
  return { onEvent: printer, finish: () => progress?.clear() };
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
      "real-n": { type: "string" },
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
      "top-k": { type: "string" },
      "init-candidates": { type: "string" },
      length: { type: "string" },
      loss: { type: "string" },
      select: { type: "string" },
      "decode-beta": { type: "string" },
      method: { type: "string" },
      official: { type: "boolean" },
      "refine-iterations": { type: "string" },
      "refine-nll-slack": { type: "string" },
      "refine-lambda": { type: "string" },
      "refine-nll-target": { type: "string" },
      seed: { type: "string" },
      paper: { type: "boolean" },
      "dp-epsilon": { type: "string" },
      "dp-delta": { type: "string" },
      "dp-clip": { type: "string" },
      "dp-calibration": { type: "string" },
      weights: { type: "string" },
      shard: { type: "string" },
      shards: { type: "string" },
      json: { type: "boolean" },
    }, { aliases: { real: "real-n", topk: "top-k" } });
    if (v.help) {
      console.log(HELP);
      return 0;
    }
    const vv = v as Record<string, unknown>;
    // A flag's value, or undefined when it is not given (the job then takes the library's default).
    const opt = (name: string, opts?: Parameters<typeof numberFlag>[4]) =>
      vv[name] === undefined ? undefined : numberFlag("synth", name, vv[name], 0, opts);

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
    const loss = v.loss;
    if (loss !== undefined && loss !== "cos" && loss !== "l2") {
      throw new UsageError(`synth: --loss must be cos or l2, got '${loss}'`);
    }
    const method = (v.official ? "official" : v.method) as SynthMethod | undefined;
    if (method !== undefined && !SYNTH_METHODS.includes(method)) {
      throw new UsageError(`synth: --method must be ${SYNTH_METHODS.join(", ")}, got '${method}'`);
    }
    const lmRefine = usesLmRefine(method ?? SYNTH_DEFAULTS.method);
    if (v.official && v.method !== undefined && v.method !== "official") {
      throw new UsageError(`synth: --official contradicts --method ${v.method}; pass one of them`);
    }
    const select = v.select;
    if (select !== undefined && select !== "total" && select !== "discrete") {
      throw new UsageError(`synth: --select must be total or discrete, got '${select}'`);
    }
    const dpRequested = v["dp-epsilon"] !== undefined;
    if (!dpRequested && (v["dp-delta"] !== undefined || v["dp-clip"] !== undefined)) {
      throw new UsageError("synth: --dp-delta and --dp-clip need --dp-epsilon");
    }
    const calibration = v["dp-calibration"];
    if (calibration !== undefined && calibration !== "analytic" && calibration !== "official") {
      throw new UsageError(`synth: --dp-calibration must be analytic or official, got '${calibration}'`);
    }
    if (!dpRequested && calibration !== undefined) {
      throw new UsageError("synth: --dp-calibration needs --dp-epsilon");
    }
    if (
      method !== "refine" && !lmRefine &&
      (v["refine-iterations"] !== undefined || v["refine-nll-slack"] !== undefined)
    ) {
      throw new UsageError(
        "synth: --refine-iterations and --refine-nll-slack need --method lm-guided, refine or refine-lm",
      );
    }
    if (!lmRefine && v["refine-lambda"] !== undefined) {
      throw new UsageError("synth: --refine-lambda needs --method lm-guided or refine-lm");
    }
    if (!lmRefine && v["refine-nll-target"] !== undefined) {
      throw new UsageError("synth: --refine-nll-target needs --method lm-guided or refine-lm");
    }
    const settings: SynthSettings = {
      task,
      realPool: opt("real-pool", { min: 1, integer: true }),
      real: opt("real-n", { min: 1, integer: true }),
      perClass: opt("per-class", { min: 1, integer: true }),
      batch: opt("batch", { min: 1, max: 256, integer: true }),
      rho: v.rho === undefined ? undefined : parseList(v.rho, "rho"),
      topk: opt("top-k", { min: 1, integer: true }),
      length: opt("length", { min: 0, max: 1024, integer: true }),
      seed: opt("seed", { min: 0, integer: true }),
      outerSteps: opt("outer-steps", { min: 1, integer: true }),
      innerSteps: opt("inner-steps", { min: 0, integer: true }),
      lr: opt("lr", { min: 0 }),
      initCandidates: opt("init-candidates", { min: 1, integer: true }),
      loss,
      select,
      decodeBeta: opt("decode-beta", { min: 0 }),
      method,
      refineIterations: opt("refine-iterations", { min: 0, integer: true }),
      refineNllSlack: opt("refine-nll-slack", { min: 0 }),
      refineLambda: opt("refine-lambda", { min: 0 }),
      refineNllTarget: nllTargetFlag(v["refine-nll-target"]),
      dp: dpRequested
        ? {
          epsilon: opt("dp-epsilon", { min: 1e-9 })!,
          delta: opt("dp-delta", { min: 1e-300, max: 0.999999 }),
          clip: opt("dp-clip", { min: 1e-12 }),
          calibration,
        }
        : undefined,
      paper: !!v.paper,
    };
    const maxRounds = opt("max-rounds", { min: 1 });
    const dataPath = v.data ?? await bundledData({ onFetch: announceFetch });
    const modelSpec = v.model ?? await bundledModel({ onFetch: announceFetch });
    // A shard writes its own file beside --out, so that every array task can share one command line.
    const shard = resolveShard({ shard: v.shard, shards: v.shards }, Deno.env.toObject());
    const paths = synthJobPaths(v.out ?? DEFAULT_OUT, shard);
    // Before any compute: the output must be writable, not an input, and not someone else's file.
    await checkOutput(paths.out, {
      command: "synth",
      kind: "file",
      inputs: [dataPath, modelSpec],
      companions: [paths.manifest],
      isOurs: () => exists(paths.manifest),
      overwrite: !!v.overwrite,
    });

    const printer = synthProgressPrinter(shard);
    const result = await runSynthJob({
      ...settings,
      out: v.out ?? DEFAULT_OUT,
      model: modelSpec,
      data: dataPath,
      textField: v["text-field"],
      labelField: v["label-field"],
      weights,
      overwrite: !!v.overwrite,
      maxRounds,
      shard,
      command: ["synth", ...args],
      ctx: await defaultContext(),
      openModel: openSynthModel,
      prepare: tuneForSynth,
      onEvent: printer.onEvent,
    }).finally(() => printer.finish());
    console.error(
      `wrote ${result.records.length} texts to ${result.out} (manifest: ${result.manifestPath})` +
        (result.roundsLeft > 0
          ? `; ${result.roundsLeft} round(s) left: rerun the same command to continue`
          : ""),
    );
    const { manifest } = result;
    resultPrinter(v.json).json({
      out: result.out,
      manifest: result.manifestPath,
      texts: result.records.length,
      rounds: manifest.completed.length,
      roundsTotal: manifest.completed.length + result.roundsLeft,
      complete: result.roundsLeft <= 0,
      adapter: manifest.adapter,
      wallSeconds: manifest.wallSeconds,
      ...(manifest.privacy
        ? { privacy: { epsilon: manifest.privacy.epsilon, delta: manifest.privacy.delta } }
        : {}),
    });
    return 0;
  },
};
