/**
 * What a running device page has started (the outbox, the pipeline, the hub link, timers, the camera, the wake
 * lock), so that all of it can be stopped when another tab or window takes the device over (tablock.ts): a page
 * that kept its camera, link or outbox going beside the new one is the fault the single-tab lock exists for. Each
 * start registers its undo as soon as it is made; `stop` waits for the start-up under way (which stops at its next
 * `check`), then undoes everything, the latest start first.
 */

/** Start-up ended because the page was taken over: not a failure. */
export class StoppedError extends Error {
  override name = "StoppedError";

  constructor() {
    super("stopped: another tab or window runs this device");
  }
}

export class Session {
  private undos: (() => unknown)[] = [];
  private startup: Promise<unknown> = Promise.resolve();
  private stopping: Promise<void> | null = null;

  get stopped(): boolean {
    return this.stopping !== null;
  }

  /** Runs the page's start-up; `stop` waits for it to end. */
  start(startup: () => Promise<void>): Promise<void> {
    const run = startup();
    this.startup = run.catch(() => undefined);
    return run;
  }

  /** `undo` stops what was just started; throws StoppedError when the session is stopping (start-up ends here). */
  started(undo: () => unknown): void {
    this.undos.push(undo);
    this.check();
  }

  /** Throws StoppedError when the session is stopping: start-up checks it after each step it waits for. */
  check(): void {
    if (this.stopped) throw new StoppedError();
  }

  /** Stops everything started, the latest first, each awaited (one that fails is logged, the rest still stop). */
  stop(): Promise<void> {
    this.stopping ??= this.undoAll();
    return this.stopping;
  }

  private async undoAll(): Promise<void> {
    await this.startup;
    for (const undo of this.undos.splice(0).reverse()) {
      try {
        await undo();
      } catch (error) {
        console.error(`stopping: ${error instanceof Error ? error.message : error}`);
      }
    }
  }
}
