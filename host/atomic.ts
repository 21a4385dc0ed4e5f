/**
 * The one atomic file write of the project: the content goes to a temporary file beside the
 * target and is renamed over it once complete, so a reader (or a crash) sees either the old file
 * or the whole new one, never a half-written one.
 *
 * @module
 */

/** What {@link writeFileAtomic} accepts: text, bytes, or bytes in parts (written in order). */
export type AtomicContent = string | Uint8Array | Iterable<Uint8Array>;

/**
 * Writes `content` to `path` through a temporary file in the same folder (so the rename stays on
 * one file system), flushed to disk before the rename. The temporary file is removed on failure.
 */
export async function writeFileAtomic(path: string, content: AtomicContent): Promise<void> {
  const parts: Iterable<Uint8Array> = typeof content === "string"
    ? [new TextEncoder().encode(content)]
    : content instanceof Uint8Array
    ? [content]
    : content;
  const temp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  let file: Deno.FsFile | undefined;
  try {
    file = await Deno.open(temp, { write: true, createNew: true });
    for (const part of parts) {
      let written = 0;
      while (written < part.length) written += await file.write(part.subarray(written));
    }
    await file.syncData();
    file.close();
    file = undefined;
    await Deno.rename(temp, path);
  } catch (e) {
    file?.close();
    await Deno.remove(temp).catch(() => {});
    throw e;
  }
}
