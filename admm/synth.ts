/**
 * The whole `synth` job, platform-neutral: real pool → per-class targets → rounds of GRADMM → one
 * record per synthetic text. Files and resumption live in host/synth_job.ts; flags and printing in cli/synth.ts.
 *
 * Every round's randomness is derived from (seed, ρ, class, round), so a run that resumes after
 * its last completed round produces the same records as one that was never interrupted.
 */
import type { CausalLM } from "../models/model.ts";
import { sequenceMeanNll } from "../models/perplexity.ts";
import type { AdmmSettings } from "./problem.ts";
import { type RoundProgress, runRound } from "./round.ts";
import { type Example, selectReal } from "../data/examples.ts";
import { deriveSeed } from "../data/seed.ts";
import {
  calibratedSigma,
  type DpOptions,
  gaussianEpsilon,
  type PrivacyAccount,
  privacyAccount,
} from "./dp.ts";
import { oneHot } from "./matching.ts";
import { computeTarget, disposeTarget, type TargetReport } from "./target.ts";
import { stripSuffix, type TaskSpec } from "../data/tasks.ts";
import { bannedTokenMask } from "./tokenFilter.ts";
import { type RefineProgress, type RefineSettings, refineTokens } from "./refine.ts";
import { type LmRefineSettings, realTargetOffset, refineTokensLm } from "./refine_lm.ts";
import { mean } from "../train/quality.ts";
import { disposeProjector, makeProjector } from "./zstep.ts";

/**
 * The tokenizer operations synth needs. A `Tokenizer` (models/tokenizer.ts) is one as it is.
 */
export interface TextCodec {
  /** Token ids of a text. */
  encode(text: string): number[];
  /** The text of token ids. */
  decode(ids: number[]): string;
  /** Base vocabulary size (ids at or above it are never decoded into texts). */
  vocabSize: number;
  /** Padding id of the target batches; null (no pad and no EOS token) pads with 0. */
  padId: number | null;
}

/** Settings of a synth run (the CLI's flags). */
export interface SynthOptions {
  /** The task: template, label words, decoder prefix. */
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
  /** Candidate-set size of the z-step (--top-k, 200). */
  topk: number;
  /** Sequence length in tokens including the suffix; 0 = ⌊mean real length⌋ per class (official). */
  length: number;
  /** Seed of the real pool, the initialisation and the DP noise. */
  seed: number;
  /** ADMM settings other than ρ. */
  admm: Omit<AdmmSettings, "rho">;
  /** Differential privacy of the targets (absent: off). */
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
  /** The error's name. */
  /** Error name, for messages. */
  override name = "NonFiniteError";
  /** The CLI prints it without a stack trace. */
  readonly userFacing = true;
  /** A runtime failure (exit code 1), not bad input. */
  readonly exitCode = 1;
}

/** One synthetic example, as written to the output JSONL. */
export interface SynthRecord {
  /** The synthetic text (suffix stripped). */
  text: string;
  /** Class index. */
  label: number;
  /** The class's label word. */
  label_word: string;
  /** Round of its class (0-based). */
  round: number;
  /** ADMM penalty ρ of its round. */
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
  /** ADMM penalty ρ. */
  rho: number;
  /** Class index. */
  classIndex: number;
  /** Round of the class (0-based). */
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
  | {
    kind: "target";
    classIndex: number;
    report: TargetReport;
    /** refine-lm's NLL target for this class in nats/token, when it has one. */
    nllTarget?: number;
  }
  | { kind: "step"; key: RoundKey; progress: RoundProgress }
  /** After the ADMM steps of a round, as its refinement (methods refine, refine-lm, lm-guided) goes. */
  | { kind: "refine"; key: RoundKey; progress: RefineProgress }
  | { kind: "round"; key: RoundKey; records: SynthRecord[]; timings: Record<string, number> };

/** Raised for settings that cannot work with the data (checked before any GPU work). */
export class SynthError extends Error {
  /** The error's name. */
  /** Error name, for messages. */
  override name = "SynthError";
  /** The CLI prints it without a stack trace. */
  readonly userFacing = true;
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

/**
 * Runs the synth job (the engine under the one-call `synth()` of api/synth.ts, which fills in
 * the defaults and collects the records). `done` lists rounds already in the output (they are
 * skipped); `onEvent` receives progress and every finished round's records (write them out there).
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
  const realOffset = o.refineLm?.nllTarget === undefined ? null : realTargetOffset(o.refineLm.nllTarget);
  if (o.dp && realOffset !== null) {
    throw new SynthError(
      `refine-lm's NLL target '${
        o.refineLm!.nllTarget
      }' reads the real examples, which a DP run may not: give the target in nats/token`,
    );
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
  if (o.topk > allowed) {
    throw new SynthError(
      `topk ${o.topk} exceeds the ${allowed} token ids this model's filter allows; give ${allowed} or less`,
    );
  }

  const projector = makeProjector(model, banned, o.topk, o.admm.blend);
  const head = { weight: model.headRows, bias: model.headBias };
  try {
    for (let c = 0; c < task.labelWords.length; c++) {
      const pending = o.rhos.some((rho) =>
        Array.from({ length: rounds }, (_, r) => r).some((r) => !done({ rho, classIndex: c, round: r }))
      );
      if (!pending) continue;
      const dp = o.dp ? { ...o.dp, seed: deriveSeed(o.seed, "dp", c) } : undefined;
      const { target, report } = await computeTarget(
        model,
        rowsByClass[c],
        labelIds[c],
        codec.padId ?? 0,
        dp,
      );
      // refine-lm's NLL target "real(+X)": this class's real texts' own mean NLL (plus X).
      const given = o.refineLm?.nllTarget;
      const nllTarget = typeof given === "string"
        ? realTargetOffset(given)! +
          mean(await sequenceMeanNll(model, byClass[c].map((t) => codec.encode(t))))
        : given;
      const refineLm = o.refineLm && { ...o.refineLm, nllTarget };
      await onEvent({
        kind: "target",
        classIndex: c,
        report,
        ...(nllTarget === undefined ? {} : { nllTarget }),
      });
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
                (progress) => onEvent({ kind: "refine", key, progress }),
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
                refineLm!,
                (progress) => onEvent({ kind: "refine", key, progress }),
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
