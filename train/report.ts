/**
 * Experiment reports: summary statistics, a markdown report and a small SVG line chart (learning
 * curves with ±1 std error bars), written by hand so the report needs no plotting library.
 * Pure functions of numbers and strings; cli/experiment.ts writes the files.
 */

/** Mean, sample standard deviation (n − 1; 0 for one value) and count of the finite values. */
export function meanStd(xs: readonly number[]): { mean: number; std: number; n: number } {
  const v = xs.filter(Number.isFinite);
  const n = v.length;
  if (n === 0) return { mean: NaN, std: NaN, n: 0 };
  const mean = v.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, std, n };
}

/** One point of a curve: x and the summary over seeds. */
export interface CurvePoint {
  x: number;
  mean: number;
  std: number;
  n: number;
}

/** A named line of the chart. */
export interface Curve {
  name: string;
  points: CurvePoint[];
}

/** A horizontal reference line (zero-shot accuracy, chance). */
export interface ReferenceLine {
  y: number;
  label: string;
}

/** What {@link renderChart} draws. */
export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  curves: Curve[];
  lines?: ReferenceLine[];
  /** Logarithmic x axis (default true: sizes span decades). */
  logX?: boolean;
  width?: number;
  height?: number;
}

/** Escapes text for SVG/XML. */
export function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];

/** "Nice" tick values covering [lo, hi] (about `count` of them). */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    out.push(Number(t.toPrecision(12)));
  }
  return out;
}

/**
 * An SVG line chart: one polyline with markers and ±std error bars per curve, dashed reference
 * lines, axes with ticks, a legend. Values are plotted as given (e.g. accuracy in %).
 */
export function renderChart(spec: ChartSpec): string {
  // The legend's column is as wide as its longest name (about 7 px a character at 12 px).
  const longest = Math.max(0, ...spec.curves.map((c) => c.name.length));
  const right = Math.max(230, 54 + 7 * longest);
  const W = spec.width ?? 530 + right, H = spec.height ?? 440;
  const m = { left: 64, right, top: 40, bottom: 56 };
  const pw = W - m.left - m.right, ph = H - m.top - m.bottom;
  const logX = spec.logX ?? true;
  const pts = spec.curves.flatMap((c) => c.points.filter((p) => Number.isFinite(p.mean)));
  const xs = pts.map((p) => p.x);
  const ysLo = pts.map((p) => p.mean - (p.std || 0)).concat((spec.lines ?? []).map((l) => l.y));
  const ysHi = pts.map((p) => p.mean + (p.std || 0)).concat((spec.lines ?? []).map((l) => l.y));
  let x0 = xs.length ? Math.min(...xs) : 1, x1 = xs.length ? Math.max(...xs) : 10;
  if (x0 === x1) [x0, x1] = logX ? [x0 / 2, x1 * 2] : [x0 - 1, x1 + 1];
  let y0 = ysLo.length ? Math.min(...ysLo) : 0, y1 = ysHi.length ? Math.max(...ysHi) : 1;
  const pad = Math.max((y1 - y0) * 0.08, 1e-9);
  y0 -= pad;
  y1 += pad;
  if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
  const tx = (x: number) => logX ? Math.log(x / x0) / Math.log(x1 / x0) : (x - x0) / (x1 - x0);
  const sx = (x: number) => m.left + (xs.length ? 0.04 + 0.92 * tx(x) : 0.5) * pw;
  const sy = (y: number) => m.top + (1 - (y - y0) / (y1 - y0)) * ph;
  const f = (v: number) => v.toFixed(1);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${f(m.left + pw / 2)}" y="22" text-anchor="middle" font-size="15">${
      escapeXml(spec.title)
    }</text>`,
  );
  // Axes and ticks.
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  for (const t of niceTicks(y0, y1)) {
    if (t < y0 || t > y1) continue;
    out.push(
      `<line x1="${m.left}" y1="${f(sy(t))}" x2="${m.left + pw}" y2="${f(sy(t))}" stroke="#eee"/>`,
      `<text x="${m.left - 6}" y="${f(sy(t) + 4)}" text-anchor="end">${escapeXml(String(t))}</text>`,
    );
  }
  const xTicks = [...new Set(xs)].sort((a, b) => a - b);
  for (const t of xTicks) {
    out.push(
      `<line x1="${f(sx(t))}" y1="${m.top + ph}" x2="${f(sx(t))}" y2="${m.top + ph + 5}" stroke="#444"/>`,
      `<text x="${f(sx(t))}" y="${m.top + ph + 18}" text-anchor="middle">${escapeXml(String(t))}</text>`,
    );
  }
  out.push(
    `<text x="${f(m.left + pw / 2)}" y="${H - 14}" text-anchor="middle">${escapeXml(spec.xLabel)}${
      logX ? " (log scale)" : ""
    }</text>`,
    `<text transform="translate(16 ${f(m.top + ph / 2)}) rotate(-90)" text-anchor="middle">${
      escapeXml(spec.yLabel)
    }</text>`,
  );
  // Reference lines.
  for (const l of spec.lines ?? []) {
    out.push(
      `<line x1="${m.left}" y1="${f(sy(l.y))}" x2="${m.left + pw}" y2="${
        f(sy(l.y))
      }" stroke="#888" stroke-dasharray="6 4"/>`,
      `<text x="${m.left + pw - 4}" y="${f(sy(l.y) - 4)}" text-anchor="end" fill="#666">${
        escapeXml(l.label)
      }</text>`,
    );
  }
  // Curves.
  spec.curves.forEach((c, i) => {
    const color = PALETTE[i % PALETTE.length];
    // Curves are dodged sideways by a few pixels so overlapping error bars stay readable.
    const dodge = (i - (spec.curves.length - 1) / 2) * 5;
    const px = (x: number) => sx(x) + dodge;
    const p = c.points.filter((q) => Number.isFinite(q.mean)).sort((a, b) => a.x - b.x);
    if (p.length > 1) {
      out.push(
        `<polyline fill="none" stroke="${color}" stroke-width="2" points="${
          p.map((q) => `${f(px(q.x))},${f(sy(q.mean))}`).join(" ")
        }"/>`,
      );
    }
    for (const q of p) {
      if (q.std > 0) {
        const xa = f(px(q.x)), ya = f(sy(q.mean - q.std)), yb = f(sy(q.mean + q.std));
        out.push(
          `<line x1="${xa}" y1="${ya}" x2="${xa}" y2="${yb}" stroke="${color}"/>`,
          `<line x1="${f(px(q.x) - 4)}" y1="${ya}" x2="${f(px(q.x) + 4)}" y2="${ya}" stroke="${color}"/>`,
          `<line x1="${f(px(q.x) - 4)}" y1="${yb}" x2="${f(px(q.x) + 4)}" y2="${yb}" stroke="${color}"/>`,
        );
      }
      out.push(`<circle cx="${f(px(q.x))}" cy="${f(sy(q.mean))}" r="3.5" fill="${color}"/>`);
    }
    const ly = m.top + 14 + i * 20;
    // A curve of one point (a fixed-size set) is a marker in the legend too, not a line.
    out.push(
      ...(p.length === 1 ? [] : [
        `<line x1="${m.left + pw + 14}" y1="${ly}" x2="${
          m.left + pw + 38
        }" y2="${ly}" stroke="${color}" stroke-width="2"/>`,
      ]),
      `<circle cx="${m.left + pw + 26}" cy="${ly}" r="3.5" fill="${color}"/>`,
      `<text x="${m.left + pw + 44}" y="${ly + 4}">${escapeXml(c.name)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/** A markdown table (cells are escaped for pipes). */
export function markdownTable(header: string[], rows: string[][]): string {
  const esc = (s: string) => s.replace(/\|/g, "\\|");
  return [
    `| ${header.map(esc).join(" | ")} |`,
    `|${header.map(() => "---").join("|")}|`,
    ...rows.map((r) => `| ${r.map(esc).join(" | ")} |`),
  ].join("\n");
}

/** "54.3 ± 1.2" (values in [0, 1] shown as %), "—" when missing. */
export function formatPercent(s: { mean: number; std: number; n: number }): string {
  if (!Number.isFinite(s.mean)) return "—";
  return s.n > 1
    ? `${(s.mean * 100).toFixed(1)} ± ${(s.std * 100).toFixed(1)}`
    : `${(s.mean * 100).toFixed(1)}`;
}
