/**
 * How the phone takes the hub's replies, as the agent's `hgen.edge_agent.replies`: people's answers are fused into
 * the logits of the sample they answered, with the temperature, lambda and class names of the model that made the
 * sample (stored with it in the outbox; a hot swap or a reload must not change them), and its labour is settled
 * with what the reply reports, held by `reportedLabour`.
 *
 * Replies are taken one at a time (a promise chain): a reply's sample is taken out of the outbox (read and deleted
 * in one transaction) before its answers are fused, and the ids of recently done samples are kept, so copies of
 * one reply (QoS 1 redelivery, the hub resending a stored reply when the sample is resent) fuse it once. A reply
 * that cannot be fused (malformed) is logged and counted: the sample is done, never resent for ever. The number
 * of samples waiting is counted in the outbox after each reply, not kept by hand.
 */

import { hgen } from "../gen/hub_pb.js";
import { reportedLabour } from "./gate.js";
import * as hdnn from "./hdnn.js";
import type { OutboxEntry } from "./outbox.js";

export const STATUS = hgen.v1.ReplyStatus;
export const RECENT_REPLIES = 10_000; // the agent's: done sample ids kept to tell a duplicate reply

export interface FusedRecord {
  sampleId: string;
  status: number;
  logits: number[];
  answers: number[];
  modelTop1: number;
  fused: number;
  version: string;
  error?: string; // the reply could not be fused: the model's answer stands
}

/** What fusion needs of a model: the running one's, for outbox entries stored without their own. */
export interface Fusion {
  params: hdnn.FusionParams;
  labels: string[];
  m: number;
}

/** The outbox as the replies see it. */
export interface SampleStore {
  take(sampleId: string): Promise<OutboxEntry | undefined>;
  count(): Promise<number>;
}

export interface ReplyEvents {
  fused(record: FusedRecord, labels: string[]): void;
  pending(count: number): void;
}

/** The class answers of a reply that the model has (0..classes-1), as the agent's CNN adapter: a class the model
 * does not have is dropped, not fused (it threw in `hdnn.fuse` and left the sample in the outbox for good). */
export function classAnswers(reply: hgen.v1.ISampleReply, classes: number): number[] {
  const answers: number[] = [];
  for (const answer of (reply.answers ?? []) as hgen.v1.IAnswer[]) {
    if (answer.classId === null || answer.classId === undefined) continue; // boxes or regions, or a decline
    const id = Number(answer.classId);
    if (Number.isInteger(id) && id >= 0 && id < classes) answers.push(id);
    else console.warn(`reply for ${String(reply.sampleId).slice(0, 64)} names class ${id}, the model has ${classes}: dropped`);
  }
  return answers;
}

/** The model that made the sample: its own parameters and classes, else (an entry stored before they were kept)
 * the running model's. */
export function fusionOf(entry: OutboxEntry, running: Fusion): Fusion {
  const own = entry.temperature !== undefined && entry.fusionLambda !== undefined;
  return {
    params: own ? { temperature: entry.temperature!, fusionLambda: entry.fusionLambda! } : running.params,
    labels: entry.labels ?? running.labels,
    m: entry.m ?? running.m,
  };
}

/** The reply's answers fused into the sample's logits (the model's answer stands without any). */
export function fuseReply(entry: OutboxEntry, reply: hgen.v1.ISampleReply, fusion: Fusion): FusedRecord {
  const status = Number(reply.status ?? 0);
  const answers = classAnswers(reply, entry.logits.length);
  const useful = status === STATUS.REPLY_STATUS_ANSWERED || status === STATUS.REPLY_STATUS_PARTIAL;
  const fused = useful && answers.length > 0 ? hdnn.fuse(entry.logits, answers, fusion.params) : entry.top1;
  return { sampleId: entry.sampleId, status, logits: entry.logits, answers, modelTop1: entry.top1, fused,
    version: entry.version };
}

export class Replies {
  private chain: Promise<void> = Promise.resolve();
  private readonly recent = new Set<string>(); // insertion order: the oldest go first
  duplicates = 0;
  unknown = 0;
  failures = 0;

  constructor(
    private readonly store: SampleStore,
    private readonly running: () => Fusion,
    private readonly bucket: { settle(estimate: number, actual: number): void },
    private readonly events: ReplyEvents,
    private readonly keep: number = RECENT_REPLIES,
  ) {}

  /** Resolves once every reply handed in so far is handled. */
  idle(): Promise<void> {
    return this.chain;
  }

  /** Queued behind the replies before it; resolves once it is handled (never rejects). */
  handle(reply: hgen.v1.ISampleReply): Promise<void> {
    const next = this.chain.then(() => this.one(reply)).catch((error: unknown) => {
      this.failures += 1;
      console.error(`reply for ${String(reply.sampleId).slice(0, 64)} failed: ${error instanceof Error ? error.message : error}`);
    });
    this.chain = next;
    return next;
  }

  private async one(reply: hgen.v1.ISampleReply): Promise<void> {
    const sampleId = String(reply.sampleId ?? "");
    if (this.recent.has(sampleId)) {
      this.duplicates += 1;
      return;
    }
    const entry = await this.store.take(sampleId);
    if (entry === undefined) {
      this.unknown += 1; // fused before a reload, or never ours
      return;
    }
    this.remember(sampleId);
    try {
      const fusion = fusionOf(entry, this.running());
      this.bucket.settle(entry.labour, reportedLabour(Number(reply.labour ?? 0), entry.labour, fusion.m));
      let record: FusedRecord;
      try {
        record = fuseReply(entry, reply, fusion);
      } catch (error) {
        this.failures += 1;
        const detail = error instanceof Error ? error.message : String(error);
        console.error(`reply for ${sampleId.slice(0, 64)} could not be fused (${detail}): the model's answer stands`);
        record = { sampleId, status: Number(reply.status ?? 0), logits: entry.logits, answers: [],
          modelTop1: entry.top1, fused: entry.top1, version: entry.version, error: detail };
      }
      this.events.fused(record, fusion.labels);
    } finally {
      this.events.pending(await this.store.count());
    }
  }

  private remember(sampleId: string): void {
    this.recent.add(sampleId);
    for (const old of this.recent) {
      if (this.recent.size <= this.keep) break;
      this.recent.delete(old);
    }
  }
}
