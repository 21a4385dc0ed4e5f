/**
 * The synth settings `experiment` passes on, without a GPU: which flags each synth run gets, and
 * that bad combinations are refused as synth refuses them, in the experiment's flag names.
 */
import assert from "node:assert/strict";
import { checkSynthSettings, variantArgs } from "../../cli/experiment.ts";
import { UsageError } from "../../cli/args.ts";

const ARGS = {
  batch: "2",
  method: "refine-lm",
  "refine-lambda": "0.2",
  "refine-nll-slack": "0.1",
  "refine-iterations": "3",
  "decode-beta": "1",
  select: "total",
  "outer-steps": "4",
  "dp-epsilon": "4",
  "dp-delta": "1e-5",
};

Deno.test("variantArgs: the method's flags go to gradmm runs only, DP ones to gradmm-dp only", () => {
  const gradmm = variantArgs("gradmm", ARGS);
  assert.equal(gradmm.method, "refine-lm");
  assert.equal(gradmm["refine-lambda"], "0.2");
  assert.equal(gradmm["decode-beta"], "1");
  assert.ok(!("dp-epsilon" in gradmm) && !("dp-delta" in gradmm));
  const dp = variantArgs("gradmm-dp", ARGS);
  assert.equal(dp["dp-epsilon"], "4");
  assert.equal(dp.method, "refine-lm");
  const official = variantArgs("gradmm-official", ARGS);
  assert.deepEqual(official, { batch: "2", "outer-steps": "4", method: "official" });
});

/** The message checkSynthSettings refuses `settings` with (and that it is a UsageError). */
function refusal(settings: Parameters<typeof checkSynthSettings>[0]): string {
  try {
    checkSynthSettings(settings);
  } catch (e) {
    assert.ok(e instanceof UsageError, `not a UsageError: ${e}`);
    return (e as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(settings)}`);
}

Deno.test("checkSynthSettings: synth's own checks, worded with experiment's flags", () => {
  for (const method of ["lm-guided", "official", "discrete", "refine", "refine-lm"] as const) {
    checkSynthSettings({ method }); // every method synth accepts
  }
  checkSynthSettings({ method: "refine-lm", refineLambda: 0.2, refineNllSlack: 0.1, decodeBeta: 2 });
  assert.match(
    refusal({ method: "nonsense" as "official" }),
    /^experiment: --synth-method must be lm-guided, official, discrete, refine, refine-lm/,
  );
  checkSynthSettings({ refineLambda: 0.2, refineNllTarget: "real+0.2" }); // the default, lm-guided, takes them
  assert.match(
    refusal({ method: "official", refineLambda: 0.2 }),
    /--synth-refine-lambda needs --synth-method 'refine-lm' or 'lm-guided'/,
  );
  assert.match(
    refusal({ refineNllTarget: "real", dp: { epsilon: 4 } }),
    /--synth-refine-nll-target 'real' reads the real examples/,
  );
  assert.match(
    refusal({ method: "official", refineNllSlack: 0.1 }),
    /--synth-refine-nll-slack need --synth-method 'refine', 'refine-lm' or 'lm-guided'/,
  );
  assert.match(refusal({ method: "refine", refineLambda: 1 }), /--synth-refine-lambda/);
  assert.match(
    refusal({ select: "best" as "total" }),
    /^experiment: --synth-select must be total or discrete/,
  );
});
