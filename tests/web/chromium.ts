/**
 * Headless Chromium for the browser tests, driven through the DevTools protocol over a WebSocket.
 * WebGPU runs on the CPU through SwiftShader (`--use-webgpu-adapter=swiftshader`), so no GPU is
 * needed. The network-facing features are switched off: the test machines cannot reach Google.
 *
 * @module
 */

/** Where Chromium is looked for, first match wins (CHROMIUM overrides). */
const CANDIDATES = [
  "/usr/lib/chromium/chromium", // Debian's real binary; /usr/bin/chromium is a shell wrapper that does not exec
  "/usr/bin/chromium",
  "/usr/bin/chromium-browser",
  "/usr/bin/google-chrome",
];

/** The Chromium binary to run, or null when none is installed. */
export function findChromium(): string | null {
  const env = Deno.env.get("CHROMIUM");
  for (const p of env ? [env] : CANDIDATES) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch {
      // not here
    }
  }
  return null;
}

/** A console line or uncaught exception seen in the page. */
export interface PageLog {
  kind: "console" | "exception";
  text: string;
}

/** A DevTools-protocol session with one page. */
export class CdpPage {
  #ws: WebSocket;
  #next = 1;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /** Console output and uncaught exceptions of the page, in order (for failure messages). */
  readonly logs: PageLog[] = [];

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data as string);
      if (msg.id !== undefined) {
        const p = this.#pending.get(msg.id);
        this.#pending.delete(msg.id);
        if (msg.error) p?.reject(new Error(`CDP ${msg.error.message} (${msg.error.code})`));
        else p?.resolve(msg.result);
      } else if (msg.method === "Runtime.consoleAPICalled") {
        const args = (msg.params.args as { value?: unknown; description?: string }[])
          .map((a) => a.value ?? a.description ?? "").join(" ");
        this.logs.push({ kind: "console", text: `${msg.params.type}: ${args}` });
      } else if (msg.method === "Runtime.exceptionThrown") {
        const d = msg.params.exceptionDetails;
        this.logs.push({ kind: "exception", text: d.exception?.description ?? d.text });
      }
    };
    ws.onclose = () => {
      for (const p of this.#pending.values()) p.reject(new Error("DevTools connection closed"));
      this.#pending.clear();
    };
  }

  /** Opens a session on a page's `webSocketDebuggerUrl`. */
  static async connect(wsUrl: string): Promise<CdpPage> {
    const ws = new WebSocket(wsUrl);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`cannot open the DevTools WebSocket ${wsUrl}`));
    });
    const page = new CdpPage(ws);
    await page.send("Runtime.enable");
    await page.send("Page.enable");
    return page;
  }

  /** Sends one protocol command and waits for its answer. */
  send(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Evaluates an expression in the page (awaiting a promise) and returns its JSON value. */
  async evaluate<T>(expression: string): Promise<T> {
    const r = await this.send("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    }) as {
      result: { value?: unknown };
      exceptionDetails?: { text: string; exception?: { description?: string } };
    };
    if (r.exceptionDetails) {
      throw new Error(`in page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    }
    return r.result.value as T;
  }

  /** Navigates and waits for the load event. */
  async navigate(url: string): Promise<void> {
    await this.send("Page.navigate", { url });
    await this.waitFor<boolean>("document.readyState === 'complete' || null", 30_000);
  }

  /**
   * Polls `expression` every `everyMs` until it returns something other than null/undefined,
   * and returns that; throws after `timeoutMs` with the page's recent console lines.
   */
  async waitFor<T>(expression: string, timeoutMs: number, everyMs = 250): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const v = await this.evaluate<T | null | undefined>(expression);
      if (v !== null && v !== undefined) return v;
      await new Promise((r) => setTimeout(r, everyMs));
    }
    throw new Error(
      `timed out after ${timeoutMs / 1000} s waiting for \`${expression}\` in the page; its last output:\n` +
        this.logs.slice(-15).map((l) => `  ${l.kind}: ${l.text}`).join("\n"),
    );
  }

  /**
   * Puts files (paths on this machine) into the `<input type=file>` matching `selector` and fires
   * its change event. For a `webkitdirectory` input pass the folder: Chromium lists its files.
   */
  async setInputFiles(selector: string, files: string[]): Promise<void> {
    const doc = await this.send("DOM.getDocument", { depth: 0 }) as { root: { nodeId: number } };
    const found = await this.send("DOM.querySelector", { nodeId: doc.root.nodeId, selector }) as {
      nodeId: number;
    };
    if (!found.nodeId) throw new Error(`no element matches ${selector} in the page`);
    await this.send("DOM.setFileInputFiles", { nodeId: found.nodeId, files });
  }

  close(): void {
    this.#ws.close();
  }
}

/** A running headless Chromium with one page attached. */
export interface Browser {
  readonly page: CdpPage;
  /** Closes the page session, stops Chromium and removes its profile folder. */
  close(): Promise<void>;
}

/** Starts headless Chromium with WebGPU on SwiftShader and attaches to its first page. */
export async function launchChromium(binary: string): Promise<Browser> {
  const profile = await Deno.makeTempDir({ prefix: "gradmm-chromium-" });
  const child = new Deno.Command(binary, {
    args: [
      "--headless=new",
      "--no-sandbox",
      "--enable-unsafe-webgpu",
      "--use-webgpu-adapter=swiftshader",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-default-apps",
      "--no-first-run",
      "--no-default-browser-check",
      `--user-data-dir=${profile}`,
      "--remote-debugging-port=0",
      "about:blank",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // Keep the last of Chromium's stderr for error messages (and drain the pipe so it never blocks).
  let stderrTail = "";
  const drained = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stderr) stderrTail = (stderrTail + dec.decode(chunk)).slice(-4000);
  })();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });

  const stop = async () => {
    if (!exited) {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
      }, 5000);
      await status;
      clearTimeout(timer);
    }
    await drained.catch(() => {});
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  };

  try {
    // Chromium writes the port it chose into DevToolsActivePort in the profile folder.
    const deadline = Date.now() + 30_000;
    let port = 0;
    while (!port) {
      if (exited) throw new Error(`Chromium exited at start:\n${stderrTail}`);
      if (Date.now() > deadline) {
        throw new Error(`Chromium did not open its DevTools port in 30 s:\n${stderrTail}`);
      }
      try {
        port = Number((await Deno.readTextFile(`${profile}/DevToolsActivePort`)).split("\n")[0]) || 0;
      } catch { /* not yet */ }
      if (!port) await new Promise((r) => setTimeout(r, 100));
    }
    const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as {
      type: string;
      webSocketDebuggerUrl: string;
    }[];
    const target = targets.find((t) => t.type === "page");
    if (!target) throw new Error("Chromium has no page to attach to");
    const page = await CdpPage.connect(target.webSocketDebuggerUrl);
    return {
      page,
      close: async () => {
        page.close();
        await stop();
      },
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
