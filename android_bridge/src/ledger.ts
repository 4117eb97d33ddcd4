/**
 * What the outbox holds, kept in memory: each stored sample's place in line, bytes and deadline. The caps, the
 * byte total, the resend's pages and the deadlines are decided from it without reading a stored image (the
 * agent's outbox counts its bytes in memory the same way). Loaded at open from the outbox's index keys
 * (outbox.ts `listing`), then kept with every put and take.
 */

/** A stored sample as the outbox's `listing` index names it (no image). */
export interface Listed {
  sampleId: string;
  seq: number; // its place in line: oldest first
  size: number; // its bytes (sizeOf)
  storedAt: number; // wall clock, ms
  deadlineS: number; // the hub deadline it was escalated with
}

export interface Limits {
  maxSamples: number;
  maxBytes: number;
}

/** Phone-sized caps (the agent's are 100,000 samples and 1 GiB, on an SD card it owns). A browser grants an
 * origin a share of the phone's free storage and may clear it under pressure (unless persisted): 200 MB stays well
 * inside what a phone with a few GB free grants, so the cap, not the browser's QuotaExceededError, normally bounds
 * the outbox. 2,000 samples is about what 200 MB holds of 640x480 frames as PNG (~100 KB of a plain scene, up to
 * 1 MB of a noisy one); samples leave anyway at their hub deadline (600 s), so only a burst while the hub is away
 * meets either cap. */
export const PHONE_LIMITS: Limits = { maxSamples: 2_000, maxBytes: 200 * 1024 * 1024 };

/** A sample's bytes as the outbox counts them: its request (the PNG frame) and its logits; the rest is small. */
export function sizeOf(entry: { payload: Uint8Array; logits: number[] }): number {
  return entry.payload.byteLength + 8 * entry.logits.length;
}

/** Seconds left of a `deadlineS` begun at wall time `storedAt` (ms), at wall time `now` (ms), held to
 * [0, deadlineS]: a clock set back or forward since cannot stretch it, nor make it negative (the agent's `left_of`). */
export function leftOf(deadlineS: number, storedAt: number, now: number): number {
  return Math.min(deadlineS, Math.max(0, deadlineS - (now - storedAt) / 1000));
}

interface Held {
  size: number;
  dueAt: number; // monotonic ms (performance.now()) when its hub deadline passes
  deadlineS: number;
}

export class Ledger {
  /** In line: a Map keeps insertion order, and samples are added in seq order (loaded sorted, then appended). */
  private readonly held = new Map<string, Held>();
  private lastSeq = 0;
  bytes = 0;

  constructor(readonly limits: Limits = PHONE_LIMITS) {}

  /** What the outbox holds at open. A deadline is then followed on the monotonic clock (`mono`, ms): from here on
   * the wall clock may jump (NTP, the user) without stretching or cutting it; what was left at open is read
   * from the wall clock (`wall`, ms), held by `leftOf`. */
  load(listed: Listed[], mono: number, wall: number): void {
    for (const item of [...listed].sort((a, b) => a.seq - b.seq)) {
      const deadlineS = Number.isFinite(item.deadlineS) && item.deadlineS > 0 ? item.deadlineS : 0;
      this.put(item.sampleId, item.size, deadlineS, mono + 1000 * leftOf(deadlineS, item.storedAt, wall));
      this.lastSeq = Math.max(this.lastSeq, item.seq);
    }
  }

  get count(): number {
    return this.held.size;
  }

  has(sampleId: string): boolean {
    return this.held.has(sampleId);
  }

  /** The place in line of the next sample stored. */
  nextSeq(): number {
    this.lastSeq += 1;
    return this.lastSeq;
  }

  /** To store a sample of `size` bytes: the oldest samples to drop first (oldest first; none while it fits), or
   * null when it could not fit even in an empty outbox. */
  makeRoom(size: number): string[] | null {
    if (size > this.limits.maxBytes) return null;
    const drop: string[] = [];
    let count = this.held.size;
    let bytes = this.bytes;
    for (const [sampleId, held] of this.held) {
      if (count < this.limits.maxSamples && bytes + size <= this.limits.maxBytes) break;
      drop.push(sampleId);
      count -= 1;
      bytes -= held.size;
    }
    return drop;
  }

  /** A sample just stored, made at monotonic time `mono` with a deadline of `deadlineS`. */
  add(sampleId: string, size: number, deadlineS: number, mono: number): void {
    this.put(sampleId, size, deadlineS, mono + 1000 * deadlineS);
  }

  remove(sampleId: string): void {
    const held = this.held.get(sampleId);
    if (held === undefined) return;
    this.bytes -= held.size;
    this.held.delete(sampleId);
  }

  /** The samples whose hub deadline has passed at monotonic time `mono`, oldest first. */
  due(mono: number): string[] {
    return [...this.held].filter(([, held]) => held.dueAt <= mono).map(([sampleId]) => sampleId);
  }

  /** Seconds left of the sample's hub deadline at monotonic time `mono` (0 when it is not held). */
  leftS(sampleId: string, mono: number): number {
    const held = this.held.get(sampleId);
    return held === undefined ? 0 : Math.min(held.deadlineS, Math.max(0, (held.dueAt - mono) / 1000));
  }

  /** Every sample held, oldest first (a snapshot). */
  ids(): string[] {
    return [...this.held.keys()];
  }

  private put(sampleId: string, size: number, deadlineS: number, dueAt: number): void {
    this.remove(sampleId); // a sample stored again (the same id) is counted once
    this.held.set(sampleId, { size, dueAt, deadlineS });
    this.bytes += size;
  }
}
