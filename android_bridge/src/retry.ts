/**
 * Back-off for what the phone retries on its own (a camera that stopped, a hot swap that failed): soon at first,
 * then less and less often, so a phone left alone for hours neither gives up nor hammers the hub or the camera.
 */

export const BACKOFF_MS = [1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000];

/** The wait before retry number `attempt` (0 = the first retry); the last step repeats. */
export function backoff(attempt: number, steps: readonly number[] = BACKOFF_MS): number {
  return steps[Math.min(Math.max(0, attempt), steps.length - 1)];
}

/** Runs `fn` after `ms`; returns what cancels it. The page's timers; tests pass their own. */
export type Schedule = (fn: () => void, ms: number) => () => void;

export const timers: Schedule = (fn, ms) => {
  const id = setTimeout(fn, ms);
  return () => clearTimeout(id);
};

/** Marks `error` as one that trying again cannot mend (a bundle refused, missing, or that cannot run here: its
 * signature, its version, an operator the engine lacks, a failed health check): a hot swap is not retried. */
export function final<T>(error: T): T {
  if (error !== null && typeof error === "object") (error as { final?: boolean }).final = true;
  return error;
}

/** Whether trying again cannot mend `error` (`final`, or a BundleRefusedError). */
export function isFinal(error: unknown): boolean {
  return error instanceof Error && (error.name === "BundleRefusedError" || (error as { final?: boolean }).final === true);
}
