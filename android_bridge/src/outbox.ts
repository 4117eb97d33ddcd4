/**
 * The phone's outbox in IndexedDB: a sample is stored (with the logits it needs for fusion) before it is sent,
 * and taken out (read and deleted in one transaction) only when its reply arrives, so a page reload, a closed tab or
 * a dropped connection loses nothing, and of two copies of one reply only one finds it;
 * everything still stored is sent again on every (re)connect (the hub de-duplicates by sample id).
 */

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
}

const DB = "hgen-device";
const STORE = "outbox";

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

  static async open(): Promise<Outbox> {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE, { keyPath: "sampleId" });
    return new Outbox(await request(req));
  }

  /** Resolves once the entry is durably stored (only then is it sent), with the number of entries then. */
  async put(entry: OutboxEntry): Promise<number> {
    const tx = this.db.transaction(STORE, "readwrite");
    const store = tx.objectStore(STORE);
    store.put(entry);
    const counted = store.count();
    await done(tx);
    return counted.result;
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

  async all(): Promise<OutboxEntry[]> {
    return request(this.db.transaction(STORE).objectStore(STORE).getAll());
  }

  async count(): Promise<number> {
    return request(this.db.transaction(STORE).objectStore(STORE).count());
  }
}
