/**
 * The demo page's pieces that need no browser: query-string settings, synth progress and ETA,
 * and the static server (mounts, path escapes, byte ranges).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DEFAULT_PARAMS, ParamError, parseDemoParams } from "../../web/params.ts";
import { formatSeconds, SynthProgressTracker } from "../../web/progress.ts";
import { resolveMounted, serveStatic } from "../../web/server.ts";
import type { SynthEvent } from "../../admm/synth.ts";

Deno.test("demo params: defaults, overrides, and one clear error per bad value", () => {
  assert.deepEqual(parseDemoParams(""), DEFAULT_PARAMS);
  const p = parseDemoParams("?auto=synth&perClass=4&batch=2&outer=3&prompt=Hello%20there&model=assets/x");
  assert.equal(p.auto, "synth");
  assert.equal(p.prompt, "Hello there");
  assert.equal(p.model, "assets/x/");
  assert.equal(p.synth.perClass, 4);
  assert.equal(p.synth.batch, 2);
  assert.equal(p.synth.outerSteps, 3);
  assert.equal(p.synth.innerSteps, DEFAULT_PARAMS.synth.innerSteps);
  assert.equal(p.synth.method, "lm-guided", "the page's default is synth's default method");
  const official = parseDemoParams("?method=official&refine=5");
  assert.equal(official.synth.method, "official");
  assert.equal(official.synth.refineIterations, 5);
  assert.throws(() => parseDemoParams("?method=refine"), /method=refine: expected lm-guided or official/);
  assert.throws(() => parseDemoParams("?auto=train"), /auto=train: expected 'generate' or 'synth'/);
  assert.throws(() => parseDemoParams("?tokens=2.5"), ParamError);
  assert.throws(() => parseDemoParams("?tokens=0"), /tokens=0: expected a whole number from 1/);
  assert.throws(
    () => parseDemoParams("?perClass=3&batch=2"),
    /perClass \(3\) must be a multiple of batch \(2\)/,
  );
});

Deno.test("synth progress: step, match loss, fraction and a linear ETA", () => {
  let now = 0;
  const tracker = new SynthProgressTracker(() => now);
  const step = (classIndex: number, round: number, outerStep: number, loss: number): SynthEvent => ({
    kind: "step",
    key: { rho: 0.7, classIndex, round },
    progress: { outerStep, outerSteps: 4, totalLoss: loss + 1, discreteLoss: loss },
  });
  tracker.update({
    kind: "plan",
    classes: 2,
    roundsPerClass: 1,
    rhos: [0.7],
    length: [8, 8],
    allowedTokens: 10,
  });
  now = 10_000;
  let s = tracker.update(step(0, 0, 1, 0.5));
  // 1 of 4 steps of 1 of 2 rounds: 1/8 done in 10 s, so 70 s left.
  assert.equal(s.fraction, 1 / 8);
  assert.equal(s.elapsedS, 10);
  assert.ok(Math.abs(s.etaS - 70) < 1e-9);
  assert.equal(s.matchLoss, 0.5);
  assert.equal(s.roundsTotal, 2);
  now = 40_000;
  const record = {
    text: "x",
    label: 0,
    label_word: "bad",
    round: 0,
    rho: 0.7,
    match_loss: 0.25,
    match_loss_init: 0.5,
    nll: 3,
  };
  s = tracker.update({
    kind: "round",
    key: { rho: 0.7, classIndex: 0, round: 0 },
    records: [record],
    timings: {},
  });
  assert.equal(s.roundsDone, 1);
  assert.equal(s.fraction, 1 / 2);
  assert.ok(Math.abs(s.etaS - 40) < 1e-9);
  assert.equal(s.matchLoss, 0.25);
  now = 60_000;
  s = tracker.update(step(1, 0, 2, 0.125));
  assert.equal(s.classIndex, 1);
  assert.equal(s.fraction, 3 / 4);
  assert.ok(Math.abs(s.etaS - 20) < 1e-9);
  assert.equal(formatSeconds(65.4), "1 m 05 s");
  assert.equal(formatSeconds(12.4), "12 s");
  assert.equal(formatSeconds(NaN), "–");
});

Deno.test("static server: mounts, no escape from them, single byte ranges", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(dir, "web"));
    await Deno.mkdir(join(dir, "assets"));
    await Deno.writeTextFile(join(dir, "web", "index.html"), "<p>page</p>");
    await Deno.writeFile(join(dir, "assets", "w.safetensors"), Uint8Array.from({ length: 100 }, (_, i) => i));
    await Deno.writeTextFile(join(dir, "secret.txt"), "no");
    const mounts = [{ prefix: "/", dir: join(dir, "web") }, { prefix: "/assets/", dir: join(dir, "assets") }];
    assert.equal(resolveMounted(mounts, "/"), join(dir, "web", "index.html"));
    assert.equal(resolveMounted(mounts, "/assets/w.safetensors"), join(dir, "assets", "w.safetensors"));
    assert.equal(resolveMounted(mounts, "/../secret.txt"), null);
    assert.equal(resolveMounted(mounts, "/assets/%2e%2e/secret.txt"), null);
    assert.equal(resolveMounted(mounts, "/assets/..%2f..%2fsecret.txt"), null);
    assert.equal(resolveMounted(mounts, "/%00"), null);

    const server = serveStatic(mounts);
    try {
      const page = await fetch(server.url);
      assert.equal(page.status, 200);
      assert.match(page.headers.get("content-type")!, /text\/html/);
      assert.equal(await page.text(), "<p>page</p>");
      const escaped = await fetch(`${server.url}assets/%2e%2e/secret.txt`);
      assert.equal(escaped.status, 404);
      await escaped.body?.cancel();
      const part = await fetch(`${server.url}assets/w.safetensors`, { headers: { range: "bytes=10-19" } });
      assert.equal(part.status, 206);
      assert.equal(part.headers.get("content-range"), "bytes 10-19/100");
      assert.deepEqual([...new Uint8Array(await part.arrayBuffer())], [
        10,
        11,
        12,
        13,
        14,
        15,
        16,
        17,
        18,
        19,
      ]);
      const tail = await fetch(`${server.url}assets/w.safetensors`, { headers: { range: "bytes=-3" } });
      assert.deepEqual([...new Uint8Array(await tail.arrayBuffer())], [97, 98, 99]);
      const bad = await fetch(`${server.url}assets/w.safetensors`, { headers: { range: "bytes=200-" } });
      assert.equal(bad.status, 416);
      await bad.body?.cancel();
      const whole = await fetch(`${server.url}assets/w.safetensors`);
      assert.equal((await whole.arrayBuffer()).byteLength, 100);
      const post = await fetch(server.url, { method: "POST" });
      assert.equal(post.status, 405);
      await post.body?.cancel();
    } finally {
      await server.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
