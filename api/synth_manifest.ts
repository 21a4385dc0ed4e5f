/**
 * The bookkeeping of a synth run: the records and rounds done so far, the class targets, the
 * timings, and the manifest that describes them. `synth()` keeps one for its return value; the
 * resumable job (host/synth_job.ts) starts one from the files of an earlier invocation and writes
 * it out after every round.
 *
 * @module
 */
import type { PrivacyAccount } from "../admm/dp.ts";
import type { RoundKey, SynthEvent, SynthOptions, SynthRecord } from "../admm/synth.ts";
import { VERSION } from "../version.ts";

/** The version written into manifests: the package's ({@link VERSION}). */
export const SYNTH_TOOL_VERSION: string = VERSION;

/** One invocation of a run (a resumed run has several). Not part of the settings compared on resume. */
export interface SynthInvocation {
  /** The command line, when run from the CLI. */
  command?: string[];
  /** ISO time of the start. */
  startedAt: string;
  /** ISO time of the last write. */
  endedAt: string;
  /** The runtime, e.g. "Deno 2.9.6" (a browser's user agent in a page). */
  runtime: string;
  /** The WebGPU adapter. */
  adapter: string;
  /** True when the CPU-sized defaults replaced the paper's. */
  cpuDefaults: boolean;
  /** Rounds completed by this invocation. */
  rounds: number;
}

/** What a synth run wrote or returns besides its records. */
export interface SynthManifest {
  /** "gradmm-ts synth". */
  tool: string;
  /** The version of the tool that wrote it. */
  version: string;
  /** Every setting that decides the records; compared as JSON text when a run resumes. */
  settings: Record<string, unknown>;
  /** The model folder and its files' sha256 (runs from files only). */
  model?: { spec: string; dir: string; files: Record<string, string> };
  /** The data file and its sha256 (runs from files only). */
  data?: { path: string; sha256: string };
  /** The WebGPU adapter (several, comma-separated, in a merge of shards from different ones). */
  adapter: string;
  /** The rounds whose records are in the output. */
  completed: RoundKey[];
  /** Per label word, the target's report (admm/target.ts). */
  targets: Record<string, unknown>;
  /** Seconds per phase, summed over rounds. */
  timings: Record<string, number>;
  /** Elapsed seconds, summed over invocations. */
  wallSeconds: number;
  /** Token ids the filter allows. */
  allowedTokens?: number;
  /** Set on a shard's manifest only (`cli.ts merge` drops it). */
  shard?: { index: number; count: number };
  /** DP runs: the (ε, δ) spent and what it does not cover. */
  privacy?: PrivacyAccount;
  /** The invocations that wrote it, the first first. */
  invocations: SynthInvocation[];
}

/**
 * The settings record of a manifest: the options with the task written out (name, template,
 * label words, prefixes) so that it is plain JSON. `extra` goes first (job-level settings such as
 * f16 weights, present only when not the default so older manifests still match).
 */
export function synthSettingsRecord(
  options: SynthOptions,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const { task } = options;
  const record = {
    ...extra,
    ...options,
    task: task.name,
    template: task.suffix,
    labelWords: task.labelWords,
    prefix: task.labelWords.map((_, c) => task.decodePrefix(c)),
    admm: options.admm,
  };
  return JSON.parse(JSON.stringify(record));
}

/** Where a ledger resumes from: what an earlier invocation's files hold. */
export interface SynthLedgerState {
  /** The records of the completed rounds. */
  records: SynthRecord[];
  /** The completed rounds. */
  completed: RoundKey[];
  /** The targets' reports by label word. */
  targets: Record<string, unknown>;
  /** Seconds per phase. */
  timings: Record<string, number>;
  /** Elapsed seconds so far. */
  wallSeconds: number;
  /** The earlier invocations. */
  invocations: SynthInvocation[];
}

/** The running state of a synth run, fed with its events. */
export class SynthLedger {
  /** Every record so far, earlier invocations' included. */
  readonly records: SynthRecord[];
  /** The completed rounds. */
  readonly completed: RoundKey[];
  /** Seconds per phase, summed over rounds. */
  readonly timings: Record<string, number>;
  /** Token ids the filter allows (known after the plan). */
  allowedTokens: number | undefined;
  /** The privacy account of a DP run (known after the plan). */
  privacy: PrivacyAccount | undefined;
  /** Rounds completed by this invocation. */
  roundsThisRun = 0;
  private readonly targets: Record<string, unknown>;
  private readonly previousWall: number;
  private readonly invocations: SynthInvocation[];
  private readonly started = performance.now();
  private readonly startedAt = new Date().toISOString();

  /** `labelWords` orders the targets; `resumed` is the state an earlier invocation left. */
  constructor(private readonly labelWords: string[], resumed?: SynthLedgerState) {
    this.records = [...(resumed?.records ?? [])];
    this.completed = [...(resumed?.completed ?? [])];
    this.targets = { ...(resumed?.targets ?? {}) };
    this.timings = { init: 0, zstep: 0, xstep: 0, final: 0, ...resumed?.timings };
    this.previousWall = resumed?.wallSeconds ?? 0;
    this.invocations = [...(resumed?.invocations ?? [])];
  }

  /** True when `key` was completed (by this invocation or an earlier one). */
  isCompleted(key: RoundKey): boolean {
    return this.completed.some((c) =>
      c.rho === key.rho && c.classIndex === key.classIndex && c.round === key.round
    );
  }

  /** Takes in one event of `runSynth`. */
  record(e: SynthEvent): void {
    if (e.kind === "plan") {
      this.allowedTokens = e.allowedTokens;
      this.privacy = e.privacy;
    } else if (e.kind === "target") {
      const nll = e.nllTarget === undefined ? {} : { refineNllTarget: e.nllTarget };
      this.targets[this.labelWords[e.classIndex]] = { ...e.report, ...nll };
    } else if (e.kind === "round") {
      this.records.push(...e.records);
      this.completed.push(e.key);
      this.roundsThisRun++;
      for (const [k, ms] of Object.entries(e.timings)) this.timings[k] = (this.timings[k] ?? 0) + ms / 1000;
    }
  }

  /**
   * The manifest as of now. Targets of classes finished in an earlier invocation are kept, listed
   * in class order, so that it does not depend on which invocation or shard computed them.
   */
  manifest(
    base:
      & { settings: Record<string, unknown>; adapter: string }
      & Pick<SynthManifest, "model" | "data" | "shard">,
    invocation: Omit<SynthInvocation, "startedAt" | "endedAt" | "rounds">,
  ): SynthManifest {
    const targets = Object.fromEntries(
      this.labelWords.filter((w) => w in this.targets).map((w) => [w, this.targets[w]]),
    );
    const current: SynthInvocation = {
      ...(invocation.command ? { command: invocation.command } : {}),
      startedAt: this.startedAt,
      endedAt: new Date().toISOString(),
      runtime: invocation.runtime,
      adapter: invocation.adapter,
      cpuDefaults: invocation.cpuDefaults,
      rounds: this.roundsThisRun,
    };
    return {
      tool: "gradmm-ts synth",
      version: SYNTH_TOOL_VERSION,
      settings: base.settings,
      ...(base.model ? { model: base.model } : {}),
      ...(base.data ? { data: base.data } : {}),
      adapter: base.adapter,
      completed: this.completed,
      targets,
      timings: this.timings,
      wallSeconds: this.previousWall + (performance.now() - this.started) / 1000,
      allowedTokens: this.allowedTokens,
      ...(base.shard ? { shard: { index: base.shard.index, count: base.shard.count } } : {}),
      privacy: this.privacy,
      invocations: [...this.invocations, current],
    };
  }
}
