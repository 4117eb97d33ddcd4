/**
 * The phone's status names it as an agent (src/agent.ts `stamped`, which src/hub.ts sends every status through): a hub upgraded ahead of its devices tells a page
 * cached from before the upgrade (no revision) from a current one, as it does for hgen-agent.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { hgen } from "../gen/hub_pb.js";
import { AGENT_VERSION, PROTOCOL_REVISION, stamped } from "../src/agent.js";

const pb = hgen.v1;

test("every status the page sends names its agent and protocol revision, on the wire", () => {
  for (const status of [{ deviceId: "phone-1", online: false }, { deviceId: "phone-1", online: true, pendingSamples: 3 }]) {
    const sent = pb.DeviceStatus.decode(pb.DeviceStatus.encode(stamped(status)).finish());
    assert.equal(sent.protocolRevision, PROTOCOL_REVISION);
    assert.equal(sent.agentVersion, AGENT_VERSION);
    assert.equal(sent.deviceId, "phone-1");
    assert.equal(sent.online, status.online);
  }
  assert.equal(stamped({ deviceId: "x", agentVersion: "kept" }).agentVersion, "kept");
});
