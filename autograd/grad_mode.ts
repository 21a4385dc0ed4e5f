/**
 * Autograd's per-context state: whether gradients are being recorded ({@link noGrad}) and the
 * stack of open tensor scopes (`scope` in tensor.ts). It is keyed by the GPU context, so the
 * kernels layer knows nothing of autograd.
 *
 * @module
 */
import type { GpuContext } from "../kernels/device.ts";

/** What autograd tracks per context. */
export interface AutogradState {
  /** Nesting depth of {@link noGrad}; gradients are recorded only at 0. */
  gradDisabled: number;
  /**
   * Open tensor scopes, innermost last: every tensor created while a scope is open is registered
   * in the innermost one and disposed when it closes.
   */
  readonly scopes: Set<{ dispose(): void }>[];
}

const states = new WeakMap<GpuContext, AutogradState>();

/** The autograd state of `ctx` (created on first use). */
export function autogradState(ctx: GpuContext): AutogradState {
  let s = states.get(ctx);
  if (!s) {
    s = { gradDisabled: 0, scopes: [] };
    states.set(ctx, s);
  }
  return s;
}

/** Whether ops on `ctx` are recorded for backward now (false inside {@link noGrad}). */
export function gradEnabled(ctx: GpuContext): boolean {
  return autogradState(ctx).gradDisabled === 0;
}

/**
 * Runs `fn` with gradient recording disabled on `ctx`. With an async `fn`, recording is back on
 * as soon as `fn` returns its promise (before it settles): disable it inside the async body.
 */
export function noGrad<T>(ctx: GpuContext, fn: () => T): T {
  const s = autogradState(ctx);
  s.gradDisabled++;
  try {
    return fn();
  } finally {
    s.gradDisabled--;
  }
}
