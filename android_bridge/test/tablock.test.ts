/**
 * One tab per device (src/tablock.ts, src/session.ts): a second page of a device runs nothing; a take-over stops
 * the running page before the new one runs; a page that does not stop in time has its run lock taken anyway.
 * Node has no Web Locks: `Browser` below keeps the API's rules for exclusive locks (a queue per name, first come
 * first served; `ifAvailable` answers null at once when the lock is held or asked for; `steal` takes it at once and
 * the holder's request rejects with an AbortError; `signal` ends a wait with an AbortError; a page that goes away
 * lets go of its locks). The browser's own is exercised by tests/integration/test_phone_single_tab.py.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { Session, StoppedError } from "../src/session.js";
import { GRACE_MS, HANDOVER_MS, type Locks, TabLock } from "../src/tablock.js";
import { Timers, settle } from "./timers.js";

interface Holder {
  page: number;
  stolen(): void;
}

interface Waiter {
  page: number;
  grant(): void;
}

/** The locks of one origin, shared by its pages. */
class Browser {
  private readonly held = new Map<string, Holder>();
  private readonly queue = new Map<string, Waiter[]>();
  private pages = 0;

  /** One page's `navigator.locks`, and what its going away does. */
  page(): { locks: Locks; close(): void } {
    const page = ++this.pages;
    return {
      locks: { request: (name, options, callback) => this.request(page, name, options, callback) },
      close: () => {
        for (const [name, holder] of [...this.held]) if (holder.page === page) this.release(name, holder);
        for (const waiting of this.queue.values()) waiting.splice(0, waiting.length, ...waiting.filter((w) => w.page !== page));
      },
    };
  }

  private request(page: number, name: string, options: LockOptions,
    callback: (lock: Lock | null) => unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const grant = () => {
        const holder: Holder = { page, stolen: () => reject(new DOMException("stolen", "AbortError")) };
        this.held.set(name, holder);
        void Promise.resolve().then(() => callback({ name, mode: "exclusive" } as Lock)).then((value) => {
          this.release(name, holder);
          resolve(value);
        }, (error: unknown) => {
          this.release(name, holder);
          reject(error);
        });
      };
      const waiting = this.queue.get(name) ?? [];
      this.queue.set(name, waiting);
      if (options.steal) {
        const old = this.held.get(name);
        this.held.delete(name);
        old?.stolen();
        grant();
      } else if (!this.held.has(name) && waiting.length === 0) grant();
      else if (options.ifAvailable) void Promise.resolve().then(() => callback(null)).then(resolve, reject);
      else {
        const waiter: Waiter = { page, grant };
        waiting.push(waiter);
        options.signal?.addEventListener("abort", () => {
          const at = waiting.indexOf(waiter);
          if (at < 0) return; // granted already
          waiting.splice(at, 1);
          reject(new DOMException("aborted", "AbortError"));
        });
      }
    });
  }

  private release(name: string, holder: Holder): void {
    if (this.held.get(name) !== holder) return; // stolen, or let go already
    this.held.delete(name);
    this.queue.get(name)?.shift()?.grant();
  }
}

/** A page of device `phone-1`: its lock, its session's log, and how its stop is let to end. */
function page(browser: Browser, timers: Timers, log: string[], label: string) {
  const tab = browser.page();
  let finish: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const lock = new TabLock("phone-1", tab.locks, {
    lost: async () => {
      log.push(`${label} stopping`);
      await stopped;
      log.push(`${label} stopped`);
    },
  }, timers.schedule);
  return { lock, close: tab.close, finishStopping: finish };
}

/** The claim's answer once it has one, else "waiting". */
function watch(claim: Promise<string>): { value: string } {
  const seen = { value: "waiting" };
  void claim.then((value) => {
    seen.value = value;
  });
  return seen;
}

test("a second page of a device finds it held: after the grace it runs nothing, and the first is left alone", async () => {
  const browser = new Browser();
  const timers = new Timers();
  const log: string[] = [];
  const first = page(browser, timers, log, "first");
  assert.equal(await first.lock.claim(), "held");
  const second = watch(page(browser, timers, log, "second").lock.claim());
  await settle();
  assert.equal(second.value, "waiting", "a reload's previous page may still hold it for a moment");
  assert.deepEqual(timers.pending, [GRACE_MS]);
  await timers.run(GRACE_MS);
  assert.equal(second.value, "busy");
  assert.deepEqual(log, []);
});

test("a reloaded page gets the lock its previous page lets go within the grace", async () => {
  const browser = new Browser();
  const timers = new Timers();
  const log: string[] = [];
  const before = page(browser, timers, log, "before");
  assert.equal(await before.lock.claim(), "held");
  const after = watch(page(browser, timers, log, "after").lock.claim());
  await settle();
  before.close(); // the page went away (reload): the browser lets its locks go
  await settle();
  assert.equal(after.value, "held");
  assert.deepEqual(timers.pending, [], "the grace timer is cancelled");
  assert.deepEqual(log, []);
});

test("a take-over runs only once the running page has stopped", async () => {
  const browser = new Browser();
  const timers = new Timers();
  const log: string[] = [];
  const first = page(browser, timers, log, "first");
  assert.equal(await first.lock.claim(), "held");
  const second = watch(page(browser, timers, log, "second").lock.claim(true).then((claim) => {
    log.push(`second ${claim}`);
    return claim;
  }));
  await settle();
  assert.deepEqual(log, ["first stopping"], "the running page is told to stop; the new one waits for it");
  assert.equal(second.value, "waiting");
  first.finishStopping();
  await settle();
  assert.deepEqual(log, ["first stopping", "first stopped", "second held"]);
  assert.deepEqual(timers.pending, [], "the hand-over timer is cancelled");
});

test("a page that does not stop in time has its run lock taken; a take-over of a waiting page leaves it lost", async () => {
  const browser = new Browser();
  const timers = new Timers();
  const log: string[] = [];
  const first = page(browser, timers, log, "first");
  assert.equal(await first.lock.claim(), "held");
  const second = watch(page(browser, timers, log, "second").lock.claim(true)); // first never stops (frozen)
  await settle();
  assert.deepEqual(timers.pending, [HANDOVER_MS]);
  const third = watch(page(browser, timers, log, "third").lock.claim(true)); // takes it from the waiting second
  await settle();
  assert.equal(second.value, "lost", "it never ran: nothing to stop");
  assert.equal(third.value, "waiting");
  await timers.run(HANDOVER_MS);
  assert.equal(third.value, "held");
  assert.deepEqual(log, ["first stopping"]);
});

test("without Web Locks a page runs unguarded", async () => {
  const lock = new TabLock("phone-1", undefined, { lost: async () => undefined });
  assert.equal(await lock.claim(), "unguarded");
});

test("a session stopped during start-up waits for it, then undoes what was started, the latest first", async () => {
  const session = new Session();
  const undone: string[] = [];
  let cameraStarts: () => void = () => undefined;
  const camera = new Promise<void>((resolve) => {
    cameraStarts = resolve;
  });
  const startup = session.start(async () => {
    session.started(() => undone.push("outbox"));
    session.started(async () => {
      await Promise.resolve();
      undone.push("link");
    });
    session.started(() => undone.push("camera"));
    await camera; // getUserMedia under way when the page is taken over
    session.check();
    session.started(() => undone.push("wake lock")); // never reached
  });
  const stopping = session.stop();
  await settle();
  assert.deepEqual(undone, [], "nothing is undone while start-up is still under way");
  cameraStarts();
  await assert.rejects(startup, StoppedError);
  await stopping;
  assert.deepEqual(undone, ["camera", "link", "outbox"]);
  assert.equal(session.stopped, true);
  await session.stop(); // once only
  assert.deepEqual(undone, ["camera", "link", "outbox"]);
});
