/**
 * The blend decode (admm/blend_decode.ts) at its two limits on TinyStories: β → ∞ is the pure
 * cosine argmax, β = 0 with the model's top-1 is the model's greedy choice among allowed ids;
 * and an official run's settings record does not mention it.
 */
import {
  constrainedDecode,
  disposeProjector,
  makeProjector,
  projectIds,
  topkCosine,
} from "../../admm/zstep.ts";
import { resolveSynthSettings } from "../../api/synth_settings.ts";
import { synthSettingsRecord } from "../../api/synth_manifest.ts";
import { Rng } from "../../autograd/random.ts";
import { Tensor } from "../../autograd/tensor.ts";
import { loadModel } from "../../host/files.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { fixtureModel } from "../fixtures.ts";

const B = 2, T = 7, suffix = [13], prefix = [1, 415];

async function setup() {
  const c = await ctx();
  const model = await loadModel(c, fixtureModel("tinystories-656k"));
  const V = model.headRows.shape[0], d = model.embedRows.shape[1];
  const banned = new Uint8Array(V);
  for (let i = 3; i < V; i += 4) banned[i] = 1;
  const rng = new Rng(11);
  const u = Tensor.from(c, rng.normals(B * T * d), [B, T, d]);
  return { c, model, V, banned, u };
}

Deno.test({
  name: "blend decode, β → ∞: every free token is the top-1 cosine candidate",
  ...gpuTest,
  fn: async () => {
    const { model, banned, u } = await setup();
    const blend = makeProjector(model, banned, 5, { beta: 1e6, lmTop: 4, noRepeat: false });
    const top1 = makeProjector(model, banned, 1);
    const ids = await projectIds(blend, u, prefix, suffix);
    const cand = Array.from(await topkCosine(top1, u).read());
    for (let b = 0; b < B; b++) {
      const want = [...cand.slice(b * T, b * T + T - suffix.length), ...suffix].join();
      if (ids[b].join() !== want) throw new Error(`row ${b}: blend gives ${ids[b]}, cosine argmax ${want}`);
    }
    [blend, top1].forEach(disposeProjector);
    model.dispose();
  },
});

Deno.test({
  name: "blend decode, β = 0, m = 1: the model's greedy pick among allowed ids, not the official one",
  ...gpuTest,
  fn: async () => {
    const { c, model, V, banned, u } = await setup();
    const blend = makeProjector(model, banned, 5, { beta: 0, lmTop: 1, noRepeat: false });
    const official = makeProjector(model, banned, 5);
    const ids = await projectIds(blend, u, prefix, suffix);
    const officialIds = await projectIds(official, u, prefix, suffix);
    // The official decode over every allowed id is the model's greedy choice among them.
    const allowed = [...banned.keys()].filter((i) => !banned[i]);
    const all = Float32Array.from({ length: B * T * allowed.length }, (_, i) => allowed[i % allowed.length]);
    const everyAllowed = Tensor.from(c, all, [B, T, allowed.length]);
    const greedy = await constrainedDecode(model, everyAllowed, prefix, suffix);
    if (ids.join("|") !== greedy.join("|")) {
      throw new Error(`blend gives ${ids.join("|")}, greedy ${greedy.join("|")}`);
    }
    if (ids.flat().some((id, i) => i % T < T - suffix.length && (banned[id] || id >= V))) {
      throw new Error(`blend chose a banned id: ${ids.join("|")}`);
    }
    // With 5 cosine candidates of random vectors the official decode cannot follow the model.
    if (ids.join("|") === officialIds.join("|")) throw new Error("blend at β = 0 equals the official decode");
    everyAllowed.dispose();
    [blend, official].forEach(disposeProjector);
    model.dispose();
  },
});

Deno.test("settings: the blend enters the settings record only when asked for", () => {
  const official = synthSettingsRecord(resolveSynthSettings({ method: "official" }, true).options);
  const blended = synthSettingsRecord(resolveSynthSettings({ decodeBeta: 2 }, true).options);
  const admm = (r: Record<string, unknown>) => r.admm as Record<string, unknown>;
  if ("blend" in admm(official)) throw new Error(`official record has a blend: ${JSON.stringify(official)}`);
  const got = JSON.stringify(admm(blended).blend);
  if (got !== JSON.stringify({ beta: 2, lmTop: 8, noRepeat: true })) throw new Error(`blend record ${got}`);
  let threw = false;
  try {
    resolveSynthSettings({ decodeBeta: -1 }, true);
  } catch {
    threw = true;
  }
  if (!threw) throw new Error("decodeBeta -1 was accepted");
});

Deno.test({
  name: "blend decode, noRepeat: no bigram twice in a text, where the plain rule repeats one",
  ...gpuTest,
  fn: async () => {
    const { c, model, banned } = await setup();
    // The same vector at every position: the cosine argmax is one token, repeated.
    const long = 12, d = model.embedRows.shape[1];
    const one = new Rng(5).normals(d);
    const u = Tensor.from(c, Float32Array.from({ length: B * long * d }, (_, i) => one[i % d]), [B, long, d]);
    const repeats = (row: number[]) => {
      const seen = new Set<string>();
      return row.slice(0, long - suffix.length).slice(1).some((id, i) => {
        const key = `${row[i]},${id}`;
        return seen.has(key) || !seen.add(key);
      });
    };
    const plain = makeProjector(model, banned, 8, { beta: 1e6, lmTop: 1, noRepeat: false });
    const guarded = makeProjector(model, banned, 8, { beta: 1e6, lmTop: 1, noRepeat: true });
    const loops = await projectIds(plain, u, prefix, suffix);
    const ids = await projectIds(guarded, u, prefix, suffix);
    if (!loops.every(repeats)) throw new Error(`the plain rule did not repeat a bigram: ${loops.join("|")}`);
    const bad = ids.find(repeats);
    if (bad) throw new Error(`noRepeat decode repeats a bigram: ${bad}`);
    [plain, guarded].forEach(disposeProjector);
    model.dispose();
  },
});
