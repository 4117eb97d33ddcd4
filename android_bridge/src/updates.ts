/**
 * Hot swaps announced on the updates topic, retried: a swap that failed (the hub busy, the link down during the
 * download) was not tried again until the next notice, which may never come (the notice is retained and arrives
 * once per connection), so the phone ran its old model indefinitely. Tried again after a back-off (retry.ts)
 * while the announced version is newer than the running one, at most MAX_TRIES times; a newer notice meanwhile
 * replaces it at once. Only a failure that may mend (the network, the hub busy) is retried: a bundle refused,
 * missing, or unable to run here (`isFinal`) would be downloaded and compiled again for ever to fail the same way,
 * so that version is given up (its notice again changes nothing) until a newer one is announced. A version given up
 * after MAX_TRIES is tried again on its next notice (the next connection).
 */

import { backoff, isFinal, type Schedule, timers } from "./retry.js";
import { isNewer } from "./versions.js";

export interface UpdateSteps {
  /** The version running now. */
  running(): string;
  /** Download, verify, open and switch to `version`; rejects when any step fails. */
  install(version: string): Promise<void>;
  /** `version` failed with `error`; tried again in `retryMs` (null: done). */
  failed(version: string, error: unknown, retryMs: number | null): void;
  /** `version` runs (a failure shown before is over). */
  installed(version: string): void;
}

/** Tries of one version (each downloads the bundle) before it waits for its next notice. */
export const MAX_TRIES = 8;

export class Updater {
  failures = 0;
  private wanted: string | null = null;
  private busy = false;
  private attempt = 0;
  private cancel: (() => void) | null = null;
  private halted = false;
  private underWay: Promise<void> = Promise.resolve();

  constructor(private readonly steps: UpdateSteps, private readonly schedule: Schedule = timers) {}

  /** A notice of `version`: ignored unless newer than the running one and than any version already wanted. */
  announce(version: string): void {
    if (this.halted || !isNewer(version, this.steps.running())) return;
    if (this.wanted !== null && !isNewer(version, this.wanted)) return;
    this.wanted = version;
    this.attempt = 0;
    this.cancel?.(); // a retry waiting for an older version: the newer one now
    this.cancel = null;
    void this.next();
  }

  /** For good (another tab took the device over): no retry waits or comes; resolves once the swap under way (if
   * any) has ended. */
  stop(): Promise<void> {
    this.halted = true;
    this.wanted = null;
    this.cancel?.();
    this.cancel = null;
    return this.underWay;
  }

  private async next(): Promise<void> {
    if (this.busy || this.halted) return; // the one under way looks at `wanted` when it ends
    const version = this.wanted;
    if (version === null || !isNewer(version, this.steps.running())) {
      this.wanted = null;
      return;
    }
    this.busy = true;
    const install = this.steps.install(version);
    this.underWay = install.catch(() => undefined);
    try {
      await install;
      this.steps.installed(version);
    } catch (error) {
      if (this.halted) return; // stopped meanwhile: nothing to report or retry
      this.failures += 1;
      const stillWanted = this.wanted === version && isNewer(version, this.steps.running());
      const worn = this.attempt + 1 >= MAX_TRIES;
      const retryMs = stillWanted && !isFinal(error) && !worn ? backoff(this.attempt) : null;
      if (stillWanted && worn && !isFinal(error)) this.wanted = null; // its next notice tries again
      this.steps.failed(version, error, retryMs);
      if (retryMs !== null) {
        this.attempt += 1;
        this.cancel = this.schedule(() => {
          this.cancel = null;
          void this.next();
        }, retryMs);
      }
    } finally {
      this.busy = false;
    }
    if (this.wanted !== version) void this.next(); // announced while this one was under way
  }
}
