/**
 * The demo page's settings from its query string, so a test (or a shared link) can run a
 * generation or a small synth without clicking: `?auto=generate&prompt=...&tokens=20` or
 * `?auto=synth&perClass=2&outer=2`. Bad values give one clear message instead of a silent default.
 *
 * @module
 */

/** What the page runs on its own after loading, if anything. */
export type AutoRun = "generate" | "synth" | null;

/** The synth methods the page offers: synth's default and the paper's code path. */
export const DEMO_METHODS = ["lm-guided", "official"] as const;
/** One of {@link DEMO_METHODS}. */
export type DemoMethod = typeof DEMO_METHODS[number];

/** Whether `name` is one of {@link DEMO_METHODS}. */
export function isDemoMethod(name: string): name is DemoMethod {
  return (DEMO_METHODS as readonly string[]).includes(name);
}

/** The small synth run the page offers (tiny defaults: SwiftShader and lavapipe are slow). */
export interface DemoSynthSettings {
  /** "lm-guided" (synth's default) or "official" (the paper's method). */
  method: DemoMethod;
  /** lm-guided's token-swap iterations after the decode (ignored by "official"). */
  refineIterations: number;
  /** Synthetic texts per class. */
  perClass: number;
  /** Texts optimised jointly per round (perClass must be a multiple). */
  batch: number;
  /** ADMM iterations per round. */
  outerSteps: number;
  /** Adam steps per x-update. */
  innerSteps: number;
  /** Random initial batches tried before the first round. */
  initCandidates: number;
  /** Candidate-set size of the z-step. */
  topk: number;
  /** Tokens per synthetic text, suffix included. */
  length: number;
  /** Real examples that build the target gradient. */
  real: number;
  seed: number;
}

/** Everything the query string can set. */
export interface DemoParams {
  auto: AutoRun;
  /** Model folder URL, relative to the page (must end with "/"). */
  model: string;
  prompt: string;
  /** New tokens to generate (greedy). */
  tokens: number;
  synth: DemoSynthSettings;
}

/** Defaults of the page's forms. */
export const DEFAULT_PARAMS: DemoParams = {
  auto: null,
  model: "assets/gpt2-d128/",
  prompt: "The movie was",
  tokens: 20,
  synth: {
    method: "lm-guided",
    refineIterations: 2,
    perClass: 2,
    batch: 2,
    outerSteps: 2,
    innerSteps: 2,
    initCandidates: 4,
    topk: 50,
    length: 10,
    real: 16,
    seed: 42,
  },
};

/** A query-string value that cannot be used. */
export class ParamError extends Error {
  override name = "ParamError";
}

function intParam(q: URLSearchParams, key: string, fallback: number, min: number, max: number): number {
  const raw = q.get(key);
  if (raw === null || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ParamError(`query parameter ${key}=${raw}: expected a whole number from ${min} to ${max}`);
  }
  return n;
}

/** Reads the page settings from `location.search`; throws ParamError for a bad value. */
export function parseDemoParams(search: string): DemoParams {
  const q = new URLSearchParams(search);
  const d = DEFAULT_PARAMS;
  const auto = q.get("auto");
  if (auto !== null && auto !== "generate" && auto !== "synth") {
    throw new ParamError(`query parameter auto=${auto}: expected 'generate' or 'synth'`);
  }
  let model = q.get("model") ?? d.model;
  if (!model.endsWith("/")) model += "/";
  const s = d.synth;
  const method = q.get("method") || s.method;
  if (!isDemoMethod(method)) {
    throw new ParamError(`query parameter method=${method}: expected ${DEMO_METHODS.join(" or ")}`);
  }
  const synth: DemoSynthSettings = {
    method,
    refineIterations: intParam(q, "refine", s.refineIterations, 0, 1000),
    perClass: intParam(q, "perClass", s.perClass, 1, 1000),
    batch: intParam(q, "batch", s.batch, 1, 256),
    outerSteps: intParam(q, "outer", s.outerSteps, 1, 1000),
    innerSteps: intParam(q, "inner", s.innerSteps, 0, 1000),
    initCandidates: intParam(q, "init", s.initCandidates, 1, 10000),
    topk: intParam(q, "topk", s.topk, 1, 100000),
    length: intParam(q, "length", s.length, 2, 1024),
    real: intParam(q, "real", s.real, 2, 100000),
    seed: intParam(q, "seed", s.seed, 0, 2 ** 32 - 1),
  };
  if (synth.perClass % synth.batch !== 0) {
    throw new ParamError(`perClass (${synth.perClass}) must be a multiple of batch (${synth.batch})`);
  }
  return {
    auto,
    model,
    prompt: q.get("prompt") ?? d.prompt,
    tokens: intParam(q, "tokens", d.tokens, 1, 1024),
    synth,
  };
}
