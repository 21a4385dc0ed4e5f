/**
 * End-to-end tests of `synth`: a tiny run on tiny-gpt2, resumption (stop after one round, rerun,
 * compare with an uninterrupted run), a short run on gpt2-d128, and errors before any work.
 */
import { join } from "node:path";
import { main } from "../../cli.ts";
import { gpuTest } from "../helpers.ts";
import { fixtureModel } from "../fixtures.ts";
import { synthFlags, TINY_SYNTH } from "../synth_flags.ts";

const TINY = synthFlags(TINY_SYNTH);

async function synth(args: string[]): Promise<number> {
  return await main(["synth", ...args]);
}

function lines(path: string): Record<string, unknown>[] {
  return Deno.readTextFileSync(path).split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
}

Deno.test({
  name: "synth on tiny-gpt2: records, manifest, and resumption gives the same file as an uninterrupted run",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const model = fixtureModel("tiny-gpt2");
    const whole = join(dir, "whole.jsonl");
    if (await synth([...TINY, "--model", model, "--out", whole]) !== 0) throw new Error("synth failed");
    const recs = lines(whole);
    if (recs.length !== 8) throw new Error(`expected 8 records (4 per class), got ${recs.length}`);
    for (const r of recs) {
      for (
        const k of ["text", "label", "label_word", "round", "rho", "match_loss", "match_loss_init", "nll"]
      ) {
        if (!(k in r)) throw new Error(`record lacks '${k}': ${JSON.stringify(r)}`);
      }
      if (typeof r.match_loss !== "number" || !(r.match_loss >= 0 && r.match_loss <= 2)) {
        throw new Error(`match_loss out of [0, 2]: ${r.match_loss}`);
      }
      if ((r.text as string).includes("It was")) throw new Error(`suffix not stripped: ${r.text}`);
    }
    const labels = recs.map((r) => r.label).sort().join();
    if (labels !== "0,0,0,0,1,1,1,1") throw new Error(`labels ${labels}`);
    const manifest = JSON.parse(Deno.readTextFileSync(join(dir, "whole.manifest.json")));
    if (manifest.completed.length !== 4 || !manifest.adapter || !manifest.model.files["config.json"]) {
      throw new Error(`manifest incomplete: ${JSON.stringify(manifest).slice(0, 300)}`);
    }

    const parts = join(dir, "parts.jsonl");
    await synth([...TINY, "--model", model, "--out", parts, "--max-rounds", "1"]);
    if (lines(parts).length !== 2) throw new Error("--max-rounds 1 should leave one round (2 texts)");
    await synth([...TINY, "--model", model, "--out", parts]);
    const a = Deno.readTextFileSync(whole);
    const b = Deno.readTextFileSync(parts);
    if (a !== b) throw new Error(`resumed run differs from the uninterrupted one:\n${a}\n---\n${b}`);

    // A rerun with other settings must refuse to mix them into the same file.
    const code = await synth([
      ...synthFlags({ ...TINY_SYNTH, realN: 9, length: 9 }),
      "--model",
      model,
      "--out",
      parts,
    ])
      .catch(
        () => 2,
      );
    if (code === 0) throw new Error("a rerun with other settings was accepted");
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name:
    "synth --method refine-lm --refine-nll-target real+0.5: the target is the real texts' NLL + 0.5, per class",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const model = fixtureModel("tiny-gpt2");
    const out = join(dir, "t.jsonl");
    const args = ["--method", "refine-lm", "--model", model, "--out", out];
    if (await synth([...TINY, ...args, "--refine-nll-target", "real+0.5"]) !== 0) {
      throw new Error("synth failed");
    }
    const manifest = JSON.parse(Deno.readTextFileSync(join(dir, "t.manifest.json")));
    if (manifest.settings.refineLm?.nllTarget !== "real+0.5") {
      throw new Error(`settings lack the target: ${JSON.stringify(manifest.settings.refineLm)}`);
    }
    // The resolved targets: measured per class, and 0.5 above those of a run aimed at "real".
    const targetsOf = (m: { targets: Record<string, { refineNllTarget?: number }> }) =>
      Object.values(m.targets).map((t) => t.refineNllTarget!);
    const plus = targetsOf(manifest);
    if (plus.length !== 2 || plus.some((t) => !Number.isFinite(t))) {
      throw new Error(`per-class targets missing: ${JSON.stringify(manifest.targets)}`);
    }
    if (plus[0] === plus[1]) {
      throw new Error("both classes got the same target: it was not measured per class");
    }
    if (lines(out).length !== 8) throw new Error("expected 8 records");
    const real = join(dir, "r.jsonl");
    const argsReal = args.map((a) => (a === out ? real : a));
    if (await synth([...TINY, ...argsReal, "--refine-nll-target", "real"]) !== 0) {
      throw new Error("synth failed");
    }
    const bare = targetsOf(JSON.parse(Deno.readTextFileSync(join(dir, "r.manifest.json"))));
    plus.forEach((t, c) => {
      if (Math.abs(t - bare[c] - 0.5) > 1e-9) {
        throw new Error(`class ${c}: target ${t} vs real ${bare[c]} + 0.5`);
      }
    });
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "synth on gpt2-d128 (short): texts use only allowed tokens and the loss is reported",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const out = join(dir, "s.jsonl");
    const code = await synth([
      "--per-class",
      "2",
      "--batch",
      "2",
      "--outer-steps",
      "2",
      "--inner-steps",
      "3",
      "--init-candidates",
      "3",
      "--refine-iterations",
      "2",
      "--model",
      fixtureModel("gpt2-d128"),
      "--out",
      out,
    ]);
    if (code !== 0) throw new Error("synth failed");
    const recs = lines(out);
    if (recs.length !== 4) throw new Error(`expected 4 records, got ${recs.length}`);
    for (const r of recs) {
      const t = r.text as string;
      if (!t || /[*;:_<>{}[\]()/\\|=+%@~`^#$&\n]/.test(t)) {
        throw new Error(`text has banned characters: '${t}'`);
      }
      if (!Number.isFinite(r.nll as number)) throw new Error(`nll not finite: ${r.nll}`);
    }
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "synth: bad flags and data fail before any work, with clear messages",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const bad = join(dir, "bad.jsonl");
    Deno.writeTextFileSync(bad, '{"text": "fine", "label": 1}\n{"text": "broken"\n');
    const cases: [string[], RegExp][] = [
      [["--task", "nope"], /unknown task 'nope'/],
      [["--data", bad], /bad.jsonl:2: not valid JSON/],
      [["--data", join(dir, "missing.jsonl")], /does not exist/],
      [["--loss", "l1"], /--loss must be cos or l2/],
      [["--per-class", "x"], /--per-class must be an integer/],
      [["--dp-delta", "1e-5"], /need --dp-epsilon/],
      [["--template", "{text} is"], /needs both --template and --label-words/],
    ];
    const orig = console.error;
    for (const [args, re] of cases) {
      let msg = "";
      console.error = (...a: unknown[]) => (msg += a.join(" ") + "\n");
      let code: number;
      try {
        code = await synth([...args, "--out", join(dir, "o.jsonl")]);
      } finally {
        console.error = orig;
      }
      if (code === 0 || !re.test(msg)) {
        throw new Error(`${args.join(" ")}: exit ${code}, message '${msg.trim()}'`);
      }
    }
    await Deno.remove(dir, { recursive: true });
  },
});
