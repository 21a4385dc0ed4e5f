/**
 * Float64 CPU tensors used as the reference that every GPU op is checked against. Kept tiny on
 * purpose: a flat Float64Array and a shape, plus the indexing helpers the references need.
 */

/** A float64 array with a shape, on the CPU. */
export interface HostTensor {
  /** The elements, row-major. */
  data: Float64Array;
  /** Dimensions, outermost first. */
  shape: number[];
}

/** Makes a host tensor (copies `data`). */
export function host(data: ArrayLike<number>, shape: readonly number[]): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new Error(`host(): ${data.length} values for shape [${shape}]`);
  return { data: Float64Array.from(data), shape: [...shape] };
}

/** Row-major strides. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array(shape.length).fill(1);
  for (let d = shape.length - 2; d >= 0; d--) s[d] = s[d + 1] * shape[d + 1];
  return s;
}

/** Broadcast shape of two shapes (NumPy rules) or null when they do not broadcast. */
export function broadcastShapes(a: readonly number[], b: readonly number[]): number[] | null {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) return null;
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** Index into `shape` (broadcast to `out`) of the element at linear position `i` of `out`. */
export function broadcastIndex(i: number, out: readonly number[], shape: readonly number[]): number {
  const off = out.length - shape.length;
  let idx = 0;
  let stride = 1;
  let rem = i;
  const coords = new Array(out.length);
  for (let d = out.length - 1; d >= 0; d--) {
    coords[d] = rem % out[d];
    rem = Math.floor(rem / out[d]);
  }
  for (let d = shape.length - 1; d >= 0; d--) {
    const c = shape[d] === 1 ? 0 : coords[d + off];
    idx += c * stride;
    stride *= shape[d];
  }
  return idx;
}

/** Applies `f` elementwise with broadcasting. */
export function mapBroadcast(a: HostTensor, b: HostTensor, f: (x: number, y: number) => number): HostTensor {
  const shape = broadcastShapes(a.shape, b.shape);
  if (!shape) throw new Error(`shapes [${a.shape}] and [${b.shape}] do not broadcast`);
  const n = shape.reduce((x, y) => x * y, 1);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    data[i] = f(a.data[broadcastIndex(i, shape, a.shape)], b.data[broadcastIndex(i, shape, b.shape)]);
  }
  return { data, shape };
}

/** Applies `f` to every element. */
export function map(a: HostTensor, f: (x: number) => number): HostTensor {
  return { data: a.data.map(f), shape: [...a.shape] };
}
