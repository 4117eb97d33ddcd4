/** Timers a unit test runs by hand (the modules under test take a `Schedule`), shared by the unit tests. */

import assert from "node:assert/strict";

/** Lets the promise chains a fired timer started run to their end. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve();
}

export class Timers {
  readonly waiting: { fn: () => void; ms: number; cancelled: boolean }[] = [];
  readonly schedule = (fn: () => void, ms: number) => {
    const timer = { fn, ms, cancelled: false };
    this.waiting.push(timer);
    return () => {
      timer.cancelled = true;
    };
  };
  get pending(): number[] {
    return this.waiting.filter((t) => !t.cancelled).map((t) => t.ms);
  }
  /** Fires the oldest waiting timer. */
  async runNext(): Promise<void> {
    await this.fire(this.waiting.find((t) => !t.cancelled), "a timer is waiting");
  }
  /** Fires the oldest waiting timer of `ms`. */
  async run(ms: number): Promise<void> {
    await this.fire(this.waiting.find((t) => !t.cancelled && t.ms === ms), `a ${ms} ms timer is waiting`);
  }
  private async fire(next: { fn: () => void; cancelled: boolean } | undefined, what: string): Promise<void> {
    assert.ok(next, what);
    next.cancelled = true;
    next.fn();
    await settle();
  }
}
