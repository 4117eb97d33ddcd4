/**
 * What keeps a phone left alone streaming for weeks: the camera started again after it stopped (the stream ended
 * once without a word, the page still saying "streaming"), the screen wake lock asked for again whenever the page
 * is visible (the browser releases it when the page is hidden, and it was asked for once only), and the outbox's
 * storage asked to be persistent (else the browser may clear it under storage pressure).
 */

import type { CameraEvents } from "./camera.js";
import type { Raster } from "./preprocess.js";
import { backoff, type Schedule, timers } from "./retry.js";

/** The camera as the keeper drives it (camera.ts). */
export interface CameraLike {
  start(): Promise<void>;
  each(events: CameraEvents): void;
  stop(): void;
}

export interface KeeperEvents {
  frame(frame: Raster, presented: number): void;
  /** Why frames stopped (shown as "camera stopped: ..."), or null once they come again. */
  state(stopped: string | null): void;
}

/** How long a stream must deliver frames before the back-off starts afresh: a stream that dies just after each
 * start would otherwise be started again every second for ever. */
export const STEADY_MS = 60_000;

/** Starts the camera again when it stops: at once when the page becomes visible (a phone's browser stops the
 * camera of a hidden page), else after a back-off (retry.ts), until it streams. The back-off starts afresh only
 * once a stream has delivered frames for STEADY_MS. A muted track is left to unmute by itself, or started again
 * when the page becomes visible. */
export class CameraKeeper {
  /** Why frames stopped; null while they come. */
  stopped: string | null = null;
  restarts = 0; // successful restarts
  private why = ""; // what stopped it (a failed restart adds to what is shown, not to this)
  private attempt = 0;
  private cancel: (() => void) | null = null;
  private restarting = false;
  private muted = false;
  private ends = 0; // streams ended so far (one may end while a restart is still starting it)
  private firstFrameAt: number | null = null; // the present stream's first frame (ms, `now`)
  private halted = false; // `stop`: never started again

  constructor(private readonly camera: CameraLike, private readonly events: KeeperEvents,
    private readonly schedule: Schedule = timers, private readonly now: () => number = () => performance.now()) {}

  /** The first start: a camera refused here (no permission, no camera) is the caller's to show. */
  async start(): Promise<void> {
    await this.camera.start();
    this.camera.each({
      frame: (frame, presented) => {
        this.steady();
        this.events.frame(frame, presented);
      },
      ended: (why) => this.ended(why),
      muted: (muted) => this.mute(muted),
    });
  }

  /** For good (another tab took the device over): the stream stopped, no restart waiting or to come. */
  stop(): void {
    this.halted = true;
    this.cancel?.();
    this.cancel = null;
    this.camera.stop();
  }

  /** The page became visible: a stopped camera starts again now. */
  visible(): void {
    if (this.stopped === null || this.halted) return;
    this.cancel?.();
    this.cancel = null;
    void this.restart();
  }

  /** A frame: once the stream has delivered frames for STEADY_MS, the back-off starts afresh. */
  private steady(): void {
    const now = this.now();
    if (this.firstFrameAt === null) this.firstFrameAt = now;
    else if (this.attempt > 0 && now - this.firstFrameAt >= STEADY_MS) this.attempt = 0;
  }

  private ended(why: string): void {
    this.ends += 1;
    this.firstFrameAt = null;
    this.muted = false;
    this.why = why;
    this.report(why);
    this.later();
  }

  private mute(muted: boolean): void {
    if (muted) {
      this.muted = true;
      this.firstFrameAt = null; // no frames while muted: it has not run since
      this.why = "the camera is muted (the system or another app holds it)";
      this.report(this.why);
    } else if (this.muted) {
      this.muted = false;
      this.report(null);
    }
  }

  private later(): void {
    if (this.cancel !== null || this.restarting || this.halted) return;
    const wait = backoff(this.attempt);
    this.attempt += 1;
    this.cancel = this.schedule(() => {
      this.cancel = null;
      void this.restart();
    }, wait);
  }

  private async restart(): Promise<void> {
    if (this.restarting || this.halted) return;
    this.restarting = true;
    this.muted = false;
    const ends = this.ends;
    try {
      await this.start();
    } catch (error) {
      this.report(`${this.why}; starting it again failed (${(error as { name?: string }).name || error})`);
      this.restarting = false;
      this.later();
      return;
    }
    this.restarting = false;
    if (this.halted) { // stopped while it was starting
      this.camera.stop();
      return;
    }
    if (this.ends !== ends) { // the new stream ended already: try again later
      this.later();
      return;
    }
    this.restarts += 1; // the back-off goes on until this stream has run a while (`steady`)
    this.firstFrameAt = null;
    this.report(null);
  }

  private report(stopped: string | null): void {
    this.stopped = stopped;
    this.events.state(stopped);
  }
}

/** The screen wake lock while the page streams: the browser releases it whenever the page is hidden, so it is asked
 * for again each time the page is visible (`request`). */
export class ScreenLock {
  private held: WakeLockSentinel | null = null;
  private halted = false;

  constructor(private readonly onState: (state: string) => void) {}

  async request(): Promise<void> {
    const lock = (navigator as { wakeLock?: WakeLock }).wakeLock;
    if (lock === undefined) {
      this.onState("unavailable (no Screen Wake Lock API)");
      return;
    }
    if (this.held !== null || this.halted || document.visibilityState !== "visible") return; // asked again when visible
    try {
      const sentinel = await lock.request("screen");
      if (this.halted) { // released while it was asked for
        await sentinel.release();
        return;
      }
      this.held = sentinel;
      this.onState("held");
      sentinel.addEventListener("release", () => {
        this.held = null;
        this.onState(this.halted ? "released" : "released (asked again when the page is visible)");
      });
    } catch (error) {
      // a convenience: streaming goes on without it
      this.onState(`refused (${(error as { name?: string }).name ?? error})`);
    }
  }

  /** For good (another tab took the device over): let go, and never ask again. */
  async release(): Promise<void> {
    this.halted = true;
    await this.held?.release();
  }
}

/** Asks the browser to keep the page's storage (the outbox) under storage pressure; what it answered. */
export async function persistStorage(): Promise<string> {
  const storage = navigator.storage as StorageManager | undefined;
  if (storage?.persist === undefined) return "not persistent (no StorageManager.persist)";
  try {
    if (await storage.persisted()) return "persistent";
    return (await storage.persist()) ? "persistent"
      : "not persistent: the browser refused (it may clear waiting samples when storage runs low)";
  } catch (error) {
    return `not persistent: ${(error as { name?: string }).name ?? error}`;
  }
}
