/**
 * Typed errors for everything that reads a model from disk or a hub: each names the file or
 * repository, says what was wrong, and what to do about it. Callers catch by class (`instanceof`)
 * and show `message` to the user; none of them should need a stack trace.
 *
 * @module
 */

/** A safetensors file (or a sharded checkpoint index) that is malformed, truncated or missing. */
export class SafetensorsError extends Error {
  /** The file (path or label) the problem is in. */
  readonly source: string;
  /** `problem` says what is wrong with `source` and, where it helps, what to do. */
  constructor(source: string, problem: string) {
    super(`${source}: ${problem}`);
    this.name = "SafetensorsError";
    this.source = source;
  }
}

/** A config.json the engine cannot run: unknown architecture, missing key, unsupported option. */
export class ConfigError extends Error {
  /** `message` names the file and key. */
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** A checkpoint whose tensors do not match what its config says (missing, unexpected, wrong shape). */
export class CheckpointError extends Error {
  /** Canonical names the config needs that the checkpoint lacks. */
  readonly missing: string[];
  /** Tensor names in the checkpoint that the config does not explain. */
  readonly unexpected: string[];
  /** Tensors present with a shape other than the config's, as "name: [got] (expected [want])". */
  readonly wrongShape: string[];
  /** `message` summarises the three lists, which are kept for programmatic use. */
  constructor(message: string, missing: string[], unexpected: string[], wrongShape: string[]) {
    super(message);
    this.name = "CheckpointError";
    this.missing = missing;
    this.unexpected = unexpected;
    this.wrongShape = wrongShape;
  }
}

/** A tokenizer that cannot be loaded or used (bad tokenizer.json, unknown special token, bad ids). */
export class TokenizerError extends Error {
  /** `message` says what was wrong and what to do. */
  constructor(message: string) {
    super(message);
    this.name = "TokenizerError";
  }
}

/** Why a hub download failed, so that callers can react (ask for a token, retry, ...). */
export type HubErrorKind = "auth" | "not-found" | "network" | "integrity" | "http" | "spec" | "offline";

/** A model could not be resolved or downloaded from a Hugging Face-compatible hub. */
export class HubError extends Error {
  /** What kind of failure this is. */
  readonly kind: HubErrorKind;
  /** HTTP status when the failure came from a response. */
  readonly status?: number;
  /** `message` says what failed and what to do (set HF_TOKEN, check the id, run again). */
  constructor(kind: HubErrorKind, message: string, status?: number) {
    super(message);
    this.name = "HubError";
    this.kind = kind;
    this.status = status;
  }
}
