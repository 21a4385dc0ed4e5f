/**
 * The one-call API with Deno's file access: the same `synth`, `generate`, `evaluate` and
 * `finetune` as mod.ts, whose `model` may also be a folder path or a hub id `org/name[@rev]`
 * (downloaded into the cache), and whose data may be a JSONL file path. `synth` with no model or
 * data runs the CLI's built-in default (the bundled gpt2-d128 and SST-2 validation split).
 *
 * @module
 */
import { synth as synthCore, type SynthRequest, type SynthResult } from "../api/synth.ts";
import { generate as generateCore, type GenerateRequest } from "../api/generate.ts";
import { evaluate as evaluateCore, type EvaluateRequest } from "../api/evaluate.ts";
import { finetune as finetuneCore, type FinetuneCallResult, type FinetuneRequest } from "../api/finetune.ts";
import type { ModelInput } from "../api/model.ts";
import { type Example, parseJsonl } from "../data/examples.ts";
import type { Evaluation } from "../train/finetune.ts";
import type { GenerateTextResult } from "../models/generate.ts";
import { folderSource } from "./files.ts";
import { resolveModel } from "./hub.ts";
import { bundledData, bundledModel } from "./assets.ts";

/** A model as the host API takes it: loaded, a `ModelSource`, a folder path or a hub id. */
export type HostModelInput = ModelInput | string;

/** Labelled examples, or the path of a JSONL file of `{ text, label }` lines. */
export type HostExamples = readonly Example[] | string;

/** A folder or hub id as a `ModelSource` (downloading a hub model first); other inputs as they are. */
export async function hostModelInput(model: HostModelInput): Promise<ModelInput> {
  if (typeof model !== "string") return model;
  const { dir } = await resolveModel(model);
  return folderSource(dir);
}

/** Examples from a JSONL file path (text and label fields as named), or as given. */
export async function hostExamples(
  data: HostExamples,
  fields: { textField?: string; labelField?: string } = {},
): Promise<readonly Example[]> {
  if (typeof data !== "string") return data;
  return parseJsonl(await Deno.readTextFile(data), { ...fields, source: data });
}

/** The request of the host `synth`: mod.ts's, with paths allowed; `model` and `data` default to the bundled ones. */
export interface HostSynthRequest extends Omit<SynthRequest, "model" | "data"> {
  /** Default: the bundled gpt2-d128. */
  model?: HostModelInput;
  /** Default: the bundled SST-2 validation split. */
  data?: HostExamples;
  /** Text field of a JSONL `data` file (default "text"). */
  textField?: string;
  /** Label field of a JSONL `data` file (default "label"). */
  labelField?: string;
}

/**
 * GRADMM in one call (see mod.ts's `synth`); `model` may be a folder or hub id and `data` a
 * JSONL path, and both default to the CLI's bundled ones.
 */
export async function synth(request: HostSynthRequest = {}): Promise<SynthResult> {
  const { textField, labelField, ...rest } = request;
  return synthCore({
    ...rest,
    model: await hostModelInput(request.model ?? await bundledModel()),
    data: await hostExamples(request.data ?? await bundledData(), { textField, labelField }),
  });
}

/** Generation in one call (see mod.ts's `generate`); `model` may be a folder or hub id. */
export async function generate(
  request: Omit<GenerateRequest, "model"> & { model: HostModelInput },
): Promise<GenerateTextResult> {
  return generateCore({ ...request, model: await hostModelInput(request.model) });
}

/** Evaluation in one call (see mod.ts's `evaluate`); `model` may be a folder or hub id, `data` a path. */
export async function evaluate(
  request: Omit<EvaluateRequest, "model" | "data"> & { model: HostModelInput; data: HostExamples },
): Promise<Evaluation> {
  return evaluateCore({
    ...request,
    model: await hostModelInput(request.model),
    data: await hostExamples(request.data),
  });
}

/** Fine-tuning in one call (see mod.ts's `finetune`); `model` may be a folder or hub id, texts paths. */
export async function finetune(
  request: Omit<FinetuneRequest, "model" | "train" | "valid"> & {
    model: HostModelInput;
    train: HostExamples;
    valid?: HostExamples;
  },
): Promise<FinetuneCallResult> {
  return finetuneCore({
    ...request,
    model: await hostModelInput(request.model),
    train: await hostExamples(request.train),
    valid: request.valid === undefined ? undefined : await hostExamples(request.valid),
  });
}
