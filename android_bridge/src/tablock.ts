/**
 * One tab per device. Two tabs (or a tab and a re-opened installed window) of one provisioned device share its
 * client id and its IndexedDB outbox: the broker kicked one connection off for the other, both reconnected for ever,
 * and both ran the camera, the labour bucket and resends from the same outbox. The Web Locks API (shared by every
 * tab and window of the origin, released by the browser when a page goes away) decides which one runs:
 *
 * - the device lock (`hgen-device-<id>`, exclusive, held for the page's life): asked for with `ifAvailable`; a page
 *   that does not get it starts nothing and says so (after a short grace: a reloaded page's predecessor may still
 *   hold it for a moment). A take-over steals it (`steal: true`): the browser takes it from the running page, whose
 *   request fails with an AbortError, and that page stops its camera, link and pipeline (`lost`).
 * - the run lock (`hgen-device-<id>-run`): held while a page runs, and by a page that lost the device lock until it
 *   has stopped, so the page taking over opens the outbox and connects only once the other page has let go of them
 *   (the outbox's listing read after the last sample the other page stored, one MQTT connection at a time). A page
 *   that does not stop within HANDOVER_MS (a frozen background tab) has it stolen too.
 *
 * Where the browser has no Web Locks (very old browsers, or a page not served securely), the page runs unguarded.
 */

import { type Schedule, timers } from "./retry.js";

/** What this needs of `navigator.locks` (a LockManager). */
export interface Locks {
  request(name: string, options: LockOptions, callback: (lock: Lock | null) => unknown): Promise<unknown>;
}

export interface TabLockEvents {
  /** Another tab or window took this device over: stop everything; the run lock is let go when this settles. */
  lost(): Promise<void>;
}

/** held: this page runs the device; busy: another tab or window does (nothing started here); lost: another page
 * took the device over while this one was still waiting to run; unguarded: no Web Locks API here. */
export type Claim = "held" | "busy" | "lost" | "unguarded";

/** How long a page whose device lock is held waits for it before it says another page runs the device: a
 * reload's previous page may not have let go of it yet. */
export const GRACE_MS = 2_000;
/** How long a page taking over waits for the other page to stop before it takes the run lock anyway. */
export const HANDOVER_MS = 10_000;

export function lockName(deviceId: string): string {
  return `hgen-device-${deviceId}`;
}

function isAbort(error: unknown): boolean {
  return (error as { name?: string } | null)?.name === "AbortError";
}

/** Asks for the lock `name`: resolves once granted with what lets it go, or with null when `ifAvailable` found it
 * held or `signal` ended the wait. `stolen` is called when another request steals it after it was granted. */
function acquire(locks: Locks, name: string, options: LockOptions, stolen: () => void): Promise<(() => void) | null> {
  return new Promise((resolve, reject) => {
    let granted = false;
    locks.request(name, { mode: "exclusive", ...options }, (lock) => {
      if (lock === null) {
        resolve(null);
        return undefined;
      }
      granted = true;
      return new Promise<void>((release) => resolve(release)); // held until `release` is called
    }).catch((error: unknown) => {
      if (granted) {
        if (isAbort(error)) stolen();
      } else if (isAbort(error)) resolve(null); // the wait was ended by `signal`
      else reject(error);
    });
  });
}

export class TabLock {
  readonly name: string;
  private running = false;
  private lostEarly = false; // the device lock was stolen before this page ran
  private releaseRun: (() => void) | null = null;
  private readonly abandon = new AbortController(); // ends a wait for the run lock when the device lock is stolen

  constructor(deviceId: string, private readonly locks: Locks | undefined, private readonly events: TabLockEvents,
    private readonly schedule: Schedule = timers, private readonly graceMs = GRACE_MS,
    private readonly handoverMs = HANDOVER_MS) {
    this.name = lockName(deviceId);
  }

  /** Whether this page may run the device; `takeOver`: take it from the page running it (which then stops). */
  async claim(takeOver = false): Promise<Claim> {
    const locks = this.locks;
    if (locks === undefined) return "unguarded";
    const stolen = () => this.deviceLost();
    const device = takeOver ? await acquire(locks, this.name, { steal: true }, stolen)
      : (await acquire(locks, this.name, { ifAvailable: true }, stolen)) ?? (await this.wait(this.name, this.graceMs));
    if (device === null) return "busy";
    const run = await this.runLock();
    if (this.lostEarly) {
      run?.();
      return "lost";
    }
    this.releaseRun = run;
    this.running = true;
    return "held";
  }

  /** `name` when it is let go within `ms`, else null. */
  private async wait(name: string, ms: number): Promise<(() => void) | null> {
    const timeout = new AbortController();
    const cancel = this.schedule(() => timeout.abort(), ms);
    try {
      return await acquire(this.locks!, name, { signal: timeout.signal }, () => this.deviceLost());
    } finally {
      cancel();
    }
  }

  /** The run lock: once the page that ran the device has stopped, or taken from it after HANDOVER_MS; null when
   * this page lost the device lock meanwhile. */
  private async runLock(): Promise<(() => void) | null> {
    const run = `${this.name}-run`;
    const got = await acquire(this.locks!, run, { ifAvailable: true }, () => undefined)
      ?? await this.runWait(run);
    if (got !== null || this.lostEarly) return got;
    console.warn(`the page that ran this device did not stop within ${this.handoverMs / 1000} s: taking over anyway`);
    return acquire(this.locks!, run, { steal: true }, () => undefined);
  }

  private async runWait(run: string): Promise<(() => void) | null> {
    if (this.lostEarly) return null;
    const timeout = new AbortController();
    const cancel = this.schedule(() => timeout.abort(), this.handoverMs);
    const onAbandon = () => timeout.abort();
    this.abandon.signal.addEventListener("abort", onAbandon);
    try {
      return await acquire(this.locks!, run, { signal: timeout.signal }, () => undefined);
    } finally {
      cancel();
      this.abandon.signal.removeEventListener("abort", onAbandon);
    }
  }

  /** Another page stole the device lock: a running page stops (`lost`), then lets the run lock go. */
  private deviceLost(): void {
    if (!this.running) {
      this.lostEarly = true;
      this.abandon.abort();
      return;
    }
    this.running = false;
    const release = this.releaseRun;
    this.releaseRun = null;
    void this.events.lost().catch((error: unknown) => console.error(`stopping for another tab: ${error}`))
      .finally(() => release?.());
  }
}
