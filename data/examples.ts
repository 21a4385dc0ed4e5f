/**
 * Labelled examples: JSONL parsing with line-numbered errors, and the stratified draw of the real
 * pool (docs/algorithm.md#real-data: a stratified sample of `pool` examples, of which the first `real`
 * build the target).
 */
import { Rng } from "../autograd/random.ts";
import { classOf, type TaskSpec } from "./tasks.ts";

/** One labelled text. */
export interface Example {
  /** The text. */
  text: string;
  /** Its integer label (a class index after `classOf`). */
  label: number;
}

/** Raised for malformed input data (naming the file and line), or data too small for a request. */
export class DataError extends Error {
  /** The error's name. */
  /** Error name, for messages. */
  override name = "DataError";
  /** The CLI prints it without a stack trace. */
  readonly userFacing = true;
}

/** Parses JSONL into examples. Blank lines are skipped; every other line must be a JSON object. */
export function parseJsonl(
  content: string,
  { textField = "text", labelField = "label", source = "input" }: {
    textField?: string;
    labelField?: string | null;
    source?: string;
  } = {},
): Example[] {
  const out: Example[] = [];
  const lines = content.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new DataError(`${source}:${i + 1}: not valid JSON (${(e as Error).message})`);
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      throw new DataError(
        `${source}:${i + 1}: expected a JSON object, got ${JSON.stringify(obj).slice(0, 40)}`,
      );
    }
    const rec = obj as Record<string, unknown>;
    const text = rec[textField];
    if (typeof text !== "string") {
      throw new DataError(
        `${source}:${i + 1}: field '${textField}' is ${text === undefined ? "missing" : "not a string"}` +
          ` (fields: ${Object.keys(rec).join(", ")}; choose one with --text-field)`,
      );
    }
    let label = -1;
    if (labelField !== null) {
      const raw = rec[labelField];
      label = typeof raw === "string" && /^-?\d+$/.test(raw) ? Number(raw) : (raw as number);
      if (typeof label !== "number" || !Number.isInteger(label)) {
        throw new DataError(
          `${source}:${i + 1}: field '${labelField}' must be an integer label, got ${JSON.stringify(raw)}` +
            " (choose the field with --label-field)",
        );
      }
    }
    out.push({ text, label });
  }
  return out;
}

/**
 * A stratified random sample of `size` examples (each class keeps its share, rounded so the
 * counts add up), in a seeded shuffled order — like sklearn's stratified train_test_split. The
 * draw is ours, so the exact examples differ from the official code's for the same seed.
 */
export function stratifiedSample<T extends { label: number }>(items: T[], size: number, seed: number): T[] {
  if (size >= items.length) return new Rng(seed).shuffle([...items]);
  const rng = new Rng(seed);
  const byLabel = new Map<number, T[]>();
  for (const it of items) {
    const list = byLabel.get(it.label) ?? [];
    list.push(it);
    byLabel.set(it.label, list);
  }
  const labels = [...byLabel.keys()].sort((a, b) => a - b);
  // Largest-remainder rounding of the proportional shares.
  const exact = labels.map((l) => (byLabel.get(l)!.length * size) / items.length);
  const counts = exact.map(Math.floor);
  let left = size - counts.reduce((a, b) => a + b, 0);
  const order = exact.map((e, i) => [e - Math.floor(e), i] as const).sort((a, b) =>
    b[0] - a[0] || a[1] - b[1]
  );
  for (const [, i] of order) {
    if (left === 0) break;
    counts[i]++;
    left--;
  }
  const picked: T[] = [];
  labels.forEach((l, i) => picked.push(...rng.shuffle([...byLabel.get(l)!]).slice(0, counts[i])));
  return rng.shuffle(picked);
}

/** What {@link selectReal} draws. */
export interface RealSelection {
  /** The stratified pool, in its seeded order. */
  pool: Example[];
  /** Its first `real` examples: the ones the targets are built from. */
  used: Example[];
  /** The texts of `used`, per class index. */
  byClass: string[][];
}

/**
 * The real examples of a synth run per class: the stratified pool of `realPool` (labels mapped to
 * the task's classes, others dropped), its first `real` entries, and those grouped by class.
 */
export function selectReal(
  task: TaskSpec,
  data: Example[],
  o: { realPool: number; real: number; seed: number },
): RealSelection {
  const kept = data.flatMap((e) => {
    const c = classOf(task, e.label);
    return c === null ? [] : [{ text: e.text, label: c }];
  });
  if (o.real > o.realPool) {
    throw new DataError(`--real (${o.real}) cannot exceed --real-pool (${o.realPool})`);
  }
  if (kept.length < o.real) {
    throw new DataError(
      `the data has ${kept.length} usable examples for task ${task.name}, fewer than --real ${o.real}`,
    );
  }
  const pool = stratifiedSample(kept, o.realPool, o.seed);
  const used = pool.slice(0, o.real);
  const byClass = task.labelWords.map((_, c) => used.filter((e) => e.label === c).map((e) => e.text));
  byClass.forEach((texts, c) => {
    if (texts.length === 0) {
      throw new DataError(
        `class ${c} ('${task.labelWords[c]}') has no example among the ${o.real} real examples; ` +
          "raise --real or check the labels",
      );
    }
  });
  return { pool, used, byClass };
}
