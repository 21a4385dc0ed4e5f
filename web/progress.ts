/**
 * Live progress of a synth run for the page: which class and round, the outer step, the
 * matching loss of the current discrete tokens, and an ETA extrapolated from the time so far.
 * Pure bookkeeping over the synth events (no DOM), so it can be tested without a browser.
 *
 * @module
 */
// SynthEvent is not (yet) exported by mod.ts; a type-only import adds nothing to the bundle.
import type { SynthEvent } from "../admm/synth.ts";

/** One progress line, as the page shows it. */
export interface SynthProgress {
  classIndex: number;
  /** Round within the class (0-based). */
  round: number;
  /** Outer step finished in this round (0 before the first). */
  step: number;
  steps: number;
  /** Matching loss of the projected tokens at this step (NaN before the first step). */
  matchLoss: number;
  /** Rounds finished over the whole run. */
  roundsDone: number;
  roundsTotal: number;
  /** Share of the run done, 0..1 (outer steps as the unit of work). */
  fraction: number;
  elapsedS: number;
  /** Seconds left, extrapolated linearly; NaN until some work is done. */
  etaS: number;
}

/** Follows the events of one `runSynth` call; `update` returns the new snapshot. */
export class SynthProgressTracker {
  #start: number;
  #now: () => number;
  #roundsTotal = 0;
  #roundsDone = 0;
  #snap: SynthProgress;

  /** `now` returns milliseconds (performance.now by default; tests pass a fake clock). */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
    this.#start = now();
    this.#snap = {
      classIndex: 0,
      round: 0,
      step: 0,
      steps: 0,
      matchLoss: NaN,
      roundsDone: 0,
      roundsTotal: 0,
      fraction: 0,
      elapsedS: 0,
      etaS: NaN,
    };
  }

  /** Folds one event in. */
  update(e: SynthEvent): SynthProgress {
    const s = { ...this.#snap };
    if (e.kind === "plan") {
      this.#roundsTotal = e.classes * e.roundsPerClass * e.rhos.length;
    } else if (e.kind === "step") {
      s.classIndex = e.key.classIndex;
      s.round = e.key.round;
      s.step = e.progress.outerStep;
      s.steps = e.progress.outerSteps;
      s.matchLoss = e.progress.discreteLoss;
    } else if (e.kind === "round") {
      this.#roundsDone++;
      s.step = s.steps;
      s.matchLoss = e.records[0]?.match_loss ?? s.matchLoss;
    } else if (e.kind === "refine") {
      s.step = s.steps; // the ADMM steps are done; the page does not split the round further
    } else {
      s.classIndex = e.classIndex;
      s.step = 0;
    }
    s.roundsDone = this.#roundsDone;
    s.roundsTotal = this.#roundsTotal;
    const inRound = e.kind === "step" && s.steps > 0 ? s.step / s.steps : 0;
    s.fraction = this.#roundsTotal > 0 ? Math.min(1, (this.#roundsDone + inRound) / this.#roundsTotal) : 0;
    s.elapsedS = (this.#now() - this.#start) / 1000;
    s.etaS = s.fraction > 0 ? s.elapsedS / s.fraction - s.elapsedS : NaN;
    this.#snap = s;
    return s;
  }
}

/** "1 m 05 s", "12 s", or "–" for an unknown duration. */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "–";
  const whole = Math.round(s);
  if (whole < 60) return `${whole} s`;
  const m = Math.floor(whole / 60);
  return `${m} m ${String(whole % 60).padStart(2, "0")} s`;
}
