/**
 * The demo page: wires the forms of index.html to web/demo.ts. Bundled for the browser by
 * web/build.ts into web/dist/app.js. Every finished run writes a JSON summary into
 * `<pre id="result">` and `window.__result` (what the browser test reads); `?auto=generate` or
 * `?auto=synth` starts a run on load with the query string's settings (web/params.ts).
 *
 * @module
 */
/// <reference lib="dom" />
import { createContext, type GpuContext, type ModelSource } from "../mod.ts";
import {
  type DemoModel,
  demoSynth,
  greedyContinuation,
  openDemoModel,
  pickedFolder,
  servedFolder,
} from "./demo.ts";
import { type DemoParams, type DemoSynthSettings, isDemoMethod, parseDemoParams } from "./params.ts";
import { formatSeconds, SynthProgressTracker } from "./progress.ts";

const DATA_URL = "assets/sst2-validation.jsonl";

function el<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`index.html has no element #${id}`);
  return e as T;
}

function input(id: string): HTMLInputElement {
  return el<HTMLInputElement>(id);
}

/** Publishes a run's outcome for people (the status lines) and for the test (JSON). */
function publish(result: Record<string, unknown>): void {
  (globalThis as { __result?: unknown }).__result = result;
  el("result").textContent = JSON.stringify(result);
}

function showError(where: string, e: unknown): string {
  const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  el("error").textContent = `${where}: ${message}`;
  console.error(e);
  return message;
}

/** "google swiftshader", "llvmpipe (LLVM 15.0.6, 256 bits)": browsers often leave the description empty. */
function adapterLabel(ctx: GpuContext): string {
  const a = ctx.adapter;
  return [a.vendor, a.architecture, a.description].filter((x) => x).join(" ") || ctx.adapterName;
}

let context: Promise<GpuContext> | null = null;
function gpu(): Promise<GpuContext> {
  if (!context) {
    context = createContext().then((ctx) => {
      el("adapter").textContent = `${adapterLabel(ctx)}${ctx.isCpuAdapter ? " (a CPU implementation)" : ""}`;
      return ctx;
    });
    context.catch(() => (context = null));
  }
  return context;
}

/** Folders picked from disk, by the value of their entry in the model list. */
const picked = new Map<string, ModelSource>();

let loaded: { key: string; model: Promise<DemoModel> } | null = null;
/** The selected model, loaded once (switching the selection frees the previous one). */
function currentModel(): Promise<DemoModel> {
  const key = el<HTMLSelectElement>("model").value;
  if (loaded?.key === key) return loaded.model;
  loaded?.model.then((m) => m.model.dispose(), () => {});
  const status = el("model-status");
  status.textContent = "loading…";
  const source = picked.get(key) ?? servedFolder(key);
  const model = gpu().then((ctx) => openDemoModel(ctx, source));
  loaded = { key, model };
  model.then(
    (m) => {
      const c = m.model.config;
      status.textContent = `loaded in ${m.loadS.toFixed(1)} s: ${c.family}, ${c.numLayers} layers, ` +
        `d=${c.hiddenSize}, vocabulary ${c.vocabSize}`;
    },
    () => {
      status.textContent = "failed to load";
      loaded = null;
    },
  );
  return model;
}

/** One run at a time: generation and synth share the model and the GPU queue. */
function setBusy(busy: boolean): void {
  for (const id of ["generate", "synth", "model", "folder"]) {
    (el(id) as HTMLButtonElement | HTMLSelectElement | HTMLInputElement).disabled = busy;
  }
}

async function runGenerate(): Promise<void> {
  const status = el("generate-status");
  setBusy(true);
  el("error").textContent = "";
  try {
    const tokens = Number(input("tokens").value);
    if (!Number.isInteger(tokens) || tokens < 1) throw new Error("new tokens must be a whole number ≥ 1");
    const prompt = el<HTMLTextAreaElement>("prompt").value;
    status.textContent = "running…";
    const m = await currentModel();
    const g = await greedyContinuation(m, prompt, tokens);
    el("generation").textContent = `${g.prompt}⟨${g.text}⟩`;
    status.textContent = `${g.ids.length} tokens in ${g.seconds.toFixed(2)} s (${g.finishReason}); ids ${
      JSON.stringify(g.ids)
    }`;
    publish({
      kind: "generate",
      ok: true,
      adapter: adapterLabel(await gpu()),
      model: m.name,
      loadS: m.loadS,
      ...g,
    });
  } catch (e) {
    status.textContent = "";
    publish({ kind: "generate", ok: false, error: showError("generate", e) });
  } finally {
    setBusy(false);
  }
}

function synthSettingsFromForm(): DemoSynthSettings {
  const n = (id: string) => {
    const v = Number(input(id).value);
    if (!Number.isInteger(v) || v < Number(input(id).min || 0)) {
      throw new Error(`${id} must be a whole number ≥ ${input(id).min || 0}`);
    }
    return v;
  };
  const method = el<HTMLSelectElement>("method").value;
  if (!isDemoMethod(method)) throw new Error(`unknown method '${method}'`);
  const s = {
    method,
    refineIterations: n("refine"),
    perClass: n("perClass"),
    batch: n("batch"),
    outerSteps: n("outer"),
    innerSteps: n("inner"),
    length: n("length"),
    initCandidates: n("init"),
    topk: n("topk"),
    real: n("real"),
    seed: n("seed"),
  };
  if (s.perClass % s.batch !== 0) {
    throw new Error(`per class (${s.perClass}) must be a multiple of batch (${s.batch})`);
  }
  return s;
}

function addRow(cells: (string | number)[]): void {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = typeof c === "number" ? c.toFixed(4) : c;
    if (typeof c === "number") td.className = "num";
    tr.append(td);
  }
  el("synth-rows").append(tr);
}

async function runSynthPanel(): Promise<void> {
  const status = el("synth-status");
  const bar = el<HTMLProgressElement>("synth-bar");
  setBusy(true);
  el("error").textContent = "";
  el("synth-rows").replaceChildren();
  bar.value = 0;
  const t0 = performance.now();
  let steps = 0;
  // Every progress line shown, kept for the result (the test checks the progress was live).
  // Seconds per phase of the rounds (init, z-step, x-step, final), summed: where the time goes.
  const phaseS: Record<string, number> = {};
  const progress: { step: number; steps: number; matchLoss: number; etaS: number; fraction: number }[] = [];
  try {
    const settings = synthSettingsFromForm();
    status.textContent = "loading the model and the data…";
    const [m, data] = await Promise.all([currentModel(), fetchText(DATA_URL)]);
    const tracker = new SynthProgressTracker();
    const labels = ["bad", "great"];
    const records = await demoSynth(m, data, DATA_URL, settings, (e) => {
      const p = tracker.update(e);
      if (e.kind === "step") {
        steps++;
        progress.push({
          step: p.step,
          steps: p.steps,
          matchLoss: p.matchLoss,
          etaS: p.etaS,
          fraction: p.fraction,
        });
      }
      if (e.kind === "target") {
        status.textContent = `class '${
          labels[e.classIndex]
        }': target gradient from ${e.report.examples} real examples`;
      } else if (e.kind === "step" || e.kind === "round") {
        bar.value = p.fraction;
        status.textContent =
          `class '${labels[p.classIndex]}' round ${p.round + 1}: step ${p.step}/${p.steps}, ` +
          `match loss ${Number.isFinite(p.matchLoss) ? p.matchLoss.toFixed(4) : "–"}, ` +
          `${p.roundsDone}/${p.roundsTotal} rounds done, elapsed ${formatSeconds(p.elapsedS)}, ETA ${
            formatSeconds(p.etaS)
          }`;
      }
      if (e.kind === "round") {
        for (const r of e.records) addRow([r.text, r.label_word, r.match_loss, r.nll]);
        for (const [phase, ms] of Object.entries(e.timings)) phaseS[phase] = (phaseS[phase] ?? 0) + ms / 1000;
      }
    });
    const seconds = (performance.now() - t0) / 1000;
    status.textContent += ` — finished in ${formatSeconds(seconds)}`;
    publish({
      kind: "synth",
      ok: true,
      adapter: adapterLabel(await gpu()),
      settings,
      steps,
      progress,
      phaseS,
      statusLine: status.textContent,
      seconds,
      records,
    });
  } catch (e) {
    publish({ kind: "synth", ok: false, error: showError("synth", e) });
  } finally {
    setBusy(false);
  }
}

async function fetchText(url: string): Promise<string> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`cannot fetch ${url}: HTTP ${r.status}`);
  return r.text();
}

function fillForms(p: DemoParams): void {
  el<HTMLSelectElement>("model").value = p.model;
  if (el<HTMLSelectElement>("model").value !== p.model) {
    // A model given in the query string but not in the list: add it.
    const option = new Option(p.model, p.model, true, true);
    el<HTMLSelectElement>("model").append(option);
  }
  el<HTMLTextAreaElement>("prompt").value = p.prompt;
  input("tokens").value = String(p.tokens);
  const s = p.synth;
  el<HTMLSelectElement>("method").value = s.method;
  const fields: [string, number][] = [
    ["refine", s.refineIterations],
    ["perClass", s.perClass],
    ["batch", s.batch],
    ["outer", s.outerSteps],
    ["inner", s.innerSteps],
    ["length", s.length],
    ["init", s.initCandidates],
    ["topk", s.topk],
    ["real", s.real],
    ["seed", s.seed],
  ];
  for (const [id, v] of fields) input(id).value = String(v);
}

/** A folder picked from disk becomes an entry of the model list (loaded on first use). */
function onFolderPicked(): void {
  const files = input("folder").files;
  if (!files || files.length === 0) return;
  try {
    const source = pickedFolder(files);
    const key = `picked:${picked.size}:${source.name}`;
    picked.set(key, source);
    el<HTMLSelectElement>("model").append(new Option(`${source.name} (from this computer)`, key, true, true));
    el("model-status").textContent = `${source.name} picked; it loads on the next run`;
  } catch (e) {
    showError("model folder", e);
  }
}

function start(): void {
  input("folder").addEventListener("change", onFolderPicked);
  el("generate").addEventListener("click", () => void runGenerate());
  el("synth").addEventListener("click", () => void runSynthPanel());
  let params: DemoParams;
  try {
    params = parseDemoParams(location.search);
  } catch (e) {
    publish({ kind: "params", ok: false, error: showError("query string", e) });
    params = parseDemoParams("");
  }
  fillForms(params);
  if (!("gpu" in navigator)) {
    showError(
      "WebGPU",
      new Error("this browser has no WebGPU (navigator.gpu); use a recent Chrome/Chromium, Edge or Firefox"),
    );
    return;
  }
  if (params.auto === "generate") void runGenerate();
  else if (params.auto === "synth") void runSynthPanel();
  else void gpu().catch((e) => showError("WebGPU", e));
}

start();
