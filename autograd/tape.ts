/**
 * Reverse-mode autograd. Each op output remembers its inputs and a backward rule
 * ({@link GradNode}); `backward(loss)` walks the graph in reverse topological order (found
 * iteratively, so deep graphs cannot overflow the stack) and accumulates gradients.
 */
import { fmtShape, type GradNode, scope, ShapeError, Tensor } from "./tensor.ts";
import { addInto } from "./ops/accumulate.ts";
import { gradEnabled, noGrad } from "./grad_mode.ts";

/** True when an op with these inputs must be recorded. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  let any = false;
  for (const t of inputs) {
    if (!t) continue;
    if (!gradEnabled(t.ctx)) return false;
    if (t.requiresGrad) any = true;
  }
  return any;
}

/**
 * Attaches a backward rule to `out` when any input requires a gradient (and recording is on).
 * Returns `out` for chaining. Every op calls this right after its forward kernel.
 */
export function record(out: Tensor, op: string, inputs: Tensor[], backward: GradNode["backward"]): Tensor {
  if (needsGrad(...inputs)) {
    out.requiresGrad = true;
    out.node = { op, inputs, backward };
  }
  return out;
}

/** Options for {@link backward}. */
export interface BackwardOptions {
  /** dLoss/dRoot; defaults to ones (the root is usually a scalar loss). */
  grad?: Tensor;
  /**
   * Also accumulate `.grad` on these non-leaf tensors (gradients with respect to any tensor,
   * e.g. input embeddings produced by a gather).
   */
  retainGradOf?: Tensor[];
}

/**
 * Computes d(root)/d(leaf) for every leaf with `requiresGrad` reachable from `root` and adds
 * it to `leaf.grad` (gradients accumulate across calls until `zeroGrad()`).
 */
export function backward(root: Tensor, options: BackwardOptions = {}): void {
  const ctx = root.ctx;
  if (!root.requiresGrad) {
    throw new Error(`backward() on ${root.label}: it does not depend on any tensor with requiresGrad`);
  }
  if (options.grad && options.grad.size !== root.size) {
    throw new ShapeError(
      `backward(): gradient shape ${fmtShape(options.grad.shape)} does not match root shape ${
        fmtShape(root.shape)
      }`,
    );
  }
  const order = topoOrder(root);
  const retain = new Set(options.retainGradOf ?? []);
  const grads = new Map<Tensor, Tensor>();
  noGrad(ctx, () => {
    grads.set(root, options.grad ? options.grad.detach() : Tensor.full(ctx, root.shape, 1));
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i];
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      if (!t.node || retain.has(t)) {
        // A leaf (or a tensor whose gradient the caller asked for): keep the sum in `.grad`.
        if (t.grad) addInto(t.grad, g);
        else t.grad = g.detach().keep();
        if (!t.node) {
          g.dispose();
          continue;
        }
      }
      const node = t.node;
      const inputGrads = scope(ctx, () => {
        const gs = node.backward(g);
        if (gs.length !== node.inputs.length) {
          throw new Error(`op '${node.op}' returned ${gs.length} gradients for ${node.inputs.length} inputs`);
        }
        // A rule may return gOut itself or the same tensor twice; copy so each has one owner.
        const seen = new Set<Tensor>([g]);
        return gs.map((x) => {
          if (!x) return null;
          if (seen.has(x) || x.disposed) return x.detach();
          seen.add(x);
          return x;
        });
      });
      g.dispose();
      for (let k = 0; k < node.inputs.length; k++) {
        const inp = node.inputs[k];
        const gi = inputGrads[k];
        if (!gi) continue;
        if (!inp.requiresGrad) {
          gi.dispose();
          continue;
        }
        if (gi.size !== inp.size) {
          throw new ShapeError(
            `op '${node.op}' produced a gradient of shape ${fmtShape(gi.shape)} for an input of shape ${
              fmtShape(inp.shape)
            }`,
          );
        }
        const prev = grads.get(inp);
        if (prev) {
          addInto(prev, gi);
          gi.dispose();
        } else {
          grads.set(inp, gi);
        }
      }
    }
  });
  for (const g of grads.values()) g.dispose();
}

/** Tensors reachable from `root`, inputs before outputs (iterative depth-first search). */
export function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  const stack: [Tensor, number][] = [[root, 0]];
  visited.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, next] = top;
    const inputs = t.node?.inputs ?? [];
    if (next < inputs.length) {
      top[1]++;
      const child = inputs[next];
      if (child.requiresGrad && !visited.has(child)) {
        visited.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}
