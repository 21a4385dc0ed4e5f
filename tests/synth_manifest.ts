/**
 * A synth manifest without what differs between equal runs (per-phase timings, wall time, the
 * invocations with their command lines and clock times), for comparing a merged sharded run with
 * a one-process run.
 */
export function manifestSansTime(path: string): string {
  const m = JSON.parse(Deno.readTextFileSync(path));
  delete m.timings;
  delete m.wallSeconds;
  delete m.invocations;
  return JSON.stringify(m, null, 2);
}
