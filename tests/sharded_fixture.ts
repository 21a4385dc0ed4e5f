/**
 * Builds sharded checkpoints for tests from a small in-repository model, so sharded loading, the
 * hub's multi-file download and F16 widening are tested without the 39 MB gpt2-d256 (whose real
 * bytes are still checked by tests/shared/, `deno task test:shared`).
 */
import { join } from "node:path";
import { openCheckpoint, writeSafetensors } from "../host/files.ts";
import type { TensorToWrite, WritableDtype } from "../models/safetensors.ts";

/** Options of {@link writeShardedCopy}. */
export interface ShardedCopyOptions {
  /** Stored dtype of every tensor (default F16, like gpt2-d256). */
  dtype?: WritableDtype;
  /** Number of shards (default 2); tensors are split in file order by bytes. */
  shards?: number;
}

/**
 * Copies the model folder `src` into `dst` with its weights re-stored as `shards` safetensors
 * files `model-0000i-of-0000n.safetensors` in `dtype`, plus `model.safetensors.index.json`
 * (`weight_map`, `metadata.total_size`) as transformers writes them. Every other file (config,
 * tokenizer) is copied unchanged. Returns the shard file names.
 */
export async function writeShardedCopy(
  src: string,
  dst: string,
  opts: ShardedCopyOptions = {},
): Promise<string[]> {
  const dtype = opts.dtype ?? "F16";
  const count = opts.shards ?? 2;
  await Deno.mkdir(dst, { recursive: true });
  for await (const entry of Deno.readDir(src)) {
    if (entry.isFile && !entry.name.endsWith(".safetensors") && !entry.name.endsWith(".index.json")) {
      await Deno.copyFile(join(src, entry.name), join(dst, entry.name));
    }
  }
  using checkpoint = await openCheckpoint(src);
  const names = [...checkpoint.tensors.keys()];
  if (names.length < count) throw new Error(`${src}: ${names.length} tensors cannot fill ${count} shards`);
  const sizes = names.map((n) => checkpoint.info(n).shape.reduce((a, b) => a * b, 1));
  const total = sizes.reduce((a, b) => a + b, 0);
  // Split in file order by element count: shards advance one at a time (none is skipped), and
  // enough tensors are left for every later shard, so no shard is empty.
  const groups: string[][] = Array.from({ length: count }, () => []);
  let seen = 0;
  let shard = 0;
  names.forEach((name, i) => {
    const byShare = Math.min(count - 1, Math.floor((seen / total) * count));
    shard = Math.max(Math.min(byShare, shard + 1), shard, count - (names.length - i));
    groups[shard].push(name);
    seen += sizes[i];
  });
  const pad = (k: number) => String(k).padStart(5, "0");
  const files = groups.map((_, k) => `model-${pad(k + 1)}-of-${pad(count)}.safetensors`);
  const weightMap: Record<string, string> = {};
  const bytesPer = dtype === "F32" ? 4 : 2;
  for (const [k, group] of groups.entries()) {
    const tensors = new Map<string, TensorToWrite>();
    for (const name of group) {
      tensors.set(name, {
        data: await checkpoint.read(name),
        shape: [...checkpoint.info(name).shape],
        dtype,
      });
      weightMap[name] = files[k];
    }
    await writeSafetensors(join(dst, files[k]), tensors);
  }
  const index = { metadata: { total_size: total * bytesPer }, weight_map: weightMap };
  await Deno.writeTextFile(join(dst, "model.safetensors.index.json"), JSON.stringify(index, null, 2) + "\n");
  return files;
}
