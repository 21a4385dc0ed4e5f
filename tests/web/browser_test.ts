/**
 * The demo page in a real browser: builds web/dist/app.js, serves web/ and assets/ on 127.0.0.1,
 * runs headless Chromium with WebGPU on SwiftShader (a CPU implementation, no GPU needed) and
 * checks what the page computes:
 *  - greedy generation in the page gives the same token ids as the CLI's `generate` for the same
 *    prompt (the CLI runs on Deno's WebGPU, here llvmpipe/lavapipe: two different adapters);
 *  - the in-page synth writes the requested number of texts per class, with finite match losses,
 *    live progress, and the same texts as the CLI's `synth` with the same settings.
 *
 * Chromium is required: without it the test FAILS with how to install it, unless
 * GRADMM_SKIP_BROWSER=1 says to skip it (then it is reported as ignored, with a loud line).
 * CHROMIUM=/path/to/chrome picks another binary.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildDemo, REPO_ROOT } from "../../web/build.ts";
import { demoMounts, serveStatic } from "../../web/server.ts";
import { type Browser, findChromium, launchChromium } from "./chromium.ts";

const SKIP = Deno.env.get("GRADMM_SKIP_BROWSER") === "1";
const chromium = findChromium();
if (SKIP) {
  console.error(
    "\n!!! GRADMM_SKIP_BROWSER=1: the browser demo test is SKIPPED (the page is not tested) !!!\n",
  );
}

// A prompt whose greedy continuation runs the full length on gpt2-d128 (no early EOS).
const PROMPT = "I went to the cinema and";
const TOKENS = 20;
// The page's default method (lm-guided, synth's default) with 2 swap iterations after the decode.
const SYNTH = {
  perClass: 2,
  batch: 2,
  outer: 2,
  inner: 2,
  init: 4,
  topk: 50,
  length: 10,
  real: 16,
  refine: 2,
};

interface GenerateResult {
  kind: "generate";
  ok: boolean;
  error?: string;
  adapter: string;
  ids: number[];
  promptIds: number[];
  text: string;
  seconds: number;
  loadS: number;
}

interface SynthResult {
  kind: "synth";
  ok: boolean;
  error?: string;
  adapter: string;
  steps: number;
  progress: { step: number; steps: number; matchLoss: number; etaS: number; fraction: number }[];
  statusLine: string;
  phaseS: Record<string, number>;
  seconds: number;
  records: { text: string; label: number; label_word: string; match_loss: number; nll: number }[];
}

/** The CLI's greedy continuation of `prompt` (token ids), run as its own Deno process. */
async function cliTokens(prompt: string, tokens: number): Promise<number[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(REPO_ROOT, "cli.ts"),
      "generate",
      "--model",
      join(REPO_ROOT, "assets", "gpt2-d128"),
      "--prompt",
      prompt,
      "--max-new-tokens",
      String(tokens),
      "--ids",
    ],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `cli.ts generate failed (exit ${out.code}):\n${stderr}`);
  const m = /^ids: (\[[\d,]*\])/m.exec(stderr);
  assert.ok(m, `cli.ts generate --ids printed no ids line:\n${stderr}`);
  return JSON.parse(m[1]);
}

/**
 * The CLI's synth with the page's settings (the page uses a real pool of twice --real-n, ρ 0.7 and
 * seed 42), run as its own Deno process; returns its records.
 */
async function cliSynth(): Promise<SynthResult["records"]> {
  const dir = await Deno.makeTempDir({ prefix: "gradmm-web-synth-" });
  try {
    const out = join(dir, "synthetic.jsonl");
    const flags = {
      "per-class": SYNTH.perClass,
      batch: SYNTH.batch,
      "outer-steps": SYNTH.outer,
      "inner-steps": SYNTH.inner,
      "init-candidates": SYNTH.init,
      "top-k": SYNTH.topk,
      length: SYNTH.length,
      "real-n": SYNTH.real,
      "real-pool": 2 * SYNTH.real,
      "refine-iterations": SYNTH.refine,
      seed: 42,
      rho: 0.7,
    };
    const r = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        join(REPO_ROOT, "cli.ts"),
        "synth",
        "--model",
        join(REPO_ROOT, "assets", "gpt2-d128"),
        "--data",
        join(REPO_ROOT, "assets", "sst2-validation.jsonl"),
        ...Object.entries(flags).flatMap(([k, v]) => [`--${k}`, String(v)]),
        "--out",
        out,
      ],
      cwd: REPO_ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(r.success, `cli.ts synth failed (exit ${r.code}):\n${new TextDecoder().decode(r.stderr)}`);
    return (await Deno.readTextFile(out)).trim().split("\n").map((line) => JSON.parse(line));
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Opens the page with `query` and waits for the JSON result it writes into the DOM. */
async function runPage<T>(
  browser: Browser,
  base: string,
  query: Record<string, string | number>,
  timeoutMs: number,
) {
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)]));
  const t0 = performance.now();
  await browser.page.navigate(`${base}?${qs}`);
  const text = await browser.page.waitFor<string>(
    "document.getElementById('result')?.textContent || null",
    timeoutMs,
    500,
  );
  const result = JSON.parse(text) as T & { ok: boolean; error?: string };
  assert.ok(
    result.ok,
    `the page reported an error: ${result.error}\npage output:\n` +
      browser.page.logs.slice(-15).map((l) => `  ${l.kind}: ${l.text}`).join("\n"),
  );
  return { result, wallS: (performance.now() - t0) / 1000 };
}

Deno.test({
  name: "web demo in headless Chromium (WebGPU on SwiftShader): generate and synth match the CLI",
  ignore: SKIP,
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  const override = Deno.env.get("CHROMIUM");
  if (!chromium && override) {
    throw new Error(`CHROMIUM=${override} is not a file: point it at a Chrome/Chromium binary, or unset it`);
  }
  if (!chromium) {
    throw new Error(
      "Chromium is not installed, so the browser demo cannot be tested. Install it " +
        "(Debian/Ubuntu: `apt-get install -y chromium`), point CHROMIUM at a Chrome/Chromium binary, " +
        "or set GRADMM_SKIP_BROWSER=1 to skip this test.",
    );
  }
  // Start the CLI's run now: it uses the other CPU core while the bundle builds and the page runs.
  const expected = cliTokens(PROMPT, TOKENS);
  const expectedSynth = expected.then(() => cliSynth(), () => cliSynth());
  // Awaited below; avoid unhandled rejections if the page fails first.
  expected.catch(() => {});
  expectedSynth.catch(() => {});
  const bundleBytes = await buildDemo();
  const server = serveStatic(demoMounts(REPO_ROOT));
  let browser: Browser | null = null;
  try {
    browser = await launchChromium(chromium);
    const b = browser;
    console.log(`bundle ${(bundleBytes / 1024).toFixed(0)} KiB; serving ${server.url}`);

    await t.step(`greedy generation of ${TOKENS} tokens equals the CLI's`, async () => {
      const { result, wallS } = await runPage<GenerateResult>(b, server.url, {
        auto: "generate",
        prompt: PROMPT,
        tokens: TOKENS,
      }, 180_000);
      console.log(
        `page (${result.adapter}): model loaded in ${
          result.loadS.toFixed(1)
        } s, ${result.ids.length} tokens in ` +
          `${result.seconds.toFixed(2)} s (page total ${wallS.toFixed(1)} s): ${JSON.stringify(result.text)}`,
      );
      assert.ok(result.ids.length > 0, "the page generated no tokens");
      assert.deepEqual(result.ids, await expected, "page and CLI greedy token ids differ");
    });

    await t.step(
      "a model folder picked from disk (bytesSource over File objects) gives the same tokens",
      async () => {
        const dir = join(REPO_ROOT, "assets", "gpt2-d128");
        await b.page.navigate(
          `${server.url}?${new URLSearchParams({ prompt: PROMPT, tokens: String(TOKENS) })}`,
        );
        // A webkitdirectory input takes the folder itself; Chromium lists its files.
        await b.page.setInputFiles("#folder", [dir]);
        await b.page.waitFor<boolean>(
          "document.getElementById('model').selectedOptions[0]?.value.startsWith('picked:') || null",
          10_000,
        );
        await b.page.evaluate("document.getElementById('generate').click()");
        const text = await b.page.waitFor<string>(
          "document.getElementById('result').textContent || null",
          180_000,
          500,
        );
        const result = JSON.parse(text) as GenerateResult & { model: string };
        assert.ok(result.ok, `the page reported an error: ${result.error}`);
        assert.equal(result.model, "gpt2-d128", "the page did not load the picked folder");
        console.log(`picked folder '${result.model}': loaded in ${result.loadS.toFixed(1)} s`);
        assert.deepEqual(result.ids, await expected, "picked-folder and CLI greedy token ids differ");
      },
    );

    await t.step("bad settings and a missing model folder give one clear message in the page", async () => {
      const read = async (query: string) => {
        await b.page.navigate(`${server.url}?${query}`);
        const text = await b.page.waitFor<string>(
          "document.getElementById('result').textContent || null",
          60_000,
        );
        const shown = await b.page.evaluate<string>("document.getElementById('error').textContent");
        return { result: JSON.parse(text) as { kind: string; ok: boolean; error: string }, shown };
      };
      const params = await read("auto=synth&perClass=3&batch=2");
      assert.equal(params.result.ok, false);
      assert.equal(params.result.kind, "params");
      assert.match(params.shown, /perClass \(3\) must be a multiple of batch \(2\)/);
      const missing = await read("auto=generate&model=assets/no-such-model/");
      assert.equal(missing.result.ok, false);
      assert.match(missing.result.error, /no-such-model\/: no tokenizer\.json/);
      assert.match(missing.shown, /^generate: TokenizerError: /);
    });

    await t.step(
      `synth writes ${SYNTH.perClass} texts per class with finite match losses, as the CLI does`,
      async () => {
        const { result, wallS } = await runPage<SynthResult>(
          b,
          server.url,
          { auto: "synth", ...SYNTH },
          480_000,
        );
        console.log(
          `page synth: ${result.records.length} texts, ${result.steps} outer steps in ${
            result.seconds.toFixed(1)
          } s ` +
            `(page total ${wallS.toFixed(1)} s); seconds per phase ${
              JSON.stringify(result.phaseS, (_, v) => typeof v === "number" ? Number(v.toFixed(1)) : v)
            }`,
        );
        for (const r of result.records) {
          console.log(`  [${r.label_word}] loss ${r.match_loss.toFixed(4)} ${JSON.stringify(r.text)}`);
        }
        for (const label of [0, 1]) {
          const mine = result.records.filter((r) => r.label === label);
          assert.equal(
            mine.length,
            SYNTH.perClass,
            `class ${label}: expected ${SYNTH.perClass} texts, got ${mine.length}`,
          );
        }
        assert.equal(result.records.length, 2 * SYNTH.perClass);
        for (const r of result.records) {
          assert.ok(
            Number.isFinite(r.match_loss) && r.match_loss >= 0,
            `match loss ${r.match_loss} of "${r.text}"`,
          );
          assert.equal(typeof r.text, "string");
        }
        // Progress was shown once per outer step of every round, with a finite match loss, a
        // growing fraction done and an ETA once work was done.
        const rounds = (2 * SYNTH.perClass) / SYNTH.batch;
        assert.equal(result.steps, rounds * SYNTH.outer, "outer-step progress events");
        assert.equal(result.progress.length, result.steps);
        assert.deepEqual(
          result.progress.map((p) => p.step),
          Array.from({ length: result.steps }, (_, i) => (i % SYNTH.outer) + 1),
          "outer steps in the progress lines",
        );
        for (const p of result.progress) {
          assert.ok(Number.isFinite(p.matchLoss), `progress match loss ${p.matchLoss}`);
          assert.ok(p.etaS !== null && p.etaS >= 0, `progress ETA ${p.etaS}`);
        }
        const fractions = result.progress.map((p) => p.fraction);
        assert.ok(fractions.every((f, i) => i === 0 || f > fractions[i - 1]), `fractions ${fractions}`);
        assert.equal(fractions.at(-1), 1);
        assert.match(result.statusLine, /step \d+\/\d+, match loss \d\.\d{4}, .*ETA/);
        // The same texts as the CLI's synth with the same settings (Deno on llvmpipe/lavapipe), and
        // the same match losses up to f32 rounding: the two adapters sum in different orders.
        const cli = await expectedSynth;
        assert.deepEqual(
          result.records.map((r) => [r.label, r.text]),
          cli.map((r) => [r.label, r.text]),
          "page and CLI synth texts differ",
        );
        result.records.forEach((r, i) => {
          assert.ok(
            Math.abs(r.match_loss - cli[i].match_loss) < 1e-4,
            `match loss of "${r.text}": page ${r.match_loss}, CLI ${cli[i].match_loss}`,
          );
        });
        // The results table shows every text.
        const rows = await b.page.evaluate<number>("document.querySelectorAll('#synth-rows tr').length");
        assert.equal(rows, result.records.length, "rows in the results table");
      },
    );
  } finally {
    await browser?.close();
    await server.close();
    await expected.catch(() => {});
    await expectedSynth.catch(() => {});
  }
});
