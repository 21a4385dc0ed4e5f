/**
 * Random-weight models generated directly on the GPU: for benchmarks of shapes whose checkpoints
 * would be gigabytes (phi-1.5's 1.4B parameters are 5.7 GB as f32), without writing or reading
 * a file.
 *
 * @module
 */
import type { GpuContext } from "../kernels/device.ts";
import { gaussianKernel } from "../kernels/random.ts";
import { fillBuffer, Tensor } from "../autograd/tensor.ts";
import { parseModelConfig } from "./config.ts";
import { chunkLimit, makeRowMatrix, type RowChunks } from "./chunked.ts";
import { type CausalLM, createModel } from "./model.ts";
import { expectedWeights } from "./weight_names.ts";

/** Options of {@link randomModel}. */
export interface RandomModelOptions {
  /** Seed of every weight (default 1). */
  seed?: number;
  /** Standard deviation of the matrices (default 0.02, transformers' initializer_range). */
  std?: number;
  /** Row-chunk size for the vocabulary matrices (default: the binding limit; see LoadOptions). */
  maxChunkBytes?: number;
}

/**
 * A model of `rawConfig`'s shapes (a config.json object) with N(0, std²) matrices, unit norm
 * weights and zero biases, generated on the GPU. Each matrix is a pure function of (seed, its
 * position in the weight list, element index), so a model built with row-chunked vocabulary
 * matrices holds exactly the same values as one built without.
 */
export function randomModel(
  ctx: GpuContext,
  rawConfig: Record<string, unknown>,
  opts: RandomModelOptions = {},
): CausalLM {
  const config = parseModelConfig(rawConfig, "config");
  const seed = opts.seed ?? 1;
  const std = opts.std ?? 0.02;
  const maxBytes = chunkLimit(ctx, opts.maxChunkBytes);
  const weights = new Map<string, Tensor | RowChunks>();
  const specs = expectedWeights(config);
  // The vocabulary matrices (the embedding is listed first) may be split into row chunks.
  const vocabulary = new Set([specs[0].name, "lm_head.weight"]);
  try {
    specs.forEach((spec, i) => {
      if (spec.optional) return; // a tied output layer is the embedding
      const name = spec.name;
      const streamSeed = seed * 1_000_003 + i;
      if (spec.shape.length === 2 && vocabulary.has(name)) {
        const [rows, cols] = spec.shape;
        const m = makeRowMatrix(ctx, [rows, cols], maxBytes, (t, start) => {
          // Each chunk continues the matrix's stream at its first element.
          gaussianKernel(ctx, t.buffer, t.size, streamSeed, std, start * cols);
        }, { name });
        weights.set(name, m);
        return;
      }
      const t = Tensor.empty(ctx, spec.shape, { name }).keep();
      weights.set(name, t);
      if (spec.shape.length === 2) gaussianKernel(ctx, t.buffer, t.size, streamSeed, std);
      else fillBuffer(ctx, t.buffer, t.size, name.endsWith(".bias") ? 0 : 1); // norms 1, biases 0
    });
  } catch (e) {
    for (const t of weights.values()) t.dispose();
    throw e;
  }
  return createModel(ctx, rawConfig, weights);
}
