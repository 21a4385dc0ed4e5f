/** Report helpers: statistics, ticks, the SVG chart and markdown tables. */
import {
  escapeXml,
  formatPercent,
  markdownTable,
  meanStd,
  niceTicks,
  renderChart,
} from "../../train/report.ts";

Deno.test("meanStd: sample std, NaN skipped, one value has std 0", () => {
  const s = meanStd([0.5, 0.6, 0.7, NaN]);
  if (Math.abs(s.mean - 0.6) > 1e-12 || Math.abs(s.std - 0.1) > 1e-12 || s.n !== 3) {
    throw new Error(JSON.stringify(s));
  }
  const one = meanStd([0.4]);
  if (one.std !== 0 || one.n !== 1) throw new Error(JSON.stringify(one));
  if (meanStd([]).n !== 0 || !Number.isNaN(meanStd([]).mean)) throw new Error("empty input");
  if (formatPercent({ mean: 0.5432, std: 0.0123, n: 3 }) !== "54.3 ± 1.2") {
    throw new Error(formatPercent({ mean: 0.5432, std: 0.0123, n: 3 }));
  }
  if (formatPercent({ mean: NaN, std: NaN, n: 0 }) !== "—") throw new Error("missing value");
});

Deno.test("niceTicks covers the range with round steps", () => {
  const t = niceTicks(43.2, 61.7);
  if (t.join() !== "45,50,55,60") throw new Error(t.join());
  if (niceTicks(0, 1).join() !== "0,0.2,0.4,0.6,0.8,1") throw new Error(niceTicks(0, 1).join());
});

Deno.test("renderChart: one polyline per curve, error bars, escaped labels, reference lines", () => {
  const svg = renderChart({
    title: "a <b> & c",
    xLabel: "N",
    yLabel: "acc",
    curves: [
      {
        name: "real",
        points: [{ x: 60, mean: 50, std: 2, n: 3 }, { x: 200, mean: 55, std: 1, n: 3 }, {
          x: 1000,
          mean: 63,
          std: 0,
          n: 1,
        }],
      },
      {
        name: "synthetic <x>",
        points: [{ x: 60, mean: 49, std: 0, n: 1 }, { x: 200, mean: NaN, std: NaN, n: 0 }],
      },
    ],
    lines: [{ y: 54, label: "zero-shot" }],
  });
  if (!svg.startsWith("<svg") || !svg.trim().endsWith("</svg>")) throw new Error("not an svg document");
  if ((svg.match(/<polyline/g) ?? []).length !== 1) {
    throw new Error("one curve has a single finite point: one polyline expected");
  }
  if (!svg.includes("a &lt;b&gt; &amp; c") || !svg.includes("synthetic &lt;x&gt;")) {
    throw new Error("labels not escaped");
  }
  if (svg.includes("NaN")) throw new Error("NaN leaked into coordinates");
  if (!svg.includes("zero-shot") || !svg.includes("stroke-dasharray")) {
    throw new Error("reference line missing");
  }
  // Two points with std > 0: three lines each for the error bars.
  if ((svg.match(/<line /g) ?? []).length < 6) throw new Error("error bars missing");
  if (escapeXml('"&') !== "&quot;&amp;") throw new Error("escapeXml");
});

Deno.test("markdownTable escapes pipes", () => {
  const t = markdownTable(["a", "b"], [["x|y", "2"]]);
  if (t !== "| a | b |\n|---|---|\n| x\\|y | 2 |") throw new Error(t);
});

Deno.test("renderChart: a one-point curve is a marker in the legend, a many-point one a line", () => {
  const legendLines = (
    curves: { name: string; points: { x: number; mean: number; std: number; n: number }[] }[],
  ) => {
    const svg = renderChart({ title: "t", xLabel: "N", yLabel: "acc", curves });
    // Legend lines are the only stroke-width="2" <line>s (curves are polylines).
    return (svg.match(/<line [^>]*stroke-width="2"/g) ?? []).length;
  };
  const many = {
    name: "curve",
    points: [{ x: 8, mean: 50, std: 0, n: 1 }, { x: 80, mean: 60, std: 0, n: 1 }],
  };
  const point = { name: "fixed set", points: [{ x: 5, mean: 55, std: 1, n: 3 }] };
  if (legendLines([many]) !== 1) throw new Error("a curve needs its legend line");
  if (legendLines([many, point]) !== 1) throw new Error("a single point must not get a legend line");
});

Deno.test("renderChart: the legend column widens for long names", () => {
  const widthOf = (name: string) => {
    const svg = renderChart({ title: "t", xLabel: "N", yLabel: "acc", curves: [{ name, points: [] }] });
    return Number(svg.match(/width="(\d+)"/)![1]);
  };
  const long = "a condition name much longer than the legend's usual column";
  if (widthOf("real") !== 760) throw new Error(`short names keep the usual width, got ${widthOf("real")}`);
  if (!(widthOf(long) >= 530 + 7 * long.length)) throw new Error(`width ${widthOf(long)} for a long name`);
});
