/**
 * What this page tells the hub about itself as a device's agent: hgen.protos.PROTOCOL_REVISION, which it implements
 * (a Python test reads it here), on every status, so the hub tells a page cached from before an upgrade (which
 * names none) from a current one, as it does for hgen-agent.
 */

import { type hgen } from "../gen/hub_pb.js";

export const PROTOCOL_REVISION = 1;
export const AGENT_VERSION = "phone page";

/** `status` naming this page as its agent (fields it sets are kept). */
export function stamped(status: hgen.v1.IDeviceStatus): hgen.v1.IDeviceStatus {
  return { agentVersion: AGENT_VERSION, protocolRevision: PROTOCOL_REVISION, ...status };
}
