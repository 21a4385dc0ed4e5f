/** `ppl`: perplexity of a model on the lines of a JSONL file, each line scored on its own. */
import { defaultContext } from "../kernels/device.ts";
import { sequenceNll } from "../models/perplexity.ts";
import { type Command, JSON_HELP, numberFlag, parseFlags, resultPrinter, UsageError } from "./args.ts";
import { CliFileError, readText } from "./io.ts";
import { checkModelPath, openModel, WEIGHTS_HELP, weightsFlag } from "./model.ts";

/** Opens `--model` with one-line errors; kept as a name for callers (see {@link openModel}). */
export const openModelForCommand = openModel;

export { checkModelPath };

/** Texts of a JSONL file's `field`, with errors that name the line. Blank lines are skipped. */
export function readJsonlField(text: string, field: string, source: string): string[] {
  const out: string[] = [];
  const lines = text.split("\n");
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === "") return;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (e) {
      throw new CliFileError(`${source}:${i + 1}: not valid JSON (${(e as Error).message.split("\n")[0]})`);
    }
    if (typeof row !== "object" || row === null || Array.isArray(row)) {
      throw new CliFileError(`${source}:${i + 1}: each line must be a JSON object`);
    }
    const value = (row as Record<string, unknown>)[field];
    if (typeof value !== "string") {
      throw new CliFileError(
        `${source}:${i + 1}: ${value === undefined ? `no "${field}" field` : `"${field}" is not a string`}` +
          ` (choose the field with --text-field)`,
      );
    }
    out.push(value);
  });
  return out;
}

const HELP = `Usage: cli.ts ppl --model M --data F.jsonl [flags]

Perplexity of a model on a JSONL file. Each line's text is tokenized on its own (as the
tokenizer gives it: no BOS is added unless the tokenizer adds one) and every token from the
second on is predicted from the ones before it. Progress goes to stderr; the last two lines
on stdout are 'nll_nats_per_token: X' (mean over all predicted tokens of the file) and
'perplexity: Y' (= exp X).

  --model DIR|ORG/NAME[@REV]  model folder or Hugging Face id
  --data F.jsonl          one JSON object per line
  --text-field NAME       the text field (default text)
  --max-length N          keep at most the first N tokens of each line (default: the model's context)
  --batch N               lines per forward pass (default 8)
${JSON_HELP}
${WEIGHTS_HELP}

Examples
  deno run -A cli.ts ppl --model assets/gpt2-d128 --data synthetic.jsonl
  deno run -A cli.ts ppl --model assets/gpt2-d128 --data reviews.jsonl --text-field sentence --max-length 64
  deno run -A cli.ts ppl --model assets/gpt2-d128 --data assets/sst2-validation.jsonl --json

Old flag names still accepted: --file (now --data), --field (now --text-field).`;

export const pplCommand: Command = {
  name: "ppl",
  summary: "perplexity of a model on a JSONL file (each line scored on its own)",
  help: HELP,
  async run(args) {
    const { values: v } = parseFlags("ppl", args, {
      model: { type: "string" },
      data: { type: "string" },
      "text-field": { type: "string" },
      "max-length": { type: "string" },
      batch: { type: "string" },
      weights: { type: "string" },
      json: { type: "boolean" },
    }, { aliases: { file: "data", field: "text-field" } });
    if (v.help) {
      console.log(HELP);
      return 0;
    }
    const weights = weightsFlag("ppl", v.weights);
    if (!v.model) throw new UsageError("ppl: --model is required (see 'ppl --help')");
    if (!v.data) throw new UsageError("ppl: --data is required (see 'ppl --help')");
    const dataPath = v.data;
    const field = v["text-field"] ?? "text";
    const batch = numberFlag("ppl", "batch", v.batch, 8, { min: 1, max: 4096, integer: true });
    await checkModelPath(v.model);
    const texts = readJsonlField(await readText(dataPath, "input file"), field, dataPath);
    if (texts.length === 0) throw new CliFileError(`${dataPath}: no lines to score`);

    const ctx = await defaultContext();
    const { model, tokenizer } = await openModelForCommand(ctx, v.model, { weights });
    try {
      const context = model.config.maxPositions;
      const maxLength = numberFlag("ppl", "max-length", v["max-length"], context, { min: 2, integer: true });
      if (model.config.positionEmbedding === "learned" && maxLength > context) {
        throw new UsageError(`ppl: --max-length ${maxLength} exceeds the model's ${context} positions`);
      }
      const seqs = texts.map((t) => tokenizer.tokenizer.encode(t).slice(0, maxLength));
      const t0 = performance.now();
      let lastReport = 0;
      const scores = await sequenceNll(model, seqs, {
        batchSize: batch,
        onBatch: (done, total) => {
          const now = performance.now();
          if (now - lastReport < 1000 && done < total) return;
          lastReport = now;
          console.error(`ppl: ${done}/${total} lines (${((now - t0) / 1000).toFixed(1)} s)`);
        },
      });
      const nll = scores.reduce((s, x) => s + x.nll, 0);
      const count = scores.reduce((s, x) => s + x.tokens, 0);
      if (count === 0) {
        throw new CliFileError(`${dataPath}: no line has two or more tokens, so nothing can be predicted`);
      }
      const skipped = scores.filter((s) => s.tokens === 0).length;
      if (skipped) console.error(`ppl: ${skipped} line(s) with fewer than two tokens predict nothing`);
      const mean = nll / count;
      const printer = resultPrinter(v.json);
      printer.text(`lines: ${texts.length}`);
      printer.text(`predicted_tokens: ${count}`);
      printer.text(`nll_nats_per_token: ${mean.toFixed(6)}`);
      printer.text(`perplexity: ${Math.exp(mean).toFixed(4)}`);
      printer.json({
        lines: texts.length,
        predictedTokens: count,
        nllNatsPerToken: mean,
        perplexity: Math.exp(mean),
        skippedLines: skipped,
      });
    } finally {
      model.dispose();
    }
    return 0;
  },
};
