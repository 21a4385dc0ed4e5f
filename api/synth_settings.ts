/**
 * From the settings a caller gives (any subset, named like the CLI's flags) to the complete
 * {@link SynthOptions} a run uses: the one place that fills in synth's defaults, CPU-sized on a
 * CPU adapter unless the paper's are asked for. `synth()`, the resumable job in host/ and the
 * CLI all go through it.
 *
 * @module
 */
import { PAPER_SETTINGS } from "../admm/problem.ts";
import { BLEND_LM_TOP } from "../admm/blend_decode.ts";
import type { MatchingKind } from "../admm/matching.ts";
import { REFINE_DEFAULTS } from "../admm/refine.ts";
import { LM_REFINE_DEFAULTS, type NllTarget, realTargetOffset } from "../admm/refine_lm.ts";
import type { DpCalibration } from "../admm/dp.ts";
import { SynthError, type SynthOptions } from "../admm/synth.ts";
import { getTask, type TaskSpec } from "../data/tasks.ts";
import {
  CPU_SYNTH_DEFAULTS,
  DP_DEFAULTS,
  LM_GUIDED_DEFAULTS,
  SYNTH_DEFAULTS,
  SYNTH_METHODS,
  type SynthMethod,
  usesLmRefine,
} from "./defaults.ts";

/** Differential privacy for a synth run: `epsilon` turns it on; the rest has defaults. */
export interface SynthDpSettings {
  /** Privacy budget ε. */
  epsilon: number;
  /** δ (default {@link DP_DEFAULTS}.delta). */
  delta?: number;
  /** Per-example clipping norm (default 1). */
  clip?: number;
  /** "analytic" (default) or "official" (the paper code's σ). */
  calibration?: DpCalibration;
}

/**
 * Synth settings, every one optional (defaults: {@link SYNTH_DEFAULTS}, and
 * {@link CPU_SYNTH_DEFAULTS} on a CPU adapter unless `paper` is set). The names follow the CLI's
 * flags (`outerSteps` is `--outer-steps`).
 */
export interface SynthSettings {
  /** A preset name ("sst2", "rotten_tomatoes", "imdb", "emotion") or a custom task. */
  task?: string | TaskSpec;
  /** Size of the stratified real pool. */
  realPool?: number;
  /** How many of the pool build the targets. */
  real?: number;
  /** Synthetic texts per class; a multiple of `batch`. */
  perClass?: number;
  /** Texts optimised jointly per round (default min(10, perClass)). */
  batch?: number;
  /** ADMM penalty ρ; a list runs a sweep. */
  rho?: number | number[];
  /** Candidate-set size of the z-step. */
  topk?: number;
  /** Tokens per sequence including the suffix; 0 = ⌊mean real length⌋ per class. */
  length?: number;
  /** Seed of the real pool, the initialisation and the DP noise. */
  seed?: number;
  /** ADMM iterations per round. */
  outerSteps?: number;
  /** Adam steps per x-update. */
  innerSteps?: number;
  /** Adam learning rate for x. */
  lr?: number;
  /** Random initial batches to choose from. */
  initCandidates?: number;
  /** Matching loss, "cos" or "l2". */
  loss?: MatchingKind;
  /** Which iterate is decoded (default: "total" for the official method, else "discrete"). */
  select?: "total" | "discrete";
  /**
   * "lm-guided" (default), "official" (the paper's code path), "discrete", "refine" or
   * "refine-lm" (docs/gradmm-decisions.md).
   */
  method?: SynthMethod;
  /** Refinement iterations (methods "refine", "refine-lm" and "lm-guided"). */
  refineIterations?: number;
  /**
   * Nats/token the NLL may rise during refinement: a text's ("refine", default 0.3) or the
   * batch mean's ("refine-lm" and "lm-guided", default 0).
   */
  refineNllSlack?: number;
  /** Weight λ of the batch's mean NLL in refine-lm's objective (default 0.15). */
  refineLambda?: number;
  /**
   * refine-lm's NLL target (admm/refine_lm.ts): nats/token, or "real" / "real+X" for the class's
   * real examples' own mean NLL (plus X; not with DP). Absent: no target.
   */
  refineNllTarget?: NllTarget;
  /**
   * β of the match-aware z-step decode (admm/blend_decode.ts): LM log-prob + β·cosine over the
   * top-k cosine candidates and the model's top-8 tokens, no repeated bigram. Absent: official.
   */
  decodeBeta?: number;
  /** Differential privacy (absent: off). */
  dp?: SynthDpSettings;
  /** Use the paper's settings even on a CPU adapter. */
  paper?: boolean;
}

/** What {@link resolveSynthSettings} decided. */
export interface ResolvedSynthSettings {
  /** The complete options of the run. */
  options: SynthOptions;
  /** True when the CPU-sized defaults replaced the paper's (a CPU adapter, `paper` not set). */
  cpuDefaults: boolean;
}

/**
 * The complete options of a run. `cpuAdapter` says whether the run's adapter is a CPU one
 * (`GpuContext.isCpuAdapter`). Throws {@link SynthError} for contradictory settings.
 */
export function resolveSynthSettings(s: SynthSettings, cpuAdapter: boolean): ResolvedSynthSettings {
  const cpu = cpuAdapter && !s.paper;
  const pick = <T>(given: T | undefined, paper: T, small: T) => given ?? (cpu ? small : paper);
  const task = typeof s.task === "object" ? s.task : getTask(s.task ?? SYNTH_DEFAULTS.task);
  const method = s.method ?? SYNTH_DEFAULTS.method;
  if (!SYNTH_METHODS.includes(method)) {
    throw new SynthError(`method must be ${SYNTH_METHODS.join(", ")}, got '${method}'`);
  }
  const guided = method === "lm-guided";
  const lmRefine = usesLmRefine(method);
  // refine-lm and lm-guided start from the total-loss decode, the most fluent one.
  const select = s.select ?? (method === "official" || lmRefine ? "total" : "discrete");
  if (select !== "total" && select !== "discrete") {
    throw new SynthError(`select must be total or discrete, got '${select}'`);
  }
  const loss = s.loss ?? SYNTH_DEFAULTS.loss;
  if (loss !== "cos" && loss !== "l2") throw new SynthError(`loss must be cos or l2, got '${loss}'`);
  if (
    method !== "refine" && !lmRefine && (s.refineIterations !== undefined || s.refineNllSlack !== undefined)
  ) {
    throw new SynthError(
      "refineIterations and refineNllSlack need method 'refine', 'refine-lm' or 'lm-guided'",
    );
  }
  if (!lmRefine && s.refineLambda !== undefined) {
    throw new SynthError("refineLambda needs method 'refine-lm' or 'lm-guided'");
  }
  if (!lmRefine && s.refineNllTarget !== undefined) {
    throw new SynthError("refineNllTarget needs method 'refine-lm' or 'lm-guided'");
  }
  if (s.refineNllTarget !== undefined) {
    try {
      if (realTargetOffset(s.refineNllTarget) !== null && s.dp) {
        throw new SynthError(
          `refineNllTarget '${s.refineNllTarget}' reads the real examples, which a DP run may not: give it in nats/token`,
        );
      }
    } catch (e) {
      if (e instanceof RangeError) throw new SynthError(`refineNllTarget: ${e.message}`);
      throw e;
    }
  }
  if (s.decodeBeta !== undefined && !(Number.isFinite(s.decodeBeta) && s.decodeBeta >= 0)) {
    throw new SynthError(`decodeBeta must be a finite number ≥ 0, got ${s.decodeBeta}`);
  }
  const perClass = pick(s.perClass, SYNTH_DEFAULTS.perClass, CPU_SYNTH_DEFAULTS.perClass);
  // lm-guided is sized to cost what official costs, on either settings (api/defaults.ts).
  const sizes = cpu ? CPU_SYNTH_DEFAULTS : SYNTH_DEFAULTS;
  const outerSteps = s.outerSteps ?? (guided ? sizes.lmGuided.outerSteps : sizes.outerSteps);
  const refineIterations = s.refineIterations ??
    (guided ? sizes.lmGuided.refineIterations : LM_REFINE_DEFAULTS.iterations);
  // lm-guided decodes with the blend unless told otherwise; a DP run has no real-relative target.
  const decodeBeta = s.decodeBeta ?? (guided ? LM_GUIDED_DEFAULTS.decodeBeta : undefined);
  const nllTarget = s.refineNllTarget ?? (guided && !s.dp ? LM_GUIDED_DEFAULTS.nllTarget : undefined);
  const rhos = s.rho === undefined ? [...SYNTH_DEFAULTS.rho] : Array.isArray(s.rho) ? [...s.rho] : [s.rho];
  // Key order matters: the settings record in a manifest is compared as JSON text on resume.
  const options: SynthOptions = {
    task,
    realPool: s.realPool ?? SYNTH_DEFAULTS.realPool,
    real: s.real ?? SYNTH_DEFAULTS.real,
    perClass,
    batch: s.batch ?? Math.min(SYNTH_DEFAULTS.batch, perClass),
    rhos,
    topk: s.topk ?? SYNTH_DEFAULTS.topk,
    length: s.length ?? SYNTH_DEFAULTS.length,
    seed: s.seed ?? SYNTH_DEFAULTS.seed,
    admm: {
      ...PAPER_SETTINGS,
      outerSteps,
      innerSteps: pick(s.innerSteps, SYNTH_DEFAULTS.innerSteps, CPU_SYNTH_DEFAULTS.innerSteps),
      lr: s.lr ?? SYNTH_DEFAULTS.lr,
      initCandidates: pick(
        s.initCandidates,
        SYNTH_DEFAULTS.initCandidates,
        CPU_SYNTH_DEFAULTS.initCandidates,
      ),
      matching: loss,
      select,
      freezeSuffixGradient: task.freezeSuffixGradient,
      // Only when asked for: an official run's settings record stays as it was.
      ...(decodeBeta === undefined
        ? {}
        : { blend: { beta: decodeBeta, lmTop: BLEND_LM_TOP, noRepeat: true } }),
    },
    dp: s.dp
      ? {
        epsilon: s.dp.epsilon,
        delta: s.dp.delta ?? DP_DEFAULTS.delta,
        clip: s.dp.clip ?? DP_DEFAULTS.clip,
        calibration: s.dp.calibration ?? DP_DEFAULTS.calibration,
      }
      : undefined,
    refine: method === "refine"
      ? {
        ...REFINE_DEFAULTS,
        iterations: s.refineIterations ?? REFINE_DEFAULTS.iterations,
        nllSlack: s.refineNllSlack ?? REFINE_DEFAULTS.nllSlack,
      }
      : undefined,
    refineLm: lmRefine
      ? {
        ...LM_REFINE_DEFAULTS,
        iterations: refineIterations,
        nllSlack: s.refineNllSlack ?? LM_REFINE_DEFAULTS.nllSlack,
        lambda: s.refineLambda ?? (guided ? LM_GUIDED_DEFAULTS.lambda : LM_REFINE_DEFAULTS.lambda),
        ...(guided ? { lmTop: LM_GUIDED_DEFAULTS.lmTop } : {}),
        ...(nllTarget === undefined ? {} : { nllTarget }),
      }
      : undefined,
  };
  return { options, cpuDefaults: cpu };
}
