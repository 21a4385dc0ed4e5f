/**
 * What the demo page does with the engine, without the DOM: open a model folder served over
 * HTTP, continue a prompt greedily, and run a small synth on a JSONL file from a URL.
 *
 * @module
 */
import {
  bytesSource,
  type CausalLM,
  generateText,
  type GpuContext,
  loadModel,
  loadTokenizer,
  type ModelSource,
  parseJsonl,
  resolveSynthSettings,
  runSynth,
  type SynthRecord,
  type Tokenizer,
  urlSource,
} from "../mod.ts";
import type { SynthEvent, TextCodec } from "../admm/synth.ts";
import type { DemoSynthSettings } from "./params.ts";

/** A model and its tokenizer, loaded from one folder (served over HTTP or picked from disk). */
export interface DemoModel {
  /** The folder's URL, or the name of a folder picked from disk. */
  readonly name: string;
  readonly model: CausalLM;
  readonly tokenizer: Tokenizer;
  /** Seconds the download and upload took. */
  readonly loadS: number;
}

/** Loads a Hugging Face model folder: tokenizer.json and the rest, config.json, the safetensors. */
export async function openDemoModel(ctx: GpuContext, source: ModelSource): Promise<DemoModel> {
  const t0 = performance.now();
  const tokenizer = await loadTokenizer(source);
  const model = await loadModel(ctx, source);
  return { name: source.name, model, tokenizer, loadS: (performance.now() - t0) / 1000 };
}

/** A model folder served over HTTP at `url` (relative to the page). */
export function servedFolder(url: string): ModelSource {
  return urlSource(url);
}

/**
 * A model folder picked with `<input type="file" webkitdirectory>`: its top-level files by name
 * (files in subfolders are ignored, as a Hugging Face folder keeps everything at the top).
 */
export function pickedFolder(files: Iterable<File>): ModelSource {
  const byName = new Map<string, File>();
  let folder = "picked folder";
  for (const f of files) {
    const parts = (f.webkitRelativePath || f.name).split("/");
    if (parts.length > 2) continue;
    if (parts.length === 2) folder = parts[0];
    byName.set(f.name, f);
  }
  if (!byName.has("config.json")) {
    throw new Error(`the picked folder '${folder}' has no config.json: pick a Hugging Face model folder`);
  }
  return bytesSource(byName, folder);
}

/** A greedy continuation: the new token ids (prompt excluded) and their text. */
export interface DemoGeneration {
  prompt: string;
  promptIds: number[];
  ids: number[];
  text: string;
  finishReason: "eos" | "length";
  seconds: number;
}

/** Continues `prompt` greedily by at most `tokens` new tokens (the CLI's `generate` path). */
export async function greedyContinuation(
  m: DemoModel,
  prompt: string,
  tokens: number,
): Promise<DemoGeneration> {
  const promptIds = m.tokenizer.encode(prompt);
  if (promptIds.length === 0) throw new Error("the prompt has no tokens: type some text to continue");
  const t0 = performance.now();
  const r = await generateText(m.model, m.tokenizer, [prompt], { maxNewTokens: tokens, greedy: true });
  return {
    prompt,
    promptIds,
    ids: r.tokens[0],
    text: r.texts[0],
    finishReason: r.finishReasons[0],
    seconds: (performance.now() - t0) / 1000,
  };
}

/** The codec synth needs, from a tokenizer (pad falls back to EOS, then 0, as the CLI does). */
function codecOf(tok: Tokenizer): TextCodec {
  return {
    encode: (t) => tok.encode(t),
    decode: (ids) => tok.decode(ids),
    vocabSize: tok.vocabSize,
    padId: tok.padId ?? tok.eosId ?? 0,
  };
}

/**
 * Runs synth on the SST-2 task with the page's small settings: `data` is the JSONL text, `source`
 * its name for error messages. The settings go through the same resolver as the CLI's and the
 * library's (api/synth_settings.ts), so the page runs what `cli.ts synth` runs with the same
 * flags on the same kind of adapter. Returns the records in the order they were made.
 */
export async function demoSynth(
  m: DemoModel,
  data: string,
  source: string,
  s: DemoSynthSettings,
  onEvent: (e: SynthEvent) => void,
): Promise<SynthRecord[]> {
  const examples = parseJsonl(data, { source });
  const { options } = resolveSynthSettings({
    task: "sst2",
    method: s.method,
    ...(s.method === "official" ? {} : { refineIterations: s.refineIterations }),
    realPool: Math.max(s.real, 2 * s.real),
    real: s.real,
    perClass: s.perClass,
    batch: s.batch,
    topk: s.topk,
    length: s.length,
    seed: s.seed,
    outerSteps: s.outerSteps,
    innerSteps: s.innerSteps,
    initCandidates: s.initCandidates,
  }, m.model.ctx.isCpuAdapter);
  const records: SynthRecord[] = [];
  await runSynth(
    m.model,
    codecOf(m.tokenizer),
    examples,
    options,
    () => false,
    (e) => {
      if (e.kind === "round") records.push(...e.records);
      onEvent(e);
    },
  );
  return records;
}
