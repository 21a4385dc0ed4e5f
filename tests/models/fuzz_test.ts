/**
 * Fuzzing the safetensors reader: several hundred truncated or mutated variants of one small
 * valid file. Each must either load (and read back every tensor with the right element count) or
 * fail with SafetensorsError, quickly, and no read may ask for more bytes than the file holds:
 * every allocation the reader makes follows a read, so this bounds its memory by the file size.
 */
import nodeAssert from "node:assert";
import { join } from "node:path";
import {
  type ByteSource,
  DTYPE_BYTES,
  encodeSafetensors,
  memorySource,
  openSafetensorsSource,
} from "../../models/safetensors.ts";
import { openSafetensors } from "../../host/files.ts";
import { SafetensorsError } from "../../models/errors.ts";

const assert: (condition: unknown, message?: string) => asserts condition = nodeAssert.ok;

/** A small seeded generator (mulberry32) so every run tries the same variants. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const BASE = encodeSafetensors({
  "layer.weight": { data: Float32Array.from({ length: 12 }, (_, i) => i - 5.5), shape: [3, 4] },
  "layer.bias": { data: [1, 2, 3, 4, 5], shape: [5], dtype: "F16" },
  "emb": { data: [0.5, -0.25, 8, 1e-3, 3, 7], shape: [2, 3], dtype: "BF16" },
  "scalar": { data: [42], shape: [] },
  "empty": { data: [], shape: [0, 7] },
}, { metadata: { source: "fuzz" } });
const HEADER_LENGTH = Number(new DataView(BASE.buffer).getBigUint64(0, true));
const HEADER = JSON.parse(new TextDecoder().decode(BASE.subarray(8, 8 + HEADER_LENGTH)));
const DATA = BASE.subarray(8 + HEADER_LENGTH);

/** Rebuilds a file from an edited header (any JSON value or raw text) and the original data. */
function withHeader(header: unknown, data: Uint8Array = DATA): Uint8Array {
  const text = typeof header === "string" ? header : JSON.stringify(header);
  const json = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** A deep copy of the base header with one tensor entry changed. */
function editEntry(name: string, change: (entry: Record<string, unknown>) => void): unknown {
  const header = structuredClone(HEADER);
  change(header[name]);
  return header;
}

interface Case {
  what: string;
  bytes: Uint8Array;
  /** When known: whether the variant is valid. */
  expect?: "ok" | "error";
}

function buildCases(): Case[] {
  const rng = random(20250101);
  const pick = <T>(xs: T[]) => xs[Math.floor(rng() * xs.length)];
  const cases: Case[] = [{ what: "base file", bytes: BASE, expect: "ok" }];
  const headerEnd = 8 + HEADER_LENGTH;

  for (let i = 0; i < 70; i++) {
    const bytes = BASE.slice();
    const bit = Math.floor(rng() * headerEnd * 8);
    bytes[bit >> 3] ^= 1 << (bit & 7);
    cases.push({ what: `header bit flip at bit ${bit}`, bytes });
  }
  for (let i = 0; i < 20; i++) {
    const bytes = BASE.slice();
    const bit = headerEnd * 8 + Math.floor(rng() * DATA.length * 8);
    bytes[bit >> 3] ^= 1 << (bit & 7);
    cases.push({ what: `data bit flip at bit ${bit}`, bytes, expect: "ok" });
  }

  const lengths = [
    0n,
    1n,
    2n,
    7n,
    BigInt(HEADER_LENGTH - 1),
    BigInt(HEADER_LENGTH + 1),
    BigInt(HEADER_LENGTH + 8),
    BigInt(BASE.length - 8),
    BigInt(BASE.length - 7),
    BigInt(BASE.length),
    2n ** 31n,
    2n ** 32n,
    2n ** 32n + BigInt(HEADER_LENGTH),
    2n ** 53n,
    2n ** 63n,
    2n ** 64n - 1n,
    100_000_000n,
    100_000_001n,
  ];
  for (let i = 0; i < 8; i++) {
    lengths.push(BigInt(Math.floor(rng() * 2 ** 32)) * BigInt(Math.floor(rng() * 2 ** 32)));
  }
  for (const length of lengths) {
    const bytes = BASE.slice();
    new DataView(bytes.buffer).setBigUint64(0, length, true);
    cases.push({ what: `header length ${length}`, bytes, expect: "error" });
  }

  for (const at of [0, 1, 7, 8, 9, headerEnd - 1, headerEnd, headerEnd + 1, BASE.length - 1]) {
    cases.push({ what: `truncated to ${at}`, bytes: BASE.slice(0, at), expect: "error" });
  }
  for (let i = 0; i < 36; i++) {
    const at = Math.floor(rng() * BASE.length);
    cases.push({ what: `truncated to ${at}`, bytes: BASE.slice(0, at), expect: "error" });
  }
  cases.push({ what: "one extra byte", bytes: Uint8Array.from([...BASE, 0]), expect: "error" });

  const weight = HEADER["layer.weight"];
  const [wBegin, wEnd] = weight.data_offsets as number[];
  const entryEdits: [string, (e: Record<string, unknown>) => void, ("ok" | "error")?][] = [
    ["dtype F8_E4M3", (e) => (e.dtype = "F8_E4M3"), "error"],
    ["dtype lower case", (e) => (e.dtype = "f32"), "error"],
    ["dtype empty", (e) => (e.dtype = ""), "error"],
    ["dtype number", (e) => (e.dtype = 7), "error"],
    ["dtype null", (e) => (e.dtype = null), "error"],
    ["dtype missing", (e) => delete e.dtype, "error"],
    ["dtype F64 (size mismatch)", (e) => (e.dtype = "F64"), "error"],
    ["dtype I32 (same size)", (e) => (e.dtype = "I32"), "ok"],
    ["dtype U8 (size mismatch)", (e) => (e.dtype = "U8"), "error"],
    ["shape negative", (e) => (e.shape = [-3, 4]), "error"],
    ["shape fractional", (e) => (e.shape = [1.5, 8]), "error"],
    ["shape strings", (e) => (e.shape = ["3", "4"]), "error"],
    ["shape null", (e) => (e.shape = null), "error"],
    ["shape missing", (e) => delete e.shape, "error"],
    ["shape scalar", (e) => (e.shape = []), "error"],
    ["shape huge", (e) => (e.shape = [2 ** 40, 2 ** 40]), "error"],
    ["shape huge with zero", (e) => (e.shape = [2 ** 52, 0]), "error"],
    ["shape 1e308", (e) => (e.shape = [1e308]), "error"],
    ["shape too many elements", (e) => (e.shape = [3, 5]), "error"],
    ["shape reshaped [4,3]", (e) => (e.shape = [4, 3]), "ok"],
    ["shape extra unit dim", (e) => (e.shape = [3, 4, 1]), "ok"],
    ["shape as object", (e) => (e.shape = { 0: 3, 1: 4 }), "error"],
    ["offsets negative", (e) => (e.data_offsets = [-48, 0]), "error"],
    ["offsets reversed", (e) => (e.data_offsets = [wEnd, wBegin]), "error"],
    ["offsets past end", (e) => (e.data_offsets = [DATA.length, DATA.length + 48]), "error"],
    ["offsets far past end", (e) => (e.data_offsets = [2 ** 50, 2 ** 50 + 48]), "error"],
    ["offsets beyond safe integers", (e) => (e.data_offsets = [2 ** 60, 2 ** 60 + 48]), "error"],
    ["offsets shifted (overlap)", (e) => (e.data_offsets = [wBegin + 4, wEnd + 4]), "error"],
    ["offsets one", (e) => (e.data_offsets = [0]), "error"],
    ["offsets three", (e) => (e.data_offsets = [0, 48, 96]), "error"],
    ["offsets strings", (e) => (e.data_offsets = ["0", "48"]), "error"],
    ["offsets fractional", (e) => (e.data_offsets = [0.5, 48.5]), "error"],
    ["offsets null", (e) => (e.data_offsets = null), "error"],
    ["entry extra key (ignored)", (e) => (e.note = "x"), "ok"],
  ];
  for (const [what, edit, expect] of entryEdits) {
    cases.push({ what: `layer.weight: ${what}`, bytes: withHeader(editEntry("layer.weight", edit)), expect });
  }

  const headerEdits: [string, unknown, ("ok" | "error")?][] = [
    ["header array", [HEADER], "error"],
    ["header string", '"hello"', "error"],
    ["header number", "12345", "error"],
    ["header null", "null", "error"],
    ["header empty object with data", "{}", "error"],
    ["header not JSON", "{not json}", "error"],
    ["header trailing garbage", JSON.stringify(HEADER) + "}", "error"],
    ["header padded with spaces", JSON.stringify(HEADER) + "       ", "ok"],
    ["header with NUL", JSON.stringify(HEADER) + "\0", "error"],
    ["deeply nested metadata", `{"__metadata__":${"[".repeat(5000)}${"]".repeat(5000)}}`, "error"],
    ["metadata number", { ...HEADER, __metadata__: 5 }, "error"],
    ["metadata null", { ...HEADER, __metadata__: null }, "error"],
    ["metadata array", { ...HEADER, __metadata__: ["a"] }, "error"],
    ["metadata string", { ...HEADER, __metadata__: "pt" }, "error"],
    ["metadata value number", { ...HEADER, __metadata__: { format: 1 } }, "error"],
    ["metadata value null", { ...HEADER, __metadata__: { format: null } }, "error"],
    ["metadata value object", { ...HEADER, __metadata__: { format: { a: "b" } } }, "error"],
    ["metadata value bool", { ...HEADER, __metadata__: { format: true } }, "error"],
    [
      "metadata removed",
      (() => {
        const h = structuredClone(HEADER);
        delete h.__metadata__;
        return h;
      })(),
      "ok",
    ],
    [
      "tensor removed (gap)",
      (() => {
        const h = structuredClone(HEADER);
        delete h["layer.weight"];
        return h;
      })(),
      "error",
    ],
    ["entry is a number", { ...HEADER, "layer.bias": 3 }, "error"],
    ["entry is null", { ...HEADER, "layer.bias": null }, "error"],
    ["entry is an array", { ...HEADER, "layer.bias": [1, 2] }, "error"],
    ["extra empty tensor", { ...HEADER, extra: { dtype: "F32", shape: [0], data_offsets: [0, 0] } }, "ok"],
    [
      "extra overlapping tensor",
      { ...HEADER, extra: { dtype: "F32", shape: [1], data_offsets: [0, 4] } },
      "error",
    ],
    ["__proto__ tensor name", JSON.stringify(HEADER).replace('"emb"', '"__proto__"'), "ok"],
    ["unicode tensor name", JSON.stringify(HEADER).replace('"emb"', '"émb😀"'), "ok"],
    [
      "duplicate key",
      JSON.stringify(HEADER).replace("{", `{"emb":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},`),
    ],
  ];
  for (const [what, header, expect] of headerEdits) cases.push({ what, bytes: withHeader(header), expect });
  const invalidUtf8 = BASE.slice();
  invalidUtf8[8 + new TextDecoder().decode(BASE.subarray(8, headerEnd)).indexOf('"emb"') + 1] = 0xff;
  cases.push({ what: "header invalid UTF-8", bytes: invalidUtf8, expect: "error" });

  // Random compound edits: two or three entry edits on random tensors.
  const names = Object.keys(HEADER).filter((n) => n !== "__metadata__");
  for (let i = 0; i < 40; i++) {
    const header = structuredClone(HEADER);
    const applied: string[] = [];
    for (let k = 0; k < 2 + Math.floor(rng() * 2); k++) {
      const name = pick(names);
      const [what, edit] = pick(entryEdits);
      edit(header[name]);
      applied.push(`${name}: ${what}`);
    }
    cases.push({ what: `compound ${applied.join(" + ")}`, bytes: withHeader(header) });
  }
  return cases;
}

/** Loads a variant through an instrumented source; returns "ok" or "error", or throws on a bug. */
async function tryLoad(c: Case): Promise<"ok" | "error"> {
  let largestRead = 0;
  const inner = memorySource(c.bytes, c.what);
  const source: ByteSource = {
    ...inner,
    read(start, end) {
      assert(
        start >= 0 && end >= start && end <= c.bytes.length,
        `${c.what}: read [${start}, ${end}) of ${c.bytes.length}`,
      );
      largestRead = Math.max(largestRead, end - start);
      return inner.read(start, end);
    },
  };
  const started = performance.now();
  try {
    const file = await openSafetensorsSource(source);
    for (const [name, info] of file.tensors) {
      const values = await file.read(name);
      assert(
        values.length === info.numel,
        `${c.what}: ${name} has ${values.length} values, numel ${info.numel}`,
      );
      assert(
        info.numel * DTYPE_BYTES[info.dtype] <= c.bytes.length,
        `${c.what}: ${name} larger than the file`,
      );
    }
    file.close();
    return "ok";
  } catch (e) {
    if (!(e instanceof SafetensorsError)) {
      throw new Error(`${c.what}: threw ${(e as Error)?.name} instead of SafetensorsError: ${e}`);
    }
    assert(e.message.length < 2000, `${c.what}: message too long`);
    return "error";
  } finally {
    assert(
      largestRead <= c.bytes.length,
      `${c.what}: read ${largestRead} bytes of a ${c.bytes.length}-byte file`,
    );
    assert(performance.now() - started < 2000, `${c.what}: took too long`);
  }
}

Deno.test("fuzz: every mutated or truncated file loads or raises SafetensorsError, within its size", async () => {
  const cases = buildCases();
  assert(cases.length >= 200, `only ${cases.length} cases`);
  const tally = { ok: 0, error: 0 };
  for (const c of cases) {
    const outcome = await tryLoad(c);
    tally[outcome]++;
    if (c.expect) assert(outcome === c.expect, `${c.what}: expected ${c.expect}, got ${outcome}`);
  }
  assert(tally.ok > 20 && tally.error > 150, `suspicious tally ${JSON.stringify(tally)} of ${cases.length}`);
});

Deno.test("fuzz: the same variants through real files (a sample)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cases = buildCases().filter((_, i) => i % 10 === 0);
    for (const [i, c] of cases.entries()) {
      const path = join(dir, `case-${i}.safetensors`);
      await Deno.writeFile(path, c.bytes);
      const expected = await tryLoad(c);
      let outcome: "ok" | "error";
      try {
        const file = await openSafetensors(path);
        for (const name of file.tensors.keys()) await file.read(name);
        file.close();
        outcome = "ok";
      } catch (e) {
        assert(e instanceof SafetensorsError, `${c.what}: ${e}`);
        outcome = "error";
      }
      assert(outcome === expected, `${c.what}: file gave ${outcome}, memory gave ${expected}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
