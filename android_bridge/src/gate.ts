/**
 * Who goes to people on the phone: the runtime's gate (c < tau, hdnn.needsHuman), the agent's draws (a confident
 * frame also goes to people when Python's `random.Random(seed).random()` < `unfamiliarShare` if it is unlike the
 * training images, else < `auditShare`: the same generator, so the same frames), then the same limits as the
 * agent's `hgen.edge_agent.gating`: at most one escalation or audit per `minIntervalS`, and the labour demand L
 * enforced with a bucket that refills L x L_max-per-frame operations each frame (capped at `windowFrames` of
 * refill) and is charged the most each sample can cost (m x MAX_OPERATIONS), settled to what people really spent
 * when the reply comes.
 */

import { MAX_OPERATIONS, MAX_PARTICIPANTS } from "./hdnn.js";
import { PyRandom } from "./pyrandom.js";

export type Decision = "confident" | "escalate" | "audit" | "rate_limited" | "budget";

/** The decisions that send the frame to people. */
export function toPeople(decision: string): boolean {
  return decision === "escalate" || decision === "audit";
}

const SCALE_STEP = 0.05; // the agent's gating.SCALE_STEP

export class LabourBucket {
  readonly rate: number | null;
  readonly capacity: number | null;
  tokens = 0;
  spent = 0;
  /** Real labour / reserved, learned from replies, in [1, MAX_OPERATIONS] (the agent's `LabourBucket.scale`). */
  scale = 1;

  constructor(share: number | null, windowFrames = 1000) {
    this.rate = share === null ? null : share * MAX_PARTICIPANTS * MAX_OPERATIONS;
    this.capacity = this.rate === null ? null : this.rate * windowFrames;
  }

  frame(): void {
    if (this.rate !== null && this.capacity !== null) this.tokens = Math.min(this.capacity, this.tokens + this.rate);
  }

  take(labour: number): boolean {
    if (this.rate !== null && labour > this.tokens + 1e-9) return false;
    this.tokens -= labour;
    this.spent += labour;
    return true;
  }

  /** What to take for a sample whose L0 estimate is `estimate`, asked of `m` people: at least the most a class
   * answer can cost (m x MAX_OPERATIONS), so a reply coming late never charges more than was taken (the agent's
   * `LabourBucket.reserve`); more where the estimate, scaled by what replies showed, is higher. */
  reserve(estimate: number, m: number): number {
    return Math.max(estimate * this.scale, Math.max(1, m) * MAX_OPERATIONS);
  }

  /** `actual`: what people spent, held by `reportedLabour` (a reply is not signed): the difference to what was
   * reserved is charged or refunded, and the scale moves a step towards the ratio (as the agent's). */
  settle(reserved: number, actual: number): void {
    // held to the capacity: refunds of a backlog (all EXPIRED after the hub was away) once lifted the bucket to
    // hundreds of windows of labour, switching the limit off until spent
    this.tokens = this.capacity === null ? this.tokens + reserved - actual
      : Math.min(this.capacity, this.tokens + reserved - actual);
    this.spent += actual - reserved;
    if (actual > 0 && reserved > 0) {
      const step = this.scale * SCALE_STEP * (actual / reserved - 1);
      this.scale = Math.min(MAX_OPERATIONS, Math.max(1, this.scale + step));
    }
  }
}

/** The labour a reply says people spent, held to what m people can spend on one sample (the agent's
 * `reported_labour`): a value that is not a number (NaN, infinite, negative) settles at the estimate. Unchecked,
 * 1e12 stopped the phone asking people for the session, and NaN switched the budget off. */
export function reportedLabour(reported: number, estimate: number, m: number): number {
  if (!Number.isFinite(reported) || reported < 0) {
    console.warn(`a reply reports labour ${reported}: the estimate ${estimate} is kept`);
    return estimate;
  }
  return Math.min(reported, (Number.isFinite(m) ? Math.max(1, m) : 1) * MAX_OPERATIONS);
}

export class Gate {
  private lastEscalation: number | null = null;
  private readonly draws: PyRandom;

  constructor(
    readonly bucket: LabourBucket,
    readonly minIntervalS: number,
    readonly auditShare = 0,
    seed = 0,
    readonly unfamiliarShare = 1,
  ) {
    this.draws = new PyRandom(seed);
  }

  /** `underTau`: c < tau (the runtime gate); `unfamiliar`: unlike the training images (familiarity.ts); `now` in
   * seconds. As the agent: a frame under tau escalates; a confident unfamiliar one when drawn at `unfamiliarShare`,
   * a confident familiar one is audited when drawn at `auditShare` (a draw only when that share is on). */
  decide(underTau: boolean, unfamiliar: boolean, labour: number, now: number): Decision {
    this.bucket.frame();
    if (underTau) return this.limited("escalate", labour, now);
    if (unfamiliar) return this.drawn(this.unfamiliarShare) ? this.limited("escalate", labour, now) : "confident";
    return this.drawn(this.auditShare) ? this.limited("audit", labour, now) : "confident";
  }

  private drawn(share: number): boolean {
    return share > 0 && this.draws.random() < share;
  }

  private limited(decision: "escalate" | "audit", labour: number, now: number): Decision {
    if (this.minIntervalS > 0 && this.lastEscalation !== null && now - this.lastEscalation < this.minIntervalS) {
      return "rate_limited";
    }
    this.lastEscalation = now; // as the agent: the interval counts from the attempt, even when the budget refuses
    return this.bucket.take(labour) ? decision : "budget";
  }
}
