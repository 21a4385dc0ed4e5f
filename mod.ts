/**
 * gradmm-ts: synthetic training text by gradient matching (GRADMM, ICML 2025), on WebGPU.
 *
 * The module exposes the layers from the bottom up: the device ({@link createContext}),
 * tensors and autograd ({@link Tensor}, {@link backward}), the ops, the models and GRADMM.
 *
 * @example
 * ```ts
 * import { createContext, Tensor, mul, backward } from "./mod.ts";
 * const ctx = await createContext();
 * const x = Tensor.from(ctx, [1, 2, 3], [3], { requiresGrad: true });
 * const y = mul(x, x);
 * backward(y);
 * console.log(await x.grad!.read()); // 2, 4, 6
 * ```
 * @module
 */
export {
  type AdapterDescription,
  type ContextOptions,
  createContext,
  defaultContext,
  type DeviceLimits,
  GpuContext,
  GpuDeviceLostError,
  GpuLimitError,
  GpuUnavailableError,
} from "./kernels/device.ts";
export { type PoolStats } from "./kernels/pool.ts";
export { type GradNode, scope, ShapeError, Tensor, type TensorOptions } from "./autograd/tensor.ts";
export { backward, type BackwardOptions, record } from "./autograd/tape.ts";
export { Rng } from "./autograd/random.ts";
export { type HostTensor } from "./autograd/reference.ts";
export * from "./autograd/ops/elementwise.ts";
export { addInto } from "./autograd/ops/accumulate.ts";
