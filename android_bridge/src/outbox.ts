/**
 * The phone's outbox in IndexedDB: a sample is stored (with the logits it needs for fusion) before it is sent,
 * and taken out (read and deleted in one transaction) only when its reply arrives, its hub deadline passes or the
 * caps make room for a newer one (samples.ts decides; ledger.ts keeps the count, the bytes and the deadlines), so a
 * page reload, a closed tab or a dropped connection loses nothing, and of two copies of one reply only one finds it.
 * Stored images are read only a page at a time (`read`), never all at once: the listing index gives what the
 * ledger needs from its keys alone.
 */

import { type Listed, sizeOf } from "./ledger.js";

export interface OutboxEntry {
  sampleId: string;
  payload: Uint8Array; // a serialised hgen.v1.AnnotationRequest holding this one sample (stamped again at each send)
  logits: number[];
  top1: number;
  labour: number;
  version: string; // the model that made the sample
  storedAt: number;
  // That model's fusion parameters, class names and m: people answered its classes, and their answers are fused
  // with its temperature and lambda whatever model runs when the reply comes (a hot swap, a reload), as the agent's
  // `Waiting.params` / `labels`. Absent in entries stored before they were kept: the running model's then.
  temperature?: number;
  fusionLambda?: number;
  labels?: string[];
  m?: number;
  // Its place in line, bytes and hub deadline (the listing index's keys). Entries stored before them (database
  // version 1) are given them by the upgrade to version 2.
  seq?: number;
  size?: number;
  deadlineS?: number;
}

const DB = "hgen-device";
const VERSION = 2;
const STORE = "outbox";
/** [seq, size, storedAt, deadlineS] of every entry: a key cursor over it lists the outbox without its images. */
const LISTING = "listing";

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

export class Outbox {
  private constructor(private readonly db: IDBDatabase) {}

  /** `deadlineS`: the hub deadline of entries stored before each kept its own (the page's then). */
  static async open(deadlineS: number): Promise<Outbox> {
    const req = indexedDB.open(DB, VERSION);
    req.onupgradeneeded = (event) => {
      const store = event.oldVersion < 1 ? req.result.createObjectStore(STORE, { keyPath: "sampleId" })
        : req.transaction!.objectStore(STORE);
      store.createIndex(LISTING, ["seq", "size", "storedAt", "deadlineS"]);
      // an entry missing a key of the index is not in it: version 1's entries get theirs (once), in the order
      // they were made (seq = storedAt, which also sorts them before every newer entry)
      const cursor = store.openCursor();
      cursor.onsuccess = () => {
        const at = cursor.result;
        if (at === null) return;
        const entry = at.value as OutboxEntry;
        at.update({ ...entry, seq: entry.seq ?? entry.storedAt, size: entry.size ?? sizeOf(entry),
          deadlineS: entry.deadlineS ?? deadlineS });
        at.continue();
      };
    };
    return new Outbox(await request(req));
  }

  /** Lets the database go (another tab took the device over); its transactions under way complete first. */
  close(): void {
    this.db.close();
  }

  /** Every entry's listing (no image), in line. */
  listing(): Promise<Listed[]> {
    const index = this.db.transaction(STORE).objectStore(STORE).index(LISTING);
    const listed: Listed[] = [];
    return new Promise((resolve, reject) => {
      const cursor = index.openKeyCursor();
      cursor.onsuccess = () => {
        const at = cursor.result;
        if (at === null) {
          resolve(listed);
          return;
        }
        const [seq, size, storedAt, deadlineS] = at.key as number[];
        listed.push({ sampleId: String(at.primaryKey), seq, size, storedAt, deadlineS });
        at.continue();
      };
      cursor.onerror = () => reject(cursor.error);
    });
  }

  /** Resolves once the entry is durably stored (only then is it sent); rejects as IndexedDB does (a full quota:
   * QuotaExceededError). */
  async put(entry: OutboxEntry): Promise<void> {
    const tx = this.db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).put(entry);
    await done(tx);
  }

  /** The entry, deleted in the same transaction (undefined when it is not stored): of two copies of one reply,
   * only one ever gets it. */
  async take(sampleId: string): Promise<OutboxEntry | undefined> {
    const tx = this.db.transaction(STORE, "readwrite");
    const store = tx.objectStore(STORE);
    const got = store.get(sampleId);
    got.onsuccess = () => {
      if (got.result !== undefined) store.delete(sampleId);
    };
    await done(tx);
    return got.result as OutboxEntry | undefined;
  }

  /** The entries of `sampleIds` still stored, in that order: one page of a resend, read in one transaction. */
  async read(sampleIds: string[]): Promise<OutboxEntry[]> {
    const tx = this.db.transaction(STORE);
    const store = tx.objectStore(STORE);
    const gets = sampleIds.map((sampleId) => store.get(sampleId));
    await done(tx);
    return gets.map((got) => got.result as OutboxEntry | undefined).filter((e): e is OutboxEntry => e !== undefined);
  }
}
