/**
 * A bounded window of recent records. A phone runs for weeks: the page once kept every frame's record (and every
 * stored and fused sample's) for the whole session, ~320 MB a day at 10 fps. The page keeps the last
 * RECENT_RECORDS of each and counts the whole session in totals; `?keep=all` (tests, benchmarks that read every
 * frame) or `?keep=<n>` chooses otherwise.
 */

export const RECENT_RECORDS = 1000;

/** The window asked for by `?keep=`: "all" keeps everything, a positive integer that many, else RECENT_RECORDS. */
export function windowSize(asked: string | null): number {
  if (asked === "all") return Infinity;
  const n = Math.floor(Number(asked));
  return asked !== null && Number.isFinite(n) && n > 0 ? n : RECENT_RECORDS;
}

/** Appends `item`, dropping the oldest records past `keep`. */
export function keepRecent<T>(list: T[], item: T, keep: number): void {
  list.push(item);
  if (list.length > keep) list.splice(0, list.length - keep);
}
