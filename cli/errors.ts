/**
 * The CLI's error vocabulary and its one boundary: every expected failure ends as one line
 * `error: …` on stderr and an exit code (2: the input was bad and the user can fix it;
 * 1: the run failed at runtime — GPU, memory, network, file system, diverging optimisation).
 * Anything not recognised here is a bug and keeps its stack trace.
 */
import { GpuDeviceLostError, GpuLimitError, GpuUnavailableError } from "../kernels/device.ts";
import { GpuOutOfMemoryError } from "../kernels/pool.ts";
import {
  CheckpointError,
  ConfigError,
  HubError,
  SafetensorsError,
  TokenizerError,
} from "../models/errors.ts";

/** Exit code for bad input (flags, data, model files, outputs that would be unsafe to write). */
export const EXIT_BAD_INPUT = 2;
/** Exit code for a run that failed for reasons other than its input. */
export const EXIT_RUNTIME = 1;

/** Base of the CLI's expected errors: printed as one line, never with a stack. */
export class UserError extends Error {
  override name = "UserError";
  readonly userFacing = true;
  /** 2 for bad input (the default), 1 for runtime failures. */
  readonly exitCode: number;
  constructor(message: string, exitCode = EXIT_BAD_INPUT) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** An expected failure at runtime (exit code 1): a diverging optimisation, a full disk, ... */
export class RuntimeFailure extends UserError {
  override name = "RuntimeFailure";
  constructor(message: string) {
    super(message, EXIT_RUNTIME);
  }
}

const RUNTIME_CLASSES = [GpuUnavailableError, GpuLimitError, GpuDeviceLostError, GpuOutOfMemoryError];
const BAD_INPUT_CLASSES = [ConfigError, CheckpointError, SafetensorsError, TokenizerError];
const FS_ERRORS = [
  Deno.errors.NotFound,
  Deno.errors.PermissionDenied,
  Deno.errors.AlreadyExists,
  Deno.errors.IsADirectory,
  Deno.errors.NotADirectory,
  Deno.errors.FilesystemLoop,
  Deno.errors.NotCapable,
];

/**
 * How the boundary reports `e`: its one-line message and exit code, or null for an unexpected
 * error (a bug: the caller rethrows it so the stack is shown).
 */
export function describeError(e: unknown): { message: string; exitCode: number } | null {
  if (!(e instanceof Error)) return null;
  const line = (m: string) => m.split("\n").map((s) => s.trim()).filter(Boolean).join("; ");
  if (e instanceof UserError) return { message: line(e.message), exitCode: e.exitCode };
  if (e instanceof HubError) {
    const input = e.kind === "auth" || e.kind === "not-found" || e.kind === "spec";
    return { message: line(e.message), exitCode: input ? EXIT_BAD_INPUT : EXIT_RUNTIME };
  }
  if (BAD_INPUT_CLASSES.some((k) => e instanceof k)) {
    return { message: line(e.message), exitCode: EXIT_BAD_INPUT };
  }
  if (RUNTIME_CLASSES.some((k) => e instanceof k)) {
    return { message: line(e.message), exitCode: EXIT_RUNTIME };
  }
  // File-system failures outside the checked paths (disk full, permissions changed mid-run).
  if (FS_ERRORS.some((k) => e instanceof k) || /\(os error \d+\)/.test(e.message)) {
    return { message: line(e.message), exitCode: EXIT_RUNTIME };
  }
  // Library errors of this project that predate UserError carry `userFacing`.
  if ((e as { userFacing?: boolean }).userFacing) {
    const code = (e as { exitCode?: number }).exitCode;
    return { message: line(e.message), exitCode: code === EXIT_RUNTIME ? EXIT_RUNTIME : EXIT_BAD_INPUT };
  }
  return null;
}
