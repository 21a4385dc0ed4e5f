/**
 * Task presets: how a labelled example becomes the text whose last-position gradient GRADMM
 * matches (text + suffix → label word), and the prefix that conditions the constrained decoder.
 * Values follow the official code (docs/algorithm.md#tasks).
 */

/** Everything GRADMM needs to know about a classification task. */
export interface TaskSpec {
  /** Preset name, or "custom". */
  name: string;
  /** Appended to every text; the label word is predicted right after it. */
  suffix: string;
  /** Label word per class index (the target is the first token of the word). */
  labelWords: string[];
  /** Which original dataset labels are kept, and the class index each maps to (null = all, identity). */
  labelMap: Map<number, number> | null;
  /**
   * The decoder's conditioning prefix for a class (never part of x or of the gradient).
   * `{label}` in a template is replaced by the class's label word.
   */
  decodePrefix: (classIndex: number) => string;
  /**
   * Zero the x-gradient at the suffix positions during the inner steps. The official code does
   * this only for rotten_tomatoes, imdb and rtpolarity (docs/algorithm.md#suffix-positions).
   */
  freezeSuffixGradient: boolean;
  /** Evaluation template (fine-tuning/eval side): the text before the option words. */
  evalSuffix: string;
  /** Evaluation option words (with their leading space, as the evaluation harness uses them). */
  evalOptions: string[];
}

const MOVIE_CRITIC = (label: string) =>
  "Imagine you review films for a living. Write a single, casual sentence from a review of a movie " +
  `that left you feeling ${label === "great" ? "delighted" : "disappointed"}.\n` +
  `The sentiment of the movie review is: ${label}\n. Answer:`;

const IMDB_REVIEW = (label: string) =>
  "Imagine you post film reviews on IMDB. Write a strongly opinionated passage from a review of a movie " +
  `you found ${label === "great" ? "outstanding" : "terrible"}.\n` +
  `The sentiment of the movie review is: ${label}\n. Answer:`;

const TWEET = (label: string) =>
  `Write a short, informal tweet from someone who feels ${label} today.\n` +
  `The emotion of twitter is: ${label}\n. Answer:`;

const SENTIMENT_WORDS = ["bad", "great"];

/** The built-in presets of the paper's tasks. */
export const TASK_PRESETS: Record<string, TaskSpec> = {
  sst2: {
    name: "sst2",
    suffix: " It was ",
    labelWords: SENTIMENT_WORDS,
    labelMap: null,
    decodePrefix: () => "The",
    freezeSuffixGradient: false,
    evalSuffix: " It was",
    evalOptions: [" bad", " great"],
  },
  rotten_tomatoes: {
    name: "rotten_tomatoes",
    suffix: " It was ",
    labelWords: SENTIMENT_WORDS,
    labelMap: null,
    decodePrefix: (c) => MOVIE_CRITIC(SENTIMENT_WORDS[c]),
    freezeSuffixGradient: true,
    evalSuffix: " It was",
    evalOptions: [" bad", " great"],
  },
  imdb: {
    name: "imdb",
    suffix: " It was ",
    labelWords: SENTIMENT_WORDS,
    labelMap: null,
    decodePrefix: (c) => IMDB_REVIEW(SENTIMENT_WORDS[c]),
    freezeSuffixGradient: true,
    evalSuffix: " It was",
    evalOptions: [" bad", " great"],
  },
  emotion: {
    name: "emotion",
    suffix: " Does the tweet express joy or sadness?\n",
    labelWords: ["sadness", "joy"],
    // dair-ai/emotion: 0 sadness, 1 joy; the other four emotions are dropped.
    labelMap: new Map([[0, 0], [1, 1]]),
    decodePrefix: (c) => TWEET(["sadness", "joy"][c]),
    freezeSuffixGradient: false,
    evalSuffix: " Does the tweet express joy or sadness?\n",
    evalOptions: ["sadness", "joy"],
  },
};

/** Raised for an unknown task or inconsistent custom-task flags. */
export class TaskError extends Error {
  /** Error name, for messages. */
  override name = "TaskError";
  /** The CLI prints it without a stack trace. */
  readonly userFacing = true;
}

/** Options for a custom task (CLI: --template, --label-words, --prefix). */
export interface CustomTaskOptions {
  /** Template with `{text}` where the example goes, e.g. "{text} It was ". Text after {text} is the suffix. */
  template: string;
  /** One label word per class, in class order (the token the model should predict). */
  labelWords: string[];
  /** Decoder prefix; `{label}` is replaced by the class's label word (default "The"). */
  prefix?: string;
  /** Zero the x-step's gradient at the template's suffix positions (default false). */
  freezeSuffixGradient?: boolean;
}

/** Builds a task from flags. */
export function customTask(o: CustomTaskOptions): TaskSpec {
  if (!o.template.startsWith("{text}")) {
    throw new TaskError(`--template must start with {text} (the suffix follows it), got '${o.template}'`);
  }
  const suffix = o.template.slice("{text}".length);
  if (suffix.includes("{text}")) throw new TaskError("--template may contain {text} only once");
  if (o.labelWords.length < 2) {
    throw new TaskError(`--label-words needs at least two words, got ${o.labelWords.length}`);
  }
  if (new Set(o.labelWords).size !== o.labelWords.length) {
    throw new TaskError("--label-words must be distinct");
  }
  const prefix = o.prefix ?? "The";
  return {
    name: "custom",
    suffix,
    labelWords: o.labelWords,
    labelMap: null,
    decodePrefix: (c) => prefix.replaceAll("{label}", o.labelWords[c]),
    freezeSuffixGradient: o.freezeSuffixGradient ?? false,
    evalSuffix: suffix.trimEnd(),
    evalOptions: o.labelWords.map((w) => (suffix.endsWith(" ") || suffix.endsWith("\n") ? " " + w : w)),
  };
}

/** A preset by name, with a helpful error. */
export function getTask(name: string): TaskSpec {
  // Own keys only: `--task constructor` must not find Object.prototype's members.
  const t = Object.hasOwn(TASK_PRESETS, name) ? TASK_PRESETS[name] : undefined;
  if (!t) {
    throw new TaskError(
      `unknown task '${name}'; presets: ${Object.keys(TASK_PRESETS).join(", ")} ` +
        "(or describe a custom task with --template and --label-words)",
    );
  }
  return t;
}

/** Maps a dataset label to a class index, or null when the task drops that label. */
export function classOf(task: TaskSpec, label: number): number | null {
  if (task.labelMap) return task.labelMap.get(label) ?? null;
  return Number.isInteger(label) && label >= 0 && label < task.labelWords.length ? label : null;
}

/** Removes the suffix (and anything after it) from a decoded synthetic text, and tidies spaces. */
export function stripSuffix(task: TaskSpec, text: string): string {
  const marker = task.suffix.trim();
  const i = marker ? text.indexOf(marker) : -1;
  const body = i >= 0 ? text.slice(0, i) : text;
  return body.replace(/\s+/g, " ").trim();
}
