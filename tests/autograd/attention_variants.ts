/**
 * Runs an attention check with every kernel family: the GPU row kernels, the GPU flash kernels
 * (kernels/attention_flash.ts) and the CPU variant, whatever the adapter.
 */
import { type FlashTiling, setFlashAttentionOptions } from "../../kernels/attention_flash.ts";
import { ctx } from "../helpers.ts";

/** Forced block shapes for the flash kernels (see `FlashAttentionOptions.tiling`). */
export type ForcedTiling = Partial<Record<"forward" | "query" | "key", Partial<FlashTiling>>>;

/**
 * Runs `fn` with the GPU row kernels, the GPU flash kernels (with `tiling` forced, if given) and
 * the CPU variant; a failure names the variant. Restores the context and the flash settings.
 */
export async function withAttentionVariants(
  fn: () => Promise<unknown>,
  options: { tiling?: ForcedTiling; only?: ("rows" | "flash" | "cpu")[] } = {},
): Promise<void> {
  const c = await ctx();
  const savedCpu = c.cpuKernels;
  const variants = options.only ?? ["rows", "flash", "cpu"];
  for (const variant of variants) {
    c.cpuKernels = variant === "cpu";
    const saved = setFlashAttentionOptions({
      mode: variant === "flash" ? "flash" : "rows",
      tiling: variant === "flash" ? options.tiling ?? {} : {},
    });
    try {
      await fn();
    } catch (e) {
      throw new Error(`${variant} kernels: ${(e as Error).message}`, { cause: e });
    } finally {
      setFlashAttentionOptions(saved);
      c.cpuKernels = savedCpu;
    }
  }
}
