/**
 * Who goes to people on the phone: the runtime's gate (c < tau, hdnn.needsHuman), then the same limits as the
 * agent's `hgen.edge_agent.gating`: at most one escalation per `minIntervalS`, and the labour demand L enforced
 * with a bucket that refills L x L_max-per-frame operations each frame (capped at `windowFrames` of refill) and
 * is charged each sample's L0 = d * m, settled to what people really spent when the reply comes.
 */

import { MAX_OPERATIONS, MAX_PARTICIPANTS } from "./hdnn.js";

export type Decision = "confident" | "escalate" | "rate_limited" | "budget";

export class LabourBucket {
  readonly rate: number | null;
  readonly capacity: number | null;
  tokens = 0;
  spent = 0;

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

  settle(estimate: number, actual: number): void {
    this.tokens += estimate - actual;
  }
}

export class Gate {
  private lastEscalation: number | null = null;

  constructor(
    readonly bucket: LabourBucket,
    readonly minIntervalS: number,
  ) {}

  /** `unsure` is the runtime gate's verdict for this frame; `now` in seconds. */
  decide(unsure: boolean, labour: number, now: number): Decision {
    this.bucket.frame();
    if (!unsure) return "confident";
    if (this.minIntervalS > 0 && this.lastEscalation !== null && now - this.lastEscalation < this.minIntervalS) {
      return "rate_limited";
    }
    this.lastEscalation = now; // as the agent: the interval counts from the attempt, even when the budget refuses
    return this.bucket.take(labour) ? "escalate" : "budget";
  }
}
