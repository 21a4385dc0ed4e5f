/**
 * A small static file server for the demo page: each URL prefix maps to a folder, only GET and
 * HEAD, single byte ranges (a model loader may read a safetensors header before the tensors),
 * and nothing outside the mapped folders. Used by `deno task web` and by the browser test.
 *
 * @module
 */
import { extname, join, normalize, resolve, sep } from "node:path";

/** One URL prefix served from one folder, e.g. `{ prefix: "/assets/", dir: "assets" }`. */
export interface Mount {
  readonly prefix: string;
  readonly dir: string;
}

/** A running server; `close()` stops it and waits for open connections to finish. */
export interface StaticServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

const MIME: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".map": "application/json",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".jsonl": "text/plain; charset=utf-8",
  ".md": "text/plain; charset=utf-8",
  ".safetensors": "application/octet-stream",
};

/** The file a URL path names under one of the mounts, or null (never a path outside them). */
export function resolveMounted(mounts: readonly Mount[], urlPath: string): string | null {
  let path: string;
  try {
    path = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (path.includes("\0")) return null;
  // Longest prefix first, so "/assets/" wins over "/".
  const sorted = [...mounts].sort((a, b) => b.prefix.length - a.prefix.length);
  for (const m of sorted) {
    if (!path.startsWith(m.prefix)) continue;
    const root = resolve(m.dir);
    let rest = path.slice(m.prefix.length);
    if (rest === "" || rest.endsWith("/")) rest += "index.html";
    const file = resolve(root, normalize(rest).replace(/^([/\\])+/, ""));
    return file === root || file.startsWith(root + sep) ? file : null;
  }
  return null;
}

/** Parses a single `bytes=a-b` range against a file size; null when absent or unsatisfiable. */
function parseRange(header: string | null, size: number): { start: number; end: number } | null | "bad" {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return "bad";
  let start: number, end: number;
  if (m[1] === "") {
    start = Math.max(0, size - Number(m[2]));
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  return start > end || start >= size ? "bad" : { start, end };
}

async function respond(file: string, req: Request): Promise<Response> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(file);
  } catch {
    return new Response("not found\n", { status: 404 });
  }
  if (!info.isFile) return new Response("not found\n", { status: 404 });
  const headers = new Headers({
    "content-type": MIME[extname(file)] ?? "application/octet-stream",
    "accept-ranges": "bytes",
    "cache-control": "no-store",
  });
  const range = parseRange(req.headers.get("range"), info.size);
  if (range === "bad") {
    headers.set("content-range", `bytes */${info.size}`);
    return new Response(null, { status: 416, headers });
  }
  const start = range?.start ?? 0;
  const end = range?.end ?? info.size - 1;
  headers.set("content-length", String(Math.max(0, end - start + 1)));
  if (range) headers.set("content-range", `bytes ${start}-${end}/${info.size}`);
  const status = range ? 206 : 200;
  if (req.method === "HEAD" || info.size === 0) return new Response(null, { status, headers });
  const handle = await Deno.open(file, { read: true });
  await handle.seek(start, Deno.SeekMode.Start);
  let left = end - start + 1;
  const body = new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      const buf = new Uint8Array(Math.min(left, 1 << 20));
      const n = await handle.read(buf);
      if (n === null || n === 0) {
        handle.close();
        ctrl.close();
        return;
      }
      left -= n;
      ctrl.enqueue(buf.subarray(0, n));
      if (left <= 0) {
        handle.close();
        ctrl.close();
      }
    },
    cancel() {
      handle.close();
    },
  });
  return new Response(body, { status, headers });
}

/** Serves `mounts` on 127.0.0.1 (port 0 = any free port). */
export function serveStatic(mounts: readonly Mount[], port = 0): StaticServer {
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, (req) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405 });
    }
    const file = resolveMounted(mounts, new URL(req.url).pathname);
    return file ? respond(file, req) : new Response("not found\n", { status: 404 });
  });
  const addr = server.addr as Deno.NetAddr;
  return {
    url: `http://127.0.0.1:${addr.port}/`,
    port: addr.port,
    close: () => server.shutdown(),
  };
}

/** The demo's mounts: the page folder at `/`, the repository's `assets/` at `/assets/`. */
export function demoMounts(root: string): Mount[] {
  return [{ prefix: "/", dir: join(root, "web") }, { prefix: "/assets/", dir: join(root, "assets") }];
}
