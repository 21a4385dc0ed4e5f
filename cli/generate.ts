/** `generate`: continue a prompt with a model (greedy or sampled), printing the continuation. */
import { defaultContext } from "../kernels/device.ts";
import { generateText } from "../models/generate.ts";
import { GENERATE_DEFAULTS } from "../api/defaults.ts";
import { type Command, JSON_HELP, numberFlag, parseFlags, resultPrinter, UsageError } from "./args.ts";
import { openModelForCommand } from "./ppl.ts";
import { WEIGHTS_HELP, weightsFlag } from "./model.ts";
import { announceFetch } from "./io.ts";
import { bundledModel } from "../host/assets.ts";

const HELP = `Usage: cli.ts generate --prompt TEXT [--model M] [flags]

Continues TEXT and prints the continuation (the prompt excluded) on stdout. Greedy unless
--temperature is given. Decoding uses a KV cache and stops at the model's end-of-sequence token
or after --max-new-tokens.

  --model DIR|ORG/NAME[@REV]  model folder or Hugging Face id (default: the bundled gpt2-d128)
  --prompt TEXT           the text to continue
  --max-new-tokens N      new tokens at most (default 50)
  --greedy                always take the most likely token (the default)
  --temperature T         sample with temperature T > 0
  --top-k K               sample only among the K most likely tokens (0 = all; default 0)
  --top-p P               sample only from the smallest set of tokens with probability ≥ P (default 1)
  --seed S                random seed for sampling (default 0)
  --no-cache              recompute the whole sequence every step (slow; for checking)
  --ids                   also print the generated token ids on stderr
${JSON_HELP}
${WEIGHTS_HELP}

Examples
  deno run -A cli.ts generate --model assets/gpt2-d128 --prompt "The movie was"
  deno run -A cli.ts generate --model assets/gpt2-d128 --prompt "It was" --temperature 0.8 --top-k 40 --seed 7
  deno run -A cli.ts generate --model openai-community/gpt2 --prompt Hi --max-new-tokens 20 --json`;

export const generateCommand: Command = {
  name: "generate",
  summary: "continue a prompt with a model (greedy or top-k/top-p sampling)",
  help: HELP,
  async run(args) {
    const { values: v } = parseFlags("generate", args, {
      model: { type: "string" },
      prompt: { type: "string" },
      "max-new-tokens": { type: "string" },
      greedy: { type: "boolean" },
      temperature: { type: "string" },
      "top-k": { type: "string" },
      "top-p": { type: "string" },
      seed: { type: "string" },
      "no-cache": { type: "boolean" },
      ids: { type: "boolean" },
      weights: { type: "string" },
      json: { type: "boolean" },
    });
    if (v.help) {
      console.log(HELP);
      return 0;
    }
    if (v.prompt === undefined) {
      throw new UsageError("generate: --prompt is required (see 'generate --help')");
    }
    const maxNewTokens = numberFlag(
      "generate",
      "max-new-tokens",
      v["max-new-tokens"],
      GENERATE_DEFAULTS.maxNewTokens,
      {
        min: 0,
        max: 1 << 20,
        integer: true,
      },
    );
    const sampled = v.temperature !== undefined;
    if (v.greedy && (sampled || v["top-k"] !== undefined || v["top-p"] !== undefined)) {
      throw new UsageError("generate: --greedy cannot be combined with --temperature, --top-k or --top-p");
    }
    if (!sampled && (v["top-k"] !== undefined || v["top-p"] !== undefined)) {
      throw new UsageError(
        "generate: --top-k and --top-p need --temperature (sampling); without it decoding is greedy",
      );
    }
    const temperature = numberFlag("generate", "temperature", v.temperature, GENERATE_DEFAULTS.temperature, {
      min: 1e-6,
      max: 1e6,
    });
    const topK = numberFlag("generate", "top-k", v["top-k"], GENERATE_DEFAULTS.topK, {
      min: 0,
      integer: true,
    });
    const topP = numberFlag("generate", "top-p", v["top-p"], GENERATE_DEFAULTS.topP, { min: 1e-6, max: 1 });
    const seed = numberFlag("generate", "seed", v.seed, GENERATE_DEFAULTS.seed, {
      min: 0,
      max: 2 ** 32 - 1,
      integer: true,
    });
    const weights = weightsFlag("generate", v.weights);

    const ctx = await defaultContext();
    const spec = v.model ?? await bundledModel({ onFetch: announceFetch });
    const { model, tokenizer } = await openModelForCommand(ctx, spec, { weights });
    try {
      const prompt = tokenizer.tokenizer.encode(v.prompt);
      if (prompt.length === 0) {
        throw new UsageError(
          "generate: the prompt has no tokens and this tokenizer adds no BOS; give a non-empty --prompt",
        );
      }
      const cfg = model.config;
      const positions = cfg.positionEmbedding === "learned" ? cfg.maxPositions : Infinity;
      if (prompt.length > positions) {
        throw new UsageError(
          `generate: the prompt has ${prompt.length} tokens, more than the model's ${positions} positions; shorten --prompt`,
        );
      }
      const result = await generateText(model, tokenizer.tokenizer, [v.prompt], {
        maxNewTokens,
        greedy: !sampled,
        temperature: sampled ? temperature : undefined,
        topK,
        topP,
        seed,
        useCache: !v["no-cache"],
      });
      const printer = resultPrinter(v.json);
      printer.text(result.texts[0]);
      printer.json({
        text: result.texts[0],
        promptTokens: prompt.length,
        tokens: result.tokens[0],
        finishReason: result.finishReasons[0],
      });
      const produced = result.tokens[0].length;
      if (result.finishReasons[0] === "length" && produced < maxNewTokens) {
        console.error(
          `note: stopped after ${produced} new token(s): the model's context of ${positions} positions is full`,
        );
      }
      if (v.ids) console.error(`ids: ${JSON.stringify(result.tokens[0])} (${result.finishReasons[0]})`);
    } finally {
      model.dispose();
    }
    return 0;
  },
};
