/**
 * The whole `synth` job, platform-neutral: real pool → per-class targets → rounds of GRADMM → one
 * record per synthetic text. File I/O, flags and progress printing live in cli/synth.ts.
 *
 * Every round's randomness is derived from (seed, ρ, class, round), so a run that resumes after
 * its last completed round produces the same records as one that was never interrupted.
 */
import type { CausalLM } from "../models/model.ts";
import { sequenceMeanNll } from "../models/perplexity.ts";
import { type AdmmSettings, type RoundProgress, runRound } from "./admm.ts";
import { type Example, stratifiedSample } from "./data.ts";
import {
  calibratedSigma,
  type DpOptions,
  gaussianEpsilon,
  type PrivacyAccount,
  privacyAccount,
} from "./dp.ts";
import { oneHot } from "./matching.ts";
import { computeTarget, disposeTarget, type TargetReport } from "./target.ts";
import { classOf, stripSuffix, type TaskSpec } from "./tasks.ts";
import { bannedTokenMask } from "./tokenFilter.ts";
import { type RefineSettings, refineTokens } from "./refine.ts";
import { type LmRefineSettings, refineTokensLm } from "./refine_lm.ts";
import { disposeProjector, makeProjector } from "./zstep.ts";

/** The tokenizer operations synth needs (models/tokenizer.ts provides them). */
export interface TextCodec {
  encode(text: string): number[];
  decode(ids: number[]): string;
  /** Base vocabulary size (ids at or above it are never decoded into texts). */
  vocabSize: number;
  padId: number;
}

/** Settings of a synth run (the CLI's flags). */
export interface SynthOptions {
  task: TaskSpec;
  /** Size of the stratified real pool (--real-pool, 100). */
  realPool: number;
  /** How many of the pool build the targets (--real, 50). */
  real: number;
  /** Synthetic texts per class (--per-class). */
  perClass: number;
  /** Texts optimised jointly per round (--batch, 10). */
  batch: number;
  /** ρ values; more than one runs a sweep (--rho). */
  rhos: number[];
  /** Candidate-set size of the z-step (--topk, 200). */
  topk: number;
  /** Sequence length in tokens including the suffix; 0 = ⌊mean real length⌋ per class (official). */
  length: number;
  seed: number;
  /** ADMM settings other than ρ. */
  admm: Omit<AdmmSettings, "rho">;
  dp?: Omit<DpOptions, "seed">;
  /**
   * Token-swap refinement after each round (admm/refine.ts); absent = the official path, whose
   * output is unchanged.
   */
  refine?: RefineSettings;
  /**
   * LM-aware token-swap refinement after each round (admm/refine_lm.ts), for matching loss +
   * λ·NLL; absent = not run.
   */
  refineLm?: LmRefineSettings;
}

/**
 * A matching loss as written to a record: never below 0. In f32, 1 − cos of two nearly parallel
 * gradients (a tiny model whose residuals barely differ) can round to −1 ulp of 1.
 */
function reportedLoss(x: number): number {
  return Math.max(0, x);
}

/** The ADMM optimisation of a round produced a non-finite loss (exit code 1 in the CLI). */
export class NonFiniteError extends Error {
  override name = "NonFiniteError";
  readonly userFacing = true;
  readonly exitCode = 1;
}

/** One synthetic example, as written to the output JSONL. */
export interface SynthRecord {
  text: string;
  label: number;
  label_word: string;
  round: number;
  rho: number;
  /** Matching loss of its batch of discrete tokens. */
  match_loss: number;
  /** Matching loss of its batch at initialisation (first projection). */
  match_loss_init: number;
  /** Mean NLL of the text's own tokens under the model (nats/token). */
  nll: number;
}

/** A round's identity; completed rounds are skipped on resume. */
export interface RoundKey {
  rho: number;
  classIndex: number;
  round: number;
}

/** Progress events for the CLI. */
export type SynthEvent =
  | {
    kind: "plan";
    classes: number;
    roundsPerClass: number;
    rhos: number[];
    length: number[];
    allowedTokens: number;
    /** The (ε, δ) the run spends and on what assumptions (DP runs only). */
    privacy?: PrivacyAccount;
  }
  | { kind: "target"; classIndex: number; report: TargetReport }
  | { kind: "step"; key: RoundKey; progress: RoundProgress }
  | { kind: "round"; key: RoundKey; records: SynthRecord[]; timings: Record<string, number> };

/** Raised for settings that cannot work with the data (checked before any GPU work). */
export class SynthError extends Error {
  override name = "SynthError";
  readonly userFacing = true;
}

/** Real examples per class: the stratified pool, its first `real` entries, grouped by class. */
export function selectReal(
  task: TaskSpec,
  data: Example[],
  o: Pick<SynthOptions, "realPool" | "real" | "seed">,
) {
  const kept = data.flatMap((e) => {
    const c = classOf(task, e.label);
    return c === null ? [] : [{ text: e.text, label: c }];
  });
  if (o.real > o.realPool) {
    throw new SynthError(`--real (${o.real}) cannot exceed --real-pool (${o.realPool})`);
  }
  if (kept.length < o.real) {
    throw new SynthError(
      `the data has ${kept.length} usable examples for task ${task.name}, fewer than --real ${o.real}`,
    );
  }
  const pool = stratifiedSample(kept, o.realPool, o.seed);
  const used = pool.slice(0, o.real);
  const byClass = task.labelWords.map((_, c) => used.filter((e) => e.label === c).map((e) => e.text));
  byClass.forEach((texts, c) => {
    if (texts.length === 0) {
      throw new SynthError(
        `class ${c} ('${task.labelWords[c]}') has no example among the ${o.real} real examples; ` +
          "raise --real or check the labels",
      );
    }
  });
  return { pool, used, byClass };
}

/**
 * The privacy account of a DP synth run, from settings and class sizes alone (so a resumed run
 * reports the same): one release per class of σ calibrated for sensitivity C/N_c.
 */
export function synthPrivacy(
  dp: Omit<DpOptions, "seed">,
  classSizes: number[],
  labelWords: string[],
  lengthFromData: boolean,
): PrivacyAccount {
  const calibration = dp.calibration ?? "analytic";
  const releases = classSizes.map((n, c) => {
    const sensitivity = dp.clip / n;
    const sigma = calibratedSigma(calibration, dp.epsilon, dp.delta, sensitivity);
    return {
      label: labelWords[c],
      examples: n,
      sensitivity,
      sigma,
      epsilon: gaussianEpsilon(sigma, dp.delta, sensitivity),
    };
  });
  const notCovered = [
    "the manifest's targets.*.signalNorm and targets.*.clipped (diagnostics computed from the raw examples)",
  ];
  if (lengthFromData) {
    notCovered.unshift(
      "the sequence length (the mean token length of each class's real examples; pass --length N to make it data-independent)",
    );
  }
  return privacyAccount(releases, dp.delta, calibration, notCovered);
}

/** A 32-bit seed derived from several integers (FNV-1a over their decimal forms). */
export function deriveSeed(...parts: (number | string)[]): number {
  let h = 0x811c9dc5;
  for (const ch of parts.join("/")) {
    h ^= ch.charCodeAt(0);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/**
 * Runs the synth job. `done` lists rounds already in the output (they are skipped); `onEvent`
 * receives progress and every finished round's records (write them out there).
 *
 * `done` is also the shard filter: a shard marks the rounds of other shards as done, and a class
 * none of whose rounds is pending costs nothing (its target is not computed). Rounds run in the
 * order of `canonicalRoundKeys` (admm/shard.ts): class, then ρ, then round; keep the two in step.
 */
export async function runSynth(
  model: CausalLM,
  codec: TextCodec,
  data: Example[],
  o: SynthOptions,
  done: (key: RoundKey) => boolean,
  onEvent: (e: SynthEvent) => void | Promise<void>,
): Promise<void> {
  const ctx = model.ctx;
  const { task } = o;
  if (o.perClass % o.batch !== 0) {
    throw new SynthError(`--per-class (${o.perClass}) must be a multiple of --batch (${o.batch})`);
  }
  const { byClass } = selectReal(task, data, o);
  const suffixIds = codec.encode(task.suffix);
  if (suffixIds.length === 0) throw new SynthError(`the suffix '${task.suffix}' encodes to no tokens`);
  const labelIds = task.labelWords.map((w) => {
    const ids = codec.encode(w);
    if (ids.length === 0) throw new SynthError(`label word '${w}' encodes to no tokens`);
    return ids[0]; // official: only the first token of a multi-token label word
  });
  const rowsByClass = byClass.map((texts) => texts.map((t) => codec.encode(t + task.suffix)));
  // Learned position tables end at maxPositions: longer real texts (or --length) cannot be run.
  const positions = model.config.positionEmbedding === "learned" ? model.config.maxPositions : Infinity;
  rowsByClass.forEach((rows, c) => {
    const longest = Math.max(o.length, ...rows.map((r) => r.length));
    if (longest > positions) {
      throw new SynthError(
        `class ${c} ('${task.labelWords[c]}'): a sequence of ${longest} tokens (text + suffix${
          o.length > 0 ? " or --length" : ""
        }) exceeds the model's ${positions} positions; shorten the real texts or use a model with a longer context`,
      );
    }
  });
  const lengths = rowsByClass.map((rows) =>
    o.length > 0 ? o.length : Math.floor(rows.reduce((a, r) => a + r.length, 0) / rows.length)
  );
  lengths.forEach((len, c) => {
    if (len <= suffixIds.length) {
      throw new SynthError(`class ${c}: sequence length ${len} leaves no free token before the suffix`);
    }
  });
  const vocabRows = model.embedRows.shape[0];
  const banned = bannedTokenMask(vocabRows, codec.vocabSize, (id) => codec.decode([id]));
  const allowed = banned.length - banned.reduce((a, b) => a + b, 0);
  const rounds = o.perClass / o.batch;
  await onEvent({
    kind: "plan",
    classes: task.labelWords.length,
    roundsPerClass: rounds,
    rhos: o.rhos,
    length: lengths,
    allowedTokens: allowed,
    privacy: o.dp
      ? synthPrivacy(o.dp, rowsByClass.map((r) => r.length), task.labelWords, o.length <= 0)
      : undefined,
  });

  const projector = makeProjector(model, banned, o.topk);
  const head = { weight: model.headRows, bias: model.headBias };
  try {
    for (let c = 0; c < task.labelWords.length; c++) {
      const pending = o.rhos.some((rho) =>
        Array.from({ length: rounds }, (_, r) => r).some((r) => !done({ rho, classIndex: c, round: r }))
      );
      if (!pending) continue;
      const dp = o.dp ? { ...o.dp, seed: deriveSeed(o.seed, "dp", c) } : undefined;
      const { target, report } = await computeTarget(model, rowsByClass[c], labelIds[c], codec.padId, dp);
      await onEvent({ kind: "target", classIndex: c, report });
      const onehot = oneHot(ctx, new Array(o.batch).fill(labelIds[c]), model.headRows.shape[0]).keep();
      const prefixIds = codec.encode(task.decodePrefix(c));
      try {
        for (const rho of o.rhos) {
          for (let r = 0; r < rounds; r++) {
            const key = { rho, classIndex: c, round: r };
            if (done(key)) continue;
            const problem = {
              model,
              projector,
              target,
              head,
              onehot,
              length: lengths[c],
              suffixIds,
              prefixIds,
              batch: o.batch,
              seed: deriveSeed(o.seed, rho, c, r),
            };
            const result = await runRound(
              problem,
              { ...o.admm, rho, freezeSuffixGradient: o.admm.freezeSuffixGradient },
              (progress) => onEvent({ kind: "step", key, progress }),
            );
            // A diverged optimisation (ρ or lr too large) decodes garbage that looks like success:
            // stop before the round is written. Only scalars already read back are checked.
            const diverged = !Number.isFinite(result.matchLoss) ||
              result.history.some((h) =>
                !Number.isFinite(h.discrete) || (o.admm.innerSteps > 0 && !Number.isFinite(h.total))
              );
            if (diverged) {
              throw new NonFiniteError(
                `class ${c} ρ=${rho} round ${
                  r + 1
                }: the optimisation diverged (a loss became NaN or infinite); ` +
                  "lower --rho or --lr. Nothing was written for this round",
              );
            }
            if (o.refine) {
              const t0 = performance.now();
              const refined = await refineTokens(
                problem,
                result.ids,
                labelIds[c],
                o.admm.matching,
                o.refine,
                deriveSeed(o.seed, "refine", rho, c, r),
              );
              result.ids = refined.ids;
              result.matchLoss = refined.matchLoss;
              (result.timings as Record<string, number>).refine = performance.now() - t0;
            }
            if (o.refineLm) {
              const t0 = performance.now();
              // Each round on its own (nothing from earlier rounds), so resumed and sharded runs agree.
              const refined = await refineTokensLm(
                problem,
                result.ids,
                labelIds[c],
                o.admm.matching,
                o.refineLm,
              );
              result.ids = refined.ids;
              result.matchLoss = refined.matchLoss;
              (result.timings as Record<string, number>).refine = performance.now() - t0;
            }
            const texts = result.ids.map((ids) => stripSuffix(task, codec.decode(ids)));
            const nll = await sequenceMeanNll(model, texts.map((t) => codec.encode(t)));
            const records = texts.map((text, i): SynthRecord => ({
              text,
              label: c,
              label_word: task.labelWords[c],
              round: r,
              rho,
              match_loss: reportedLoss(result.matchLoss),
              match_loss_init: reportedLoss(result.matchLossInit),
              nll: nll[i],
            }));
            await onEvent({ kind: "round", key, records, timings: result.timings });
          }
        }
      } finally {
        onehot.dispose();
        disposeTarget(target);
      }
    }
  } finally {
    disposeProjector(projector);
  }
}
