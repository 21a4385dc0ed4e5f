/**
 * cli/progress.ts without a clock or a terminal: the ETA arithmetic, the line formats, when plain
 * mode prints, what terminal mode writes, nesting (an inner run reports to the outer one), and
 * the phases of experiment's overall ETA. Time comes from a fake clock, so nothing here waits.
 */
import assert from "node:assert/strict";
import {
  etaSeconds,
  formatProgress,
  MeasuredPhase,
  phasedEta,
  Progress,
  progressBar,
  type ProgressIo,
  withParent,
} from "../../cli/progress.ts";

/** A fake clock and recorders of what a Progress writes. */
function fakeIo(terminal: boolean) {
  const clock = { ms: 0 };
  const lines: string[] = [];
  const raw: string[] = [];
  const io: ProgressIo = {
    terminal,
    write: (t) => void raw.push(t),
    print: (l) => void lines.push(l),
    now: () => clock.ms,
    columns: () => 80,
  };
  return { clock, lines, raw, io };
}

Deno.test("progress: eta is the remaining work at the rate so far, unknown before any", () => {
  assert.equal(etaSeconds(30, 3, 10), 70); // 10 s per unit, 7 left
  assert.equal(etaSeconds(12, 4, 4), 0);
  assert.equal(etaSeconds(5, 0.5, 2), 15);
  assert.ok(Number.isNaN(etaSeconds(10, 0, 10)));
  assert.equal(etaSeconds(10, 12, 10), 0, "never negative when done passes total");
});

Deno.test("progress: phased eta adds each phase's remaining units at its own rate", () => {
  // 4 rounds left at 20 s each + 90 steps left at 0.5 s each.
  const a = { total: 10, done: 6, measuredUnits: 2, measuredSeconds: 40 };
  const b = { total: 100, done: 10, measuredUnits: 10, measuredSeconds: 5 };
  assert.deepEqual(phasedEta([a, b]), { seconds: 80 + 45, partial: false });
  // A phase with work left and no measurement makes the estimate a lower bound.
  const unmeasured = { total: 100, done: 0, measuredUnits: 0, measuredSeconds: 0 };
  assert.deepEqual(phasedEta([a, unmeasured]), { seconds: 80, partial: true });
  const only = phasedEta([unmeasured]);
  assert.ok(Number.isNaN(only.seconds) && only.partial);
  // Cached work counts as done without a rate: nothing left, nothing to estimate.
  assert.deepEqual(phasedEta([{ total: 5, done: 5, measuredUnits: 0, measuredSeconds: 0 }]), {
    seconds: 0,
    partial: false,
  });
});

Deno.test("progress: bar and line formats", () => {
  assert.equal(progressBar(0.5, 10), "[#####.....]");
  assert.equal(progressBar(0, 4), "[....]");
  assert.equal(progressBar(2, 4), "[####]", "clamped");
  assert.equal(progressBar(NaN, 3), "[...]");
  const state = {
    label: "synth",
    done: 3.5,
    total: 10,
    unit: "rounds",
    elapsedSeconds: 65,
    etaSeconds: 125,
    detail: "loss 0.5",
  };
  assert.equal(
    formatProgress(state, { bar: false }),
    "synth: 3/10 rounds (35%) · elapsed 1m 05s, eta 2m 05s · loss 0.5",
  );
  assert.equal(
    formatProgress({ ...state, etaPartial: true }, { bar: true, width: 10 }),
    "synth [###.......] 3/10 rounds 35% · elapsed 1m 05s, eta 2m 05s+ · loss 0.5",
  );
  assert.match(formatProgress({ ...state, etaSeconds: NaN, detail: undefined }, { bar: false }), /eta \?$/);
});

Deno.test("progress: plain mode prints the first update, then at most one per interval, and the last", () => {
  const { clock, lines, raw, io } = fakeIo(false);
  const p = new Progress({ label: "finetune", total: 100, unit: "steps", everyMs: 10_000, io });
  for (let step = 1; step <= 100; step++) {
    clock.ms = step * 1000; // one step per second
    p.update(step, `loss ${(1 / step).toFixed(3)}`);
  }
  // Steps 1, 11, 21, ..., 91 (10 s apart), then 100 as the last.
  assert.equal(lines.length, 11, lines.join("\n"));
  assert.match(lines[0], /^finetune: 1\/100 steps \(1%\) · elapsed 1\.0s, eta 1m 39s · loss 1\.000$/);
  assert.match(lines[1], /^finetune: 11\/100 steps/);
  assert.match(lines.at(-1)!, /^finetune: 100\/100 steps \(100%\) · elapsed 1m 40s, eta 0\.0s/);
  assert.equal(raw.length, 0, "no terminal control characters outside a terminal");
  p.update(100);
  assert.equal(lines.length, 11, "the last line is printed once");
  p.log("saved");
  assert.equal(lines.at(-1), "saved");
});

Deno.test("progress: a resumed run's eta uses only the work done in this process", () => {
  const { clock, lines, io } = fakeIo(false);
  const p = new Progress({ label: "synth", total: 10, unit: "rounds", start: 6, io });
  clock.ms = 20_000;
  p.update(7); // one round in 20 s; three left
  assert.match(lines[0], /7\/10 rounds \(70%\) · elapsed 20\.0s, eta 1m 00s$/);
});

Deno.test("progress: terminal mode redraws one line and keeps logged lines above it", () => {
  const { clock, lines, raw, io } = fakeIo(true);
  const p = new Progress({ label: "synth", total: 4, unit: "rounds", io });
  clock.ms = 2000;
  p.update(1, "x".repeat(200));
  clock.ms = 4000;
  p.update(2);
  assert.equal(raw.length, 2);
  for (const r of raw) assert.ok(r.startsWith("\r\x1b[2K") && !r.includes("\n"), JSON.stringify(r));
  assert.ok(raw[0].length - "\r\x1b[2K".length <= 79, "cut to the terminal width");
  assert.match(raw[1], /synth \[#{10}\.{10}\] 2\/4 rounds 50% · elapsed 4\.0s, eta 4\.0s$/);
  p.log("round done");
  // The bar is erased, the line printed, the bar drawn again.
  assert.deepEqual(lines, ["round done"]);
  assert.equal(raw.at(-2), "\r\x1b[2K");
  assert.equal("\r\x1b[2K" + raw.at(-1), raw[1]);
  p.clear();
  assert.equal(raw.at(-1), "\r\x1b[2K");
  p.log("wrote 8 texts");
  assert.equal(raw.at(-1), "\r\x1b[2K", "no redraw after clear");
});

Deno.test("progress: a run inside withParent reports to the parent and draws nothing", async () => {
  const outer = fakeIo(false);
  const inner = fakeIo(false);
  const parent = new Progress({ label: "experiment", total: 3, unit: "tasks", io: outer.io });
  const seen: [number, number, string | undefined][] = [];
  await withParent({ progress: parent, onChild: (d, t, detail) => void seen.push([d, t, detail]) }, () => {
    const child = new Progress({ label: "synth", total: 2, unit: "rounds", io: inner.io });
    child.update(0.5, "step 1/2");
    child.update(2);
    child.log("round done");
    return Promise.resolve();
  });
  assert.deepEqual(seen, [[0.5, 2, "step 1/2"], [2, 2, undefined]]);
  assert.deepEqual(inner.lines, []);
  assert.deepEqual(outer.lines, ["round done"]);
  // Outside withParent a new progress is on its own again.
  const after = new Progress({ label: "synth", total: 1, unit: "rounds", io: inner.io });
  after.update(1);
  assert.equal(inner.lines.length, 1);
});

Deno.test("progress: measured phases count cached work as done, and only fresh work in the rate", () => {
  const clock = { ms: 0 };
  const phase = new MeasuredPhase(30, () => clock.ms);
  phase.skip(10); // a cached run of 10 units
  phase.begin(4); // a resumed run of 10 with 4 done before
  clock.ms = 12_000;
  phase.advance(7); // 3 fresh units in 12 s
  assert.deepEqual([phase.done, phase.measuredUnits, phase.measuredSeconds], [17, 3, 12]);
  assert.equal(phasedEta([phase]).seconds, 13 * 4);
  clock.ms = 36_000;
  phase.end(10);
  assert.deepEqual([phase.done, phase.measuredUnits, phase.measuredSeconds], [20, 6, 36]);
  phase.begin();
  clock.ms = 46_000;
  phase.advance(4); // the next run is faster: 4 units in 10 s; the rate pools both
  assert.deepEqual([phase.done, phase.measuredUnits, phase.measuredSeconds], [24, 10, 46]);
  assert.ok(Math.abs(phasedEta([phase]).seconds - 6 * 4.6) < 1e-9);
});
