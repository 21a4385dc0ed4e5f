/**
 * safetensors reader and writer: round trips in every writable dtype, exact F16/BF16 conversion
 * (checked against the runtime's own Float16Array and a nearest-value search), integer dtypes,
 * lazy reads, sharded checkpoints (hand-made, and an F16 two-shard copy of a real model), atomic
 * writes, and the in-repository checkpoints against values computed independently with numpy
 * (gpt2-d256, F16 in two shards, is checked the same way in tests/shared/).
 */
import nodeAssert from "node:assert";
import { join } from "node:path";
import {
  blobSource,
  type ByteSource,
  decodeToFloat32,
  encodeSafetensors,
  isSafeShardName,
  memorySource,
  openSafetensorsBytes,
  openSafetensorsSource,
  openShardedSafetensors,
  parseShardIndex,
} from "../../models/safetensors.ts";
import { float16BitsToNumber, numberToBfloat16Bits, numberToFloat16Bits } from "../../models/half_float.ts";
import { openCheckpoint, openSafetensors, writeSafetensors } from "../../host/files.ts";
import { SafetensorsError } from "../../models/errors.ts";
import { fixtureModel } from "../fixtures.ts";
import { writeShardedCopy } from "../sharded_fixture.ts";

const assert: (condition: unknown, message?: string) => asserts condition = nodeAssert.ok;
const assertEquals: <T>(actual: unknown, expected: T, message?: string) => asserts actual is T =
  nodeAssert.deepStrictEqual;

/** Awaits `fn` and checks it rejects with `type` and a message containing `text`. */
async function assertRejects(fn: () => Promise<unknown>, type: new (...a: never[]) => Error, text: string) {
  await nodeAssert.rejects(fn, (e: Error) => {
    assert(e instanceof type, `expected ${type.name}, got ${e}`);
    assert(e.message.includes(text), `message "${e.message}" lacks "${text}"`);
    return true;
  });
}

/** Checks `fn` throws `type` with a message containing `text`. */
function assertThrows(fn: () => unknown, type: new (...a: never[]) => Error, text: string) {
  nodeAssert.throws(fn, (e: Error) => {
    assert(e instanceof type, `expected ${type.name}, got ${e}`);
    assert(e.message.includes(text), `message "${e.message}" lacks "${text}"`);
    return true;
  });
}

/** A safetensors file built by hand (not by our writer), for reader tests. */
function handMade(
  entries: Record<string, { dtype: string; shape: number[]; bytes: Uint8Array }>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, e] of Object.entries(entries)) {
    header[name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + e.bytes.length] };
    offset += e.bytes.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const e of Object.values(entries)) {
    out.set(e.bytes, at);
    at += e.bytes.length;
  }
  return out;
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

Deno.test("F16 conversion: exact on all 65536 patterns, nearest with ties to even, agrees with Float16Array", () => {
  const runtime = typeof Float16Array === "function" ? new Float16Array(1) : undefined;
  const runtimeBits = runtime ? new Uint16Array(runtime.buffer) : undefined;
  for (let bits = 0; bits < 65536; bits++) {
    const value = float16BitsToNumber(bits);
    if (Number.isNaN(value)) {
      assert((bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0);
      assert(Number.isNaN(float16BitsToNumber(numberToFloat16Bits(value))));
      continue;
    }
    assertEquals(numberToFloat16Bits(value), bits, `bits ${bits.toString(16)}`);
    if (runtime) {
      runtime[0] = value;
      assertEquals(runtimeBits![0], bits);
    }
  }
  // Random float32 values: the result must be the nearest half (ties to even), like the runtime's.
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let i = 0; i < 20000; i++) {
    const x = Math.fround((next() - 0.5) * 2 ** (Math.floor(next() * 44) - 28));
    const h = numberToFloat16Bits(x);
    if (runtime) {
      runtime[0] = x;
      assertEquals(h, runtimeBits![0], `x=${x}`);
    }
    const err = Math.abs(float16BitsToNumber(h) - x);
    for (const neighbour of [h - 1, h + 1]) {
      if ((neighbour & 0x7fff) >= 0x7c00 || neighbour < 0) continue;
      assert(err <= Math.abs(float16BitsToNumber(neighbour & 0xffff) - x), `not nearest for ${x}`);
    }
  }
  assertEquals(numberToFloat16Bits(65520), 0x7c00); // halfway past 65504 rounds to infinity
  assertEquals(numberToFloat16Bits(1 + 2 ** -11), 0x3c00); // tie → even (down)
  assertEquals(numberToFloat16Bits(1 + 3 * 2 ** -11), 0x3c02); // tie → even (up)
  assertEquals(numberToFloat16Bits(2 ** -25), 0); // half the smallest subnormal → 0
  assertEquals(numberToFloat16Bits(1.5 * 2 ** -25), 1);
  assertEquals(numberToFloat16Bits(-0), 0x8000);
});

Deno.test("BF16 conversion: exact on all patterns, round to nearest even", () => {
  for (let bits = 0; bits < 65536; bits++) {
    const value = decodeToFloat32(bytesOf(new Uint16Array([bits])), "BF16")[0];
    if (Number.isNaN(value)) continue;
    assertEquals(numberToBfloat16Bits(value), bits);
  }
  assertEquals(numberToBfloat16Bits(1 + 2 ** -8), 0x3f80); // tie → even
  assertEquals(numberToBfloat16Bits(1 + 3 * 2 ** -8), 0x3f82);
  assert(Number.isNaN(decodeToFloat32(bytesOf(new Uint16Array([numberToBfloat16Bits(NaN)])), "BF16")[0]));
});

Deno.test("writer → reader round trip in F32, F16, BF16 with an aligned, space-padded header", async () => {
  const a = Float32Array.from({ length: 35 }, (_, i) => Math.sin(i) * 3);
  const bytes = encodeSafetensors({
    "w.f32": { data: a, shape: [5, 7] },
    "w.f16": { data: a, shape: [35], dtype: "F16" },
    "w.bf16": { data: a, shape: [7, 5], dtype: "BF16" },
    "empty": { data: [], shape: [0, 4] },
    "scalar": { data: [2.5], shape: [] },
  }, { metadata: { note: "test" } });
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assertEquals((8 + headerLength) % 8, 0);
  const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
  const header = JSON.parse(headerText);
  assertEquals(headerText.trimEnd(), JSON.stringify(header)); // padding is spaces only
  assertEquals(header.__metadata__, { format: "pt", note: "test" });

  const file = await openSafetensorsBytes(bytes, "roundtrip");
  assertEquals(file.metadata.format, "pt");
  assertEquals([...(await file.read("w.f32"))], [...a]);
  assertEquals(file.info("w.f16").shape, [35]);
  assertEquals(file.info("w.bf16").dtype, "BF16");
  const f16 = await file.read("w.f16");
  const bf16 = await file.read("w.bf16");
  for (let i = 0; i < a.length; i++) {
    assertEquals(f16[i], float16BitsToNumber(numberToFloat16Bits(a[i])));
    assert(Math.abs(bf16[i] - a[i]) <= Math.abs(a[i]) * 2 ** -8);
  }
  assertEquals((await file.read("empty")).length, 0);
  assertEquals(file.info("scalar").shape, []);
  assertEquals([...(await file.read("scalar"))], [2.5]);
  file.close();
  await assertRejects(() => file.read("w.f32"), SafetensorsError, "closed");
});

Deno.test("reader: integer and F64 dtypes read exactly, and as float32", async () => {
  const bytes = handMade({
    f64: { dtype: "F64", shape: [2], bytes: bytesOf(new Float64Array([1.25, -1e300])) },
    i8: { dtype: "I8", shape: [3], bytes: bytesOf(new Int8Array([-128, 0, 127])) },
    i16: { dtype: "I16", shape: [1], bytes: bytesOf(new Int16Array([-300])) },
    i32: { dtype: "I32", shape: [2, 1], bytes: bytesOf(new Int32Array([-7, 2 ** 31 - 1])) },
    i64: { dtype: "I64", shape: [1], bytes: bytesOf(new BigInt64Array([-(2n ** 40n)])) },
    u8: { dtype: "U8", shape: [1], bytes: bytesOf(new Uint8Array([255])) },
    u16: { dtype: "U16", shape: [1], bytes: bytesOf(new Uint16Array([65535])) },
    u32: { dtype: "U32", shape: [1], bytes: bytesOf(new Uint32Array([4e9])) },
    u64: { dtype: "U64", shape: [1], bytes: bytesOf(new BigUint64Array([2n ** 63n])) },
    flag: { dtype: "BOOL", shape: [2], bytes: bytesOf(new Uint8Array([1, 0])) },
  });
  const file = await openSafetensorsBytes(bytes);
  assertEquals([...(await file.readTyped("f64"))], [1.25, -1e300]);
  assertEquals([...(await file.readTyped("i8"))], [-128, 0, 127]);
  assertEquals([...(await file.readTyped("i16"))], [-300]);
  assertEquals([...(await file.readTyped("i32"))], [-7, 2 ** 31 - 1]);
  assertEquals([...(await file.readTyped("i64"))], [-(2n ** 40n)]);
  assertEquals([...(await file.readTyped("u32"))], [4e9]);
  assertEquals([...(await file.readTyped("u64"))], [2n ** 63n]);
  assertEquals([...(await file.readTyped("flag"))], [1, 0]);
  assertEquals([...(await file.read("i64"))], [-(2 ** 40)]);
  assertEquals([...(await file.read("u16"))], [65535]);
  assertEquals((await file.read("f64"))[1], -Infinity); // beyond float32: documented widening
});

Deno.test("reader: reads lazily (header once, then only the asked tensor's bytes)", async () => {
  const bytes = encodeSafetensors({
    big: { data: new Float32Array(10000), shape: [100, 100] },
    small: { data: [1, 2, 3], shape: [3] },
  });
  const reads: [number, number][] = [];
  const inner = memorySource(bytes, "counted");
  const counted: ByteSource = { ...inner, read: (s, e) => (reads.push([s, e]), inner.read(s, e)) };
  const file = await openSafetensorsSource(counted);
  const headerEnd = file.tensors.get("big")!.byteRange[0];
  assertEquals(reads.reduce((n, [s, e]) => n + e - s, 0), headerEnd);
  reads.length = 0;
  assertEquals([...(await file.read("small"))], [1, 2, 3]);
  assertEquals(reads, [[...file.info("small").byteRange] as [number, number]]);
});

Deno.test("reader: blob source, alignment of odd byte ranges", async () => {
  // An F16 tensor of odd length before an F32 one leaves the F32 data at an unaligned offset.
  const bytes = handMade({
    h: { dtype: "F16", shape: [3], bytes: bytesOf(new Uint16Array([0x3c00, 0x4000, 0xc000])) },
    x: { dtype: "F32", shape: [2], bytes: bytesOf(new Float32Array([0.5, -2])) },
  });
  for (const source of [memorySource(bytes), blobSource(new Blob([bytes as Uint8Array<ArrayBuffer>]))]) {
    const file = await openSafetensorsSource(source);
    assertEquals([...(await file.read("h"))], [1, 2, -2]);
    assertEquals([...(await file.read("x"))], [0.5, -2]);
  }
});

Deno.test("reader: precise errors for malformed headers", async () => {
  const cases: [string, Uint8Array, string][] = [];
  const good = handMade({ a: { dtype: "F32", shape: [2], bytes: new Uint8Array(8) } });
  const withHeader = (header: unknown, data = 8) => {
    const json = new TextEncoder().encode(JSON.stringify(header));
    const out = new Uint8Array(8 + json.length + data);
    new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
    out.set(json, 8);
    return out;
  };
  const huge = good.slice();
  new DataView(huge.buffer).setBigUint64(0, 2n ** 40n, true);
  cases.push(["huge header length", huge, "above the 100000000-byte limit"]);
  cases.push(["too short", good.subarray(0, 5), "8-byte header length"]);
  cases.push(["truncated", good.subarray(0, good.length - 1), "reach past"]);
  cases.push([
    "f8",
    withHeader({ a: { dtype: "F8_E4M3", shape: [8], data_offsets: [0, 8] } }),
    "does not support",
  ]);
  cases.push([
    "unknown dtype",
    withHeader({ a: { dtype: "Q4", shape: [2], data_offsets: [0, 8] } }),
    "unknown dtype",
  ]);
  cases.push([
    "bad shape",
    withHeader({ a: { dtype: "F32", shape: [-2], data_offsets: [0, 8] } }),
    "non-negative",
  ]);
  cases.push([
    "size",
    withHeader({ a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }),
    "needs 12 bytes",
  ]);
  cases.push([
    "overlap",
    withHeader({
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
    }),
    "overlap",
  ]);
  cases.push([
    "gap",
    withHeader({ a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }),
    "belong to no tensor",
  ]);
  cases.push(["trailing", withHeader({ a: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }), "trailing"]);
  cases.push(["metadata", withHeader({ __metadata__: { n: 3 } }, 0), "must be a string"]);
  cases.push(["array", withHeader([1, 2], 0), "must be a JSON object"]);
  for (const [what, bytes, message] of cases) {
    await assertRejects(() => openSafetensorsBytes(bytes, what), SafetensorsError, message);
  }
});

Deno.test("files: atomic write, read back through a file handle, no temp files left", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "out.safetensors");
    const data = Float32Array.from({ length: 12 }, (_, i) => i / 3);
    await writeSafetensors(path, new Map([["w", { data, shape: [3, 4] }]]));
    await writeSafetensors(path, { w: { data, shape: [3, 4], dtype: "BF16" } }); // replaces it
    using file = await openSafetensors(path);
    assertEquals(file.info("w").dtype, "BF16");
    assertEquals([...(await file.read("w"))].length, 12);
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["out.safetensors"]);
    await assertRejects(
      () => writeSafetensors(join(dir, "missing", "x.safetensors"), { w: { data, shape: [12] } }),
      SafetensorsError,
      "cannot write",
    );
    await assertRejects(() => openSafetensors(join(dir, "nope.safetensors")), SafetensorsError, "not found");
    assertThrows(() => encodeSafetensors({ w: { data, shape: [5] } }), SafetensorsError, "holds 5 values");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sharded checkpoints: index, missing shard, unsafe names, misplaced and duplicate tensors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeSafetensors(join(dir, "s1.safetensors"), { a: { data: [1, 2], shape: [2] } });
    await writeSafetensors(join(dir, "s2.safetensors"), { b: { data: [3], shape: [1] } });
    const writeIndex = (map: Record<string, string>) =>
      Deno.writeTextFile(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: map }));
    await writeIndex({ a: "s1.safetensors", b: "s2.safetensors" });
    using ok = await openCheckpoint(dir);
    assertEquals([...(await ok.read("b"))], [3]);
    assertEquals(ok.info("a").file, join(dir, "s1.safetensors"));

    await writeIndex({ a: "s1.safetensors", b: "s3.safetensors" });
    await assertRejects(() => openCheckpoint(dir), SafetensorsError, `shard "s3.safetensors"`);
    await writeIndex({ a: "s1.safetensors", b: "s1.safetensors" });
    await assertRejects(() => openCheckpoint(dir), SafetensorsError, "does not contain");
    for (const bad of ["../s1.safetensors", "sub/s1.safetensors", "..", "C:evil", "a\\b"]) {
      assert(!isSafeShardName(bad));
      assertThrows(
        () => parseShardIndex({ weight_map: { a: bad } }, "index"),
        SafetensorsError,
        "plain file name",
      );
    }
    assertThrows(() => parseShardIndex({ weight_map: [] }, "index"), SafetensorsError, "weight_map");
    const one = await openSafetensorsBytes(encodeSafetensors({ a: { data: [1], shape: [1] } }), "x1");
    const two = await openSafetensorsBytes(encodeSafetensors({ a: { data: [1], shape: [1] } }), "x2");
    const index = parseShardIndex({ weight_map: { a: "x1" }, metadata: {} }, "index");
    const shards = new Map([["x1", one], ["x2", two]]);
    await assertRejects(
      () =>
        openShardedSafetensors(
          { ...index, shards: ["x1", "x2"] },
          (s) => Promise.resolve(shards.get(s)!),
          "idx",
        ),
      SafetensorsError,
      "in both",
    );
    await Deno.remove(join(dir, "model.safetensors.index.json"));
    await assertRejects(() => openCheckpoint(dir), SafetensorsError, "no model.safetensors");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("real checkpoints: BF16 and F32 values match numpy", async () => {
  const sum = (a: Float32Array) => {
    let total = 0;
    for (let i = 0; i < a.length; i++) total += a[i];
    return total;
  };
  const close = (a: number, b: number, what: string) =>
    assert(Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)) + 1e-6, `${what}: ${a} vs ${b}`);

  using d128 = await openCheckpoint(fixtureModel("gpt2-d128"));
  const wte = await d128.read("transformer.wte.weight");
  assertEquals(d128.info("transformer.wte.weight").dtype, "BF16");
  assertEquals(wte.length, 6432896);
  assertEquals([...wte.subarray(0, 4)], [-0.08203125, -0.051025390625, 0.008544921875, 0.10400390625]);
  close(sum(wte), -50294.15179237723, "gpt2-d128 wte sum");

  using stories = await openCheckpoint(fixtureModel("tinystories-656k"));
  assertEquals(stories.aliases.get("model.embed_tokens.weight"), "lm_head.weight");
  assert(stories.has("model.embed_tokens.weight"));
  assertEquals((await stories.read("model.embed_tokens.weight")).length, 2048 * 128);
  close(sum(await stories.read("model.norm.weight")), 83.99560546875, "tinystories norm sum");
  await assertRejects(() => stories.read("model.nope"), SafetensorsError, "no tensor");
});

Deno.test("sharded F16 copy of tiny-gpt2: index, shard placement, every value the nearest f16", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const src = fixtureModel("tiny-gpt2");
    const files = await writeShardedCopy(src, dir, { dtype: "F16", shards: 2 });
    assertEquals(files, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
    using original = await openCheckpoint(src);
    using sharded = await openCheckpoint(dir);
    assertEquals([...sharded.tensors.keys()].sort(), [...original.tensors.keys()].sort());
    const index = JSON.parse(await Deno.readTextFile(join(dir, "model.safetensors.index.json")));
    const used = new Set<string>();
    for (const name of original.tensors.keys()) {
      const info = sharded.info(name);
      assertEquals(info.dtype, "F16");
      assertEquals(info.shape, original.info(name).shape);
      assert(info.file.endsWith(index.weight_map[name]), `${name} is not in the shard the index names`);
      used.add(index.weight_map[name]);
      const want = await original.read(name);
      const got = await sharded.read(name);
      for (let i = 0; i < want.length; i++) {
        const nearest = float16BitsToNumber(numberToFloat16Bits(want[i]));
        if (got[i] !== nearest) {
          assert(false, `${name}[${i}]: ${got[i]} is not the nearest f16 of ${want[i]}`);
        }
      }
    }
    assertEquals([...used].sort(), files); // both shards hold tensors
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
