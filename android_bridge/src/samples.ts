/**
 * The outbox as the page uses it: samples stored before they are sent, held to the caps (oldest dropped first,
 * as the agent's `drop_oldest`), and sent again after a reconnect a page at a time. A sample is never settled on
 * the phone at its hub deadline: people may have answered it while the link was down, and the hub's reply may still
 * wait at the broker. As the agent's `_request`/`_sample`, a sample with no time left is sent again without its
 * image (deadline = sent_at): the hub answers with the reply it holds, else EXPIRED (it stores no image and expires
 * such a sample at once), and that reply settles it. Every sample that leaves without people's answers gives its
 * reserved labour back and is counted; a sample loaded at open was reserved by an earlier page, not this one, and
 * is settled with nothing reserved (the agent restores samples with labour 0). A store that fails (the browser's
 * quota, QuotaExceededError) costs that frame's sample, never the stream. IndexedDB (outbox.ts) on the page, a Map
 * in the unit tests.
 */

import { type Ledger, sizeOf } from "./ledger.js";
import type { OutboxEntry } from "./outbox.js";
import { forSending } from "./requests.js";

/** The storage itself (outbox.ts). */
export interface Shelf {
  put(entry: OutboxEntry): Promise<void>;
  take(sampleId: string): Promise<OutboxEntry | undefined>;
  read(sampleIds: string[]): Promise<OutboxEntry[]>;
}

/** The hub link as the outbox sees it (hub.ts): `send` resolves on the broker's acknowledgement, and rejects when
 * the link drops first. */
export interface Link {
  readonly connected: boolean;
  send(payload: Uint8Array): Promise<void>;
}

export interface SampleEvents {
  /** Labour reserved for a sample that never reaches people: given back (LabourBucket.settle(labour, 0)). */
  refund(labour: number): void;
  /** A stored sample settled on the phone: the caps dropped it; the model's answer stands. */
  settled(entry: OutboxEntry, why: "dropped"): void;
}

export interface Clock {
  mono(): number; // ms, never set back (performance.now())
  wall(): number; // ms (Date.now())
}

/** What became of a sample: stored (and sent when the link is up); no_storage: the browser refused to store it;
 * oversize: larger than one message may be, or than the outbox holds. */
export type Stored = "stored" | "no_storage" | "oversize";

/** Samples read and sent per page of a resend (the agent's RESEND_CHUNK): 32 frames' images in memory at once. */
export const RESEND_PAGE = 32;

/** While connected, a sample still held this long after its hub deadline (its reply lost) is asked again, without
 * its image, at most this often (`tick`). */
export const LATE_ASK_MS = 60_000;

const pageClock: Clock = { mono: () => performance.now(), wall: () => Date.now() };

export class Samples {
  noStorage = 0; // not stored: the browser refused (its quota)
  droppedOldest = 0; // stored, dropped to make room for a newer one
  droppedOversize = 0; // not stored: too large
  late = 0; // sent past their hub deadline, without their image (the hub answers with its reply, else EXPIRED)
  /** Why the last sample could not be stored (an error's name and message); null once one is stored again. */
  storageError: string | null = null;
  private resending: Promise<void> = Promise.resolve();
  private generation = 0;
  private running = 0; // resends under way
  private retry = false; // the last resend failed (the outbox could not be read): `tick` starts another
  private readonly askedLate = new Map<string, number>(); // sample id -> monotonic ms of its last imageless send
  /** Loaded at open (the ledger's samples when this was made): their labour was reserved by an earlier page. */
  private readonly restored: Set<string>;

  constructor(
    private readonly shelf: Shelf,
    readonly ledger: Ledger,
    private readonly link: () => Link | null,
    private readonly events: SampleEvents,
    readonly maxPayloadBytes: number,
    private readonly clock: Clock = pageClock,
    private readonly page: number = RESEND_PAGE,
  ) {
    this.restored = new Set(ledger.ids());
  }

  /** Stores the sample (making room first), then sends it if the link is up (else the next resend does). Never
   * rejects for want of room or storage: the sample is counted and its labour (`entry.labour`) given back. */
  async add(entry: OutboxEntry, deadlineS: number): Promise<Stored> {
    const size = sizeOf(entry);
    const drop = entry.payload.byteLength > this.maxPayloadBytes ? null : this.ledger.makeRoom(size);
    if (drop === null) {
      this.tooLarge(entry.labour);
      return "oversize";
    }
    try {
      for (const sampleId of drop) {
        if (await this.settle(sampleId, "dropped")) this.droppedOldest += 1;
      }
      await this.shelf.put({ ...entry, seq: this.ledger.nextSeq(), size, deadlineS });
    } catch (error) { // the browser's quota (QuotaExceededError), or its storage failing
      this.noStorage += 1;
      const { name, message } = (error ?? {}) as { name?: string; message?: string };
      this.storageError = name ? `${name}${message ? `: ${message}` : ""}` : String(error);
      this.events.refund(entry.labour);
      return "no_storage";
    }
    this.ledger.add(entry.sampleId, size, deadlineS, this.clock.mono());
    this.storageError = null;
    const link = this.link();
    if (link?.connected) link.send(entry.payload).catch(() => undefined); // not acknowledged: the next resend
    return "stored";
  }

  /** A sample that could not be made small enough for one message: counted, its labour back. */
  tooLarge(labour: number): void {
    this.droppedOversize += 1;
    this.events.refund(labour);
  }

  /** The sample, taken out for its reply (undefined when it is not stored). One loaded at open comes with labour
   * 0: this page's bucket never reserved it. */
  async take(sampleId: string): Promise<OutboxEntry | undefined> {
    const entry = await this.shelf.take(sampleId);
    this.ledger.remove(sampleId);
    this.askedLate.delete(sampleId);
    const restored = this.restored.delete(sampleId);
    return entry === undefined || !restored ? entry : { ...entry, labour: 0 };
  }

  /** Resolves once the resends under way have ended (they stop when the link drops). */
  idle(): Promise<void> {
    return this.resending;
  }

  /** Samples waiting (the ledger's count: no database read). */
  async count(): Promise<number> {
    return this.ledger.count;
  }

  /** What a timer calls while the page runs (every few seconds): with the link up, a resend that failed (the
   * outbox could not be read) is started again, and samples still held LATE_ASK_MS past their hub deadline (their
   * reply lost) are asked again without their image. Nothing is settled here. */
  async tick(): Promise<void> {
    const link = this.link();
    if (link === null || !link.connected || this.running > 0) return;
    if (this.retry) return this.resend();
    const now = this.clock.mono();
    const late = this.ledger.due(now - LATE_ASK_MS)
      .filter((sampleId) => now - (this.askedLate.get(sampleId) ?? -Infinity) >= LATE_ASK_MS);
    if (late.length > 0) return this.resend(late);
  }

  /** Sends every stored sample again (after a (re)connect), oldest first, a page at a time: a page's images are
   * read, sent, and their acknowledgements awaited (or the link's drop) before the next page is read. One resend
   * at a time: a newer call takes over from an older one (which stops at its next page), and one stops when the
   * link drops. Each request says what is left of its deadline; one past it goes without its image (the hub
   * answers with the reply it holds, else EXPIRED). A resend that fails (the outbox cannot be read) is started
   * again by `tick` while the link is up. `only`: these samples alone (`tick`'s late ones), else all. */
  resend(only?: string[]): Promise<void> {
    const generation = ++this.generation;
    this.running += 1;
    const run = this.resending.then(() => this.resendAll(generation, only)).then(() => {
      if (only === undefined && generation === this.generation && this.link()?.connected) this.retry = false;
    }, (error: unknown) => {
      this.retry = true;
      throw error;
    }).finally(() => {
      this.running -= 1;
    });
    this.resending = run.catch(() => undefined);
    return run;
  }

  private async resendAll(generation: number, only?: string[]): Promise<void> {
    const sampleIds = only ?? this.ledger.ids(); // a sample stored after this is sent by `add`
    for (let start = 0; start < sampleIds.length; start += this.page) {
      const link = this.link();
      if (generation !== this.generation || link === null || !link.connected) return;
      const wanted = sampleIds.slice(start, start + this.page).filter((id) => this.ledger.has(id));
      const sends: Promise<void>[] = [];
      for (const entry of await this.shelf.read(wanted)) {
        const now = this.clock.mono();
        const left = this.ledger.leftS(entry.sampleId, now);
        if (left <= 0) {
          this.late += 1;
          this.askedLate.set(entry.sampleId, now);
        }
        sends.push(link.send(forSending(entry.payload, this.clock.wall(), left)));
      }
      await Promise.allSettled(sends);
    }
  }

  /** Takes a sample out without people's answers: the labour this page reserved for it back, and the model's
   * answer stands. */
  private async settle(sampleId: string, why: "dropped"): Promise<boolean> {
    const entry = await this.take(sampleId);
    if (entry === undefined) return false; // its reply took it meanwhile
    this.events.refund(entry.labour);
    this.events.settled(entry, why);
    return true;
  }
}
