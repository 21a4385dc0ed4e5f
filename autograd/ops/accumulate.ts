/** In-place gradient accumulation, used by backward() and the optimisers. */
import { axpyKernel } from "../../kernels/elementwise.ts";
import { fmtShape, ShapeError, type Tensor } from "../tensor.ts";

/** `dst += alpha * src` in place (same number of elements). Not recorded by autograd. */
export function addInto(dst: Tensor, src: Tensor, alpha = 1): void {
  if (dst.size !== src.size) {
    throw new ShapeError(`addInto: ${fmtShape(dst.shape)} and ${fmtShape(src.shape)} differ in size`);
  }
  axpyKernel(dst.ctx, dst.buffer, src.buffer, dst.size, alpha);
}
