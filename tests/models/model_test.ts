/**
 * The CausalLM contract beyond the golden values: positions from a mask, ids vs embeddings, the
 * KV cache against a full forward, gradients reaching every parameter (checked against finite
 * differences), save/load round trip, batched scoring, and the binding-limit error.
 */
import assert from "node:assert";
import { join } from "node:path";
import { scope, Tensor } from "../../autograd/tensor.ts";
import { backward } from "../../autograd/tape.ts";
import { select } from "../../autograd/ops/shape.ts";
import { crossEntropy } from "../../autograd/ops/loss.ts";
import { GpuLimitError } from "../../kernels/device.ts";
import { folderSink, loadModel, openSafetensors } from "../../host/files.ts";
import { positionIdsFromMask } from "../../models/model.ts";
import { sequenceNll } from "../../models/perplexity.ts";
import { assertClose, ctx, gpuTest } from "../helpers.ts";
import { fixture } from "../fixtures.ts";
import { noGrad } from "../../autograd/grad_mode.ts";

Deno.test({
  name: "positionIdsFromMask: max(cumsum(mask) − 1, 0) per row",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const mask = [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1];
    const p = positionIdsFromMask(Tensor.from(c, mask, [2, 6]));
    assert.deepStrictEqual(Array.from(await p.read()), [0, 0, 0, 1, 2, 3, 0, 1, 2, 2, 3, 4]);
  },
});

Deno.test({
  name: "model: ids and E[ids] give the same logits; the KV cache reproduces the full forward (all families)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    for (const family of ["gpt2", "llama", "phi"]) {
      const dir = fixture("golden", family);
      const model = await loadModel(c, dir);
      using g = await openSafetensors(join(dir, "golden.safetensors"));
      const [B, T] = g.info("ids").shape;
      const ids = await g.read("ids");
      const mask = await g.read("attention_mask");
      await scope(c, async () => {
        const idsT = Tensor.from(c, ids, [B, T]);
        const maskT = Tensor.from(c, mask, [B, T]);
        const full = noGrad(c, () => model.forward({ ids: idsT, attentionMask: maskT }).logits!);
        const viaEmbeds = noGrad(
          c,
          () => model.forward({ embeds: model.embed(idsT), attentionMask: maskT }).logits!,
        );
        assertClose(await viaEmbeds.read(), await full.read(), `${family} ids vs embeds`, 1e-6, 1e-6);

        // Prefix of 5 tokens, then 1, then 3, through the cache.
        const cache = model.newCache(B, T);
        const pieces: [number, number][] = [[0, 5], [5, 6], [6, T]];
        const want = await full.read();
        const V = model.config.vocabSize;
        for (const [s, e] of pieces) {
          const sub = (x: Float32Array) => {
            const o = new Float32Array(B * (e - s));
            for (let b = 0; b < B; b++) o.set(x.subarray(b * T + s, b * T + e), b * (e - s));
            return o;
          };
          const step = noGrad(c, () =>
            model.forward({
              ids: Tensor.from(c, sub(ids), [B, e - s]),
              attentionMask: Tensor.from(c, sub(mask), [B, e - s]),
              cache,
            }).logits!);
          const got = await step.read();
          // Compare real positions only (padded queries are meaningless).
          for (let b = 0; b < B; b++) {
            for (let t = s; t < e; t++) {
              if (mask[b * T + t] < 0.5) continue;
              const a = got.subarray((b * (e - s) + t - s) * V, (b * (e - s) + t - s + 1) * V);
              const w = want.subarray((b * T + t) * V, (b * T + t + 1) * V);
              assertClose(a, w, `${family} cached logits row ${b} pos ${t}`, 2e-5, 1e-4);
            }
          }
        }
        assert.strictEqual(cache.length, T);
        cache.dispose();
      });
      model.dispose();
    }
  },
});

Deno.test({
  name: "model: backward reaches every parameter, matching finite differences (all families)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    for (const family of ["phi", "llama", "gpt2"]) {
      const dir = fixture("golden", family);
      const model = await loadModel(c, dir, { requiresGrad: true });
      using g = await openSafetensors(join(dir, "golden.safetensors"));
      const [B, T] = g.info("ids").shape;
      const idsT = Tensor.from(c, await g.read("ids"), [B, T]).keep();
      const maskT = Tensor.from(c, await g.read("attention_mask"), [B, T]).keep();
      const labels = Array.from(await g.read("labels"));
      const loss = () =>
        crossEntropy(select(model.forward({ ids: idsT, attentionMask: maskT }).logits!, 1, T - 1), labels);
      await scope(c, () => backward(loss()));
      for (const [name, p] of model.parameters()) {
        assert.ok(p.grad, `${family}: ${name} got no gradient`);
      }
      // Central differences in f32 on a few entries of a few tensors.
      const lossValue = () => scope(c, () => noGrad(c, () => loss().item()));
      const probes = family === "gpt2"
        ? ["transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_fc.bias", "transformer.wpe.weight"]
        : family === "llama"
        ? [
          "model.layers.0.self_attn.k_proj.weight",
          "model.layers.1.mlp.gate_proj.weight",
          "model.norm.weight",
        ]
        : [
          "model.layers.0.self_attn.q_proj.weight",
          "model.layers.1.mlp.fc1.bias",
          "model.final_layernorm.weight",
        ];
      for (const name of probes) {
        const p = model.parameters().get(name)!;
        const values = await p.read();
        const grad = await p.grad!.read();
        // The entry with the largest gradient, so the difference is well above f32 noise.
        let i = 0;
        for (let k = 1; k < grad.length; k++) if (Math.abs(grad[k]) > Math.abs(grad[i])) i = k;
        const h = 1e-2 * Math.max(1, Math.abs(values[i]));
        const orig = values[i];
        values[i] = orig + h;
        p.write(values);
        const lp = await lossValue();
        values[i] = orig - h;
        p.write(values);
        const lm = await lossValue();
        values[i] = orig;
        p.write(values);
        const fd = (lp - lm) / (2 * h);
        assert.ok(
          Math.abs(fd - grad[i]) <= 2e-2 * Math.abs(grad[i]) + 1e-4,
          `${family} ${name}[${i}]: backward ${grad[i]}, finite difference ${fd}`,
        );
      }
      idsT.dispose();
      maskT.dispose();
      model.dispose();
    }
  },
});

Deno.test({
  name: "model: save then load gives the same logits (tied GPT-2 and untied Phi)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    for (const family of ["gpt2", "phi"]) {
      const tmp = await Deno.makeTempDir();
      try {
        const model = await loadModel(c, fixture("golden", family));
        await model.save(folderSink(tmp));
        const again = await loadModel(c, tmp);
        assert.deepStrictEqual([...again.parameters().keys()].sort(), [...model.parameters().keys()].sort());
        await scope(c, async () => {
          const ids = Tensor.from(c, [1, 5, 9, 2, 40, 3], [2, 3]);
          const a = noGrad(c, () => model.forward({ ids }).logits!);
          const b = noGrad(c, () => again.forward({ ids }).logits!);
          assert.deepStrictEqual(await b.read(), await a.read());
        });
        model.dispose();
        again.dispose();
      } finally {
        await Deno.remove(tmp, { recursive: true });
      }
    }
  },
});

Deno.test({
  name: "perplexity: batched, left-padded scoring equals one sequence at a time and a direct CE",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const model = await loadModel(c, fixture("golden", "llama"));
    const seqs = [[1, 5, 9, 2, 40, 3, 7], [4, 4], [8], [11, 12, 13, 14, 15], [96, 0, 3]];
    const batched = await sequenceNll(model, seqs, { batchSize: 4 });
    const single = await sequenceNll(model, seqs, { batchSize: 1 });
    for (let i = 0; i < seqs.length; i++) {
      assert.strictEqual(batched[i].tokens, Math.max(0, seqs[i].length - 1));
      assert.ok(
        Math.abs(batched[i].nll - single[i].nll) <= 1e-4 * Math.max(1, single[i].nll),
        `sequence ${i}`,
      );
    }
    const s = seqs[0];
    const direct = await scope(c, () =>
      noGrad(c, () => {
        const logits = model.forward({ ids: Tensor.from(c, s, [1, s.length]) }).logits!;
        return crossEntropy(logits, [...s.slice(1), -100], { reduction: "sum", ignoreIndex: -100 }).item();
      }));
    assert.ok(Math.abs(direct - single[0].nll) <= 1e-4 * direct, `direct ${direct} vs ${single[0].nll}`);
    model.dispose();
  },
});

Deno.test({
  name:
    "model: a tensor larger than the binding limit (other than the vocabulary matrices) is rejected with its name",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const limit = c.limits.maxStorageBufferBindingSize;
    // A one-layer GPT-2 whose wpe alone exceeds the limit; the file is sparse (never written).
    // (wte would be split into row chunks: tests/models/chunked_test.ts.)
    const d = 64;
    const V = 50;
    const P = Math.ceil(limit / (4 * d)) + 1;
    const tmp = await Deno.makeTempDir();
    try {
      const config = {
        architectures: ["GPT2LMHeadModel"],
        model_type: "gpt2",
        n_embd: d,
        n_head: 2,
        n_layer: 1,
        n_positions: P,
        vocab_size: V,
      };
      await Deno.writeTextFile(join(tmp, "config.json"), JSON.stringify(config));
      const shapes: Record<string, number[]> = {
        "transformer.wte.weight": [V, d],
        "transformer.wpe.weight": [P, d],
        "transformer.ln_f.weight": [d],
        "transformer.ln_f.bias": [d],
      };
      const h = "transformer.h.0.";
      Object.assign(shapes, {
        [`${h}ln_1.weight`]: [d],
        [`${h}ln_1.bias`]: [d],
        [`${h}ln_2.weight`]: [d],
        [`${h}ln_2.bias`]: [d],
        [`${h}attn.c_attn.weight`]: [d, 3 * d],
        [`${h}attn.c_attn.bias`]: [3 * d],
        [`${h}attn.c_proj.weight`]: [d, d],
        [`${h}attn.c_proj.bias`]: [d],
        [`${h}mlp.c_fc.weight`]: [d, 4 * d],
        [`${h}mlp.c_fc.bias`]: [4 * d],
        [`${h}mlp.c_proj.weight`]: [4 * d, d],
        [`${h}mlp.c_proj.bias`]: [d],
      });
      const header: Record<string, unknown> = {};
      let off = 0;
      for (const [name, shape] of Object.entries(shapes)) {
        const bytes = shape.reduce((a, b) => a * b, 1) * 2;
        header[name] = { dtype: "F16", shape, data_offsets: [off, off + bytes] };
        off += bytes;
      }
      let json = new TextEncoder().encode(JSON.stringify(header));
      const pad = (8 - (json.length % 8)) % 8;
      json = new TextEncoder().encode(JSON.stringify(header) + " ".repeat(pad));
      const file = join(tmp, "model.safetensors");
      const head = new Uint8Array(8 + json.length);
      new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
      head.set(json, 8);
      await Deno.writeFile(file, head);
      await Deno.truncate(file, head.length + off);
      await assert.rejects(() => loadModel(c, tmp), (e: Error) => {
        assert.ok(e instanceof GpuLimitError, `${e.name}: ${e.message}`);
        assert.match(e.message, /transformer\.wpe\.weight/);
        return true;
      });
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
