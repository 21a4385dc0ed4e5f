/**
 * Progress with an ETA on stderr for the long commands (synth, finetune, experiment). On a
 * terminal one status line is redrawn in place; otherwise (logs, CI, pipes) a plain line is
 * printed at the start, at most every `everyMs`, and at the end, so logs stay short.
 *
 * A run started inside another (experiment runs synth) reports to the outer one instead of
 * drawing its own line: see {@link withParent}.
 */
import { formatDuration } from "./io.ts";

/** Seconds left for the remaining `total − done` units at the rate so far; NaN before any progress. */
export function etaSeconds(elapsedSeconds: number, done: number, total: number): number {
  if (!(done > 0) || !(elapsedSeconds >= 0)) return NaN;
  return Math.max(0, (elapsedSeconds * (total - done)) / done);
}

/** One kind of work of a run made of several (synth rounds, fine-tuning steps), with its own rate. */
export interface EtaPhase {
  /** Units of this kind in the whole run. */
  total: number;
  /** Units finished, computed now or found cached. */
  done: number;
  /** Units computed in this process, and the seconds they took: the measured rate. */
  measuredUnits: number;
  measuredSeconds: number;
}

/**
 * Time left for a run of several phases: each phase's remaining units at its own measured rate.
 * A phase with work left but no measurement yet adds nothing and makes the estimate `partial` (a
 * lower bound); `seconds` is NaN when no phase with work left has been measured.
 */
export function phasedEta(phases: EtaPhase[]): { seconds: number; partial: boolean } {
  let seconds = 0;
  let known = 0;
  let partial = false;
  for (const p of phases) {
    const left = Math.max(0, p.total - p.done);
    if (left === 0) continue;
    if (p.measuredUnits > 0) {
      seconds += (left * p.measuredSeconds) / p.measuredUnits;
      known++;
    } else {
      partial = true;
    }
  }
  return { seconds: known > 0 || !partial ? seconds : NaN, partial };
}

/** A text bar of `width` cells, `fraction` of them filled: `[#####.....]`. */
export function progressBar(fraction: number, width: number): string {
  const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
  const filled = Math.floor(f * width); // full only when done
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}]`;
}

/** What one progress line shows. */
export interface ProgressState {
  label: string;
  done: number;
  total: number;
  /** What is counted ("rounds", "steps"). */
  unit: string;
  elapsedSeconds: number;
  /** NaN when unknown. */
  etaSeconds: number;
  /** The ETA is a lower bound (some work has no measured rate yet). */
  etaPartial?: boolean;
  /** The latest figures ("loss 0.6931"). */
  detail?: string;
}

/**
 * One progress line: with `bar` (a terminal) `label [####....] 3/10 rounds 30% · …`, else
 * `label: 3/10 rounds (30%) · …`; both then `elapsed 1m 02s, eta 2m 25s · detail`.
 */
export function formatProgress(s: ProgressState, opts: { bar: boolean; width?: number }): string {
  const fraction = s.total > 0 ? s.done / s.total : 0;
  const pct = `${Math.floor(fraction * 100)}%`;
  const count = `${Math.floor(s.done)}/${s.total} ${s.unit}`;
  const eta = Number.isFinite(s.etaSeconds)
    ? `eta ${formatDuration(s.etaSeconds)}${s.etaPartial ? "+" : ""}`
    : "eta ?";
  const head = opts.bar
    ? `${s.label} ${progressBar(fraction, opts.width ?? 20)} ${count} ${pct}`
    : `${s.label}: ${count} (${pct})`;
  return `${head} · elapsed ${formatDuration(s.elapsedSeconds)}, ${eta}${s.detail ? ` · ${s.detail}` : ""}`;
}

/** Where a {@link Progress} writes and how it tells time (injected by tests). */
export interface ProgressIo {
  /** Redraw one line in place (default: stderr is a terminal). */
  terminal: boolean;
  /** Raw text to the terminal, no newline added. */
  write(text: string): void;
  /** One whole line (console.error). */
  print(line: string): void;
  /** Milliseconds. */
  now(): number;
  /** Terminal width: the status line is cut to it so that it never wraps. */
  columns(): number;
}

/** Options of a {@link Progress}. */
export interface ProgressOptions {
  label: string;
  total: number;
  unit: string;
  /** Units already done before this process started (a resumed run): not part of the rate. */
  start?: number;
  /** Plain mode: at most one line per this many ms between the first and the last (default 10 s). */
  everyMs?: number;
  io?: Partial<ProgressIo>;
}

const encoder = new TextEncoder();
const CLEAR_LINE = "\r\x1b[2K";

function stderrIo(): ProgressIo {
  return {
    terminal: Deno.stderr.isTerminal(),
    write: (text) => void Deno.stderr.writeSync(encoder.encode(text)),
    print: (line) => console.error(line),
    now: () => performance.now(),
    columns: () => {
      try {
        return Deno.consoleSize().columns;
      } catch {
        return 100;
      }
    },
  };
}

/** The progress whose line is on the terminal now, so that an error can clear it first. */
let drawn: Progress | null = null;

/** Erases the status line, if one is drawn (the CLI's error boundary calls it before printing). */
export function clearProgressLine(): void {
  drawn?.clear();
}

/** How an outer run receives an inner run's progress (see {@link withParent}). */
export interface ParentLink {
  /** The outer run's progress: the inner run's permanent lines go through it. */
  progress: Progress;
  /** Called on every update of the inner run, in the inner run's units. */
  onChild(done: number, total: number, detail?: string): void;
}

let parent: ParentLink | null = null;

/**
 * Runs `fn` with `link` as the parent of every {@link Progress} created inside it: those report
 * to `link.onChild` and log through `link.progress`, and draw nothing themselves, so that the
 * terminal shows one line with the overall ETA.
 */
export async function withParent<T>(link: ParentLink, fn: () => Promise<T>): Promise<T> {
  const outer = parent;
  parent = link;
  try {
    return await fn();
  } finally {
    parent = outer;
  }
}

/** A progress display with an ETA: see the module comment. */
export class Progress {
  readonly label: string;
  readonly unit: string;
  total: number;
  private readonly start: number;
  private readonly everyMs: number;
  private readonly io: ProgressIo;
  private readonly parent: ParentLink | null;
  private readonly t0: number;
  private lastPrint = -Infinity;
  private line = "";
  private done = 0;
  private finished = false;

  constructor(opts: ProgressOptions) {
    this.label = opts.label;
    this.unit = opts.unit;
    this.total = opts.total;
    this.start = opts.start ?? 0;
    this.done = this.start;
    this.everyMs = opts.everyMs ?? 10_000;
    this.io = { ...stderrIo(), ...opts.io };
    this.parent = parent;
    this.t0 = this.io.now();
  }

  /** Seconds since this progress was created. */
  get elapsedSeconds(): number {
    return (this.io.now() - this.t0) / 1000;
  }

  /**
   * Records that `done` of `total` units are finished (fractions allowed) and shows it. `eta`
   * replaces the estimate from this run's own rate (experiment combines several rates).
   */
  update(done: number, detail?: string, eta?: { seconds: number; partial: boolean }): void {
    this.done = done;
    if (this.parent) {
      this.parent.onChild(done, this.total, detail);
      return;
    }
    const elapsed = this.elapsedSeconds;
    const text = formatProgress({
      label: this.label,
      done,
      total: this.total,
      unit: this.unit,
      elapsedSeconds: elapsed,
      etaSeconds: eta ? eta.seconds : etaSeconds(elapsed, done - this.start, this.total - this.start),
      etaPartial: eta?.partial,
      detail,
    }, { bar: this.io.terminal });
    if (this.io.terminal) {
      // Some terminals (and pseudo-terminals) report no width: assume a common one.
      const columns = this.io.columns();
      this.line = text.slice(0, (columns >= 20 ? columns : 100) - 1);
      this.io.write(CLEAR_LINE + this.line);
      drawn = this;
      return;
    }
    const now = this.io.now();
    const last = done >= this.total;
    if (now - this.lastPrint >= this.everyMs || (last && !this.finished)) {
      this.io.print(text);
      this.lastPrint = now;
      this.finished = last;
    }
  }

  /** Prints a permanent line (a finished round, an evaluation) without breaking the status line. */
  log(line: string): void {
    if (this.parent) return this.parent.progress.log(line);
    if (this.io.terminal && this.line) {
      this.io.write(CLEAR_LINE);
      this.io.print(line);
      this.io.write(this.line);
      return;
    }
    this.io.print(line);
  }

  /** Removes the status line (terminal) before the run's last words; plain mode prints nothing. */
  clear(): void {
    if (this.parent) return this.parent.progress.clear();
    if (this.io.terminal && this.line) this.io.write(CLEAR_LINE);
    this.line = "";
    if (drawn === this) drawn = null;
  }
}

/**
 * An {@link EtaPhase} measured while it runs, one piece at a time (a synth run, a fine-tuning
 * run): `begin` a piece, `advance` within it, `end` it; `skip` counts cached work as done without
 * touching the measured rate.
 */
export class MeasuredPhase implements EtaPhase {
  done = 0;
  measuredUnits = 0;
  measuredSeconds = 0;
  private piece: { base: number; already: number; units0: number; seconds0: number; t0: number } | null =
    null;

  constructor(readonly total: number, private readonly now: () => number = () => performance.now()) {}

  /** Counts `units` finished elsewhere or earlier (a cache hit). */
  skip(units: number): void {
    this.done += units;
  }

  /** Starts a piece of which `already` units were finished before (a resumed run). */
  begin(already = 0): void {
    this.piece = {
      base: this.done,
      already,
      units0: this.measuredUnits,
      seconds0: this.measuredSeconds,
      t0: this.now(),
    };
    this.done += already;
  }

  /** `pieceDone` units of the current piece are finished (counting the `already` ones). */
  advance(pieceDone: number): void {
    const p = this.piece;
    if (!p) return;
    this.done = p.base + pieceDone;
    this.measuredUnits = p.units0 + Math.max(0, pieceDone - p.already);
    this.measuredSeconds = p.seconds0 + (this.now() - p.t0) / 1000;
  }

  /** Ends the current piece with `pieceTotal` units finished. */
  end(pieceTotal: number): void {
    this.advance(pieceTotal);
    this.piece = null;
  }
}
