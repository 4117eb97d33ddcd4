/**
 * The phone's outbox in IndexedDB: a sample is stored (with the logits it needs for fusion) before it is sent,
 * and deleted only when its reply arrives, so a page reload, a closed tab or a dropped connection loses nothing;
 * everything still stored is sent again on every (re)connect (the hub de-duplicates by sample id).
 */

export interface OutboxEntry {
  sampleId: string;
  payload: Uint8Array; // a serialised hgen.v1.AnnotationRequest holding this one sample
  logits: number[];
  top1: number;
  labour: number;
  version: string;
  storedAt: number;
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

  /** Resolves once the entry is durably stored: only then is it sent. */
  async put(entry: OutboxEntry): Promise<void> {
    const tx = this.db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).put(entry);
    await done(tx);
  }

  async get(sampleId: string): Promise<OutboxEntry | undefined> {
    return request(this.db.transaction(STORE).objectStore(STORE).get(sampleId));
  }

  async delete(sampleId: string): Promise<void> {
    const tx = this.db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).delete(sampleId);
    await done(tx);
  }

  async all(): Promise<OutboxEntry[]> {
    return request(this.db.transaction(STORE).objectStore(STORE).getAll());
  }

  async count(): Promise<number> {
    return request(this.db.transaction(STORE).objectStore(STORE).count());
  }
}
