/**
 * `synth()`: GRADMM in one call. Give a model and labelled examples; every setting has a default
 * (api/defaults.ts, the same as the CLI's). Returns the synthetic records and the run's manifest.
 *
 * @module
 */
import { type RoundKey, runSynth, type SynthEvent, type SynthRecord } from "../admm/synth.ts";
import type { Example } from "../data/examples.ts";
import { type ModelInput, type ModelLoadOptions, useModel } from "./model.ts";
import { SynthLedger, type SynthManifest, synthSettingsRecord } from "./synth_manifest.ts";
import { resolveSynthSettings, type SynthSettings } from "./synth_settings.ts";

/** A one-call synth: the model and the data, and any settings (all optional). */
export interface SynthRequest extends SynthSettings, ModelLoadOptions {
  /** A loaded model + tokenizer (kept), or a `ModelSource` (loaded for the call, then freed). */
  model: ModelInput;
  /** Labelled real examples ({ text, label }); labels outside the task's classes are dropped. */
  data: readonly Example[];
  /** Progress: the plan, each class target, each outer step, each finished round (a promise it returns is awaited). */
  onEvent?: (e: SynthEvent) => unknown;
  /** Rounds to skip (already done elsewhere, or another shard's). */
  skip?: (key: RoundKey) => boolean;
}

/** What {@link synth} returns. */
export interface SynthResult {
  /** The synthetic examples, class by class, then ρ, then round. */
  records: SynthRecord[];
  /** Every setting, the targets' reports, timings and the privacy account (DP runs). */
  manifest: SynthManifest;
}

/**
 * Generates synthetic labelled texts by gradient matching.
 *
 * @example
 * ```ts ignore
 * const { records } = await synth({ model: { model, tokenizer }, data, perClass: 10 });
 * ```
 */
export async function synth(request: SynthRequest): Promise<SynthResult> {
  const m = await useModel(request.model, request);
  try {
    const ctx = m.model.ctx;
    const { options, cpuDefaults } = resolveSynthSettings(request, ctx.isCpuAdapter);
    const ledger = new SynthLedger(options.task.labelWords);
    await runSynth(
      m.model,
      m.tokenizer,
      [...request.data],
      options,
      (key) => request.skip?.(key) ?? false,
      async (e) => {
        ledger.record(e);
        await request.onEvent?.(e);
      },
    );
    const manifest = ledger.manifest(
      { settings: synthSettingsRecord(options), adapter: ctx.adapterName },
      { runtime: globalThis.navigator?.userAgent ?? "unknown", adapter: ctx.adapterName, cpuDefaults },
    );
    return { records: ledger.records, manifest };
  } finally {
    m.release();
  }
}
