/**
 * Device mode (/device): the phone is an hgen device. It loads the provisioned bundle (verified before parsing),
 * runs the H-DNN on every camera frame with onnxruntime-web (pipeline.ts), shows the model's answer, whether people
 * were asked and the fused answer. `window.hgenDevice` exposes the same state to tests and to the status telemetry
 * (state.ts). Left alone for weeks it keeps going: a bounded outbox (samples.ts), the camera and the wake lock
 * taken again (keepalive.ts), failed hot swaps retried (updates.ts). One tab or window at a time runs a device
 * (tablock.ts): another one says so and starts nothing, and can take the device over (the first one then stops all
 * it started, session.ts).
 */

import { BundleRefusedError, type Manifest } from "./bundle.js";
import { Camera } from "./camera.js";
import { Gate, LabourBucket } from "./gate.js";
import { HubLink } from "./hub.js";
import { CameraKeeper, persistStorage, ScreenLock } from "./keepalive.js";
import { Ledger, PHONE_LIMITS } from "./ledger.js";
import { Model } from "./model.js";
import { Outbox } from "./outbox.js";
import { DEADLINE_S, Pipeline } from "./pipeline.js";
import * as provision from "./provision.js";
import { MAX_PAYLOAD_BYTES } from "./requests.js";
import { Samples } from "./samples.js";
import { Session, StoppedError } from "./session.js";
import { describe, ensureRow, options, setProblem, setStatus, show, state } from "./state.js";
import { claimTab } from "./tabs.js";
import { Updater } from "./updates.js";
import { loadRefusal } from "./versions.js";

export type { DeviceState, FrameRecord, FusedRecord } from "./state.js";

const runtime = options.runtime;
// how often a failed resend is retried and samples long past their hub deadline are asked again (samples.ts `tick`)
const TICK_EVERY_MS = 10_000;

/** Opened from the single-use link: keep what it gave and continue as the plain /device page. */
function adoptProvisioning(): boolean {
  const element = document.getElementById("provisioning");
  if (element === null) return false;
  provision.save(JSON.parse(element.dataset.json ?? "{}") as provision.Provisioning);
  location.replace("/device");
  return true;
}

async function main(): Promise<void> {
  if (adoptProvisioning()) return;
  if ("serviceWorker" in navigator) void navigator.serviceWorker.register("/device/sw.js", { scope: "/device" }).catch(() => undefined);
  const device = provision.load();
  if (device === null) {
    setStatus("not provisioned", "Open the single-use link from the hub's operator page to make this phone a device.");
    return;
  }
  show("device", device.device_id);
  const session = new Session();
  if (!(await claimTab(device.device_id, session))) return; // another tab or window runs this device
  await session.start(() => run(device, session));
}

/** The device running in this page: the bundle, the outbox, the link, the camera; each start registered with the
 * session (stopped when another page takes over). */
async function run(device: provision.Provisioning, session: Session): Promise<void> {
  ensureRow("outbox", "Outbox");
  ensureRow("storage", "Storage");
  void persistStorage().then((answer) => { // else the browser may clear the outbox when storage runs low
    state.storage = answer;
    show("storage", answer);
  });
  setStatus("verifying bundle");
  let model: Model;
  let refusedOlder: string | null; // the hub's answer was older than the newest version run: refused, that one runs
  try {
    ({ model, refusedOlder } = await loadBundle(device));
  } catch (error) {
    session.check();
    const refused = error instanceof BundleRefusedError;
    setStatus(refused ? "bundle refused" : "bundle failed", describe(error));
    return;
  }
  let pipeline: Pipeline | null = null;
  let outbox: Outbox | null = null;
  session.started(async () => { // stopped last: the replies and resends under way, the engines, the outbox
    if (pipeline === null) await model.engine.release();
    else await pipeline.close();
    outbox?.close();
  });
  state.version = model.version;
  provision.rememberVersion(device.bundle_name, model.version);
  state.firstOpenBytes = [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")]
    .reduce((sum, entry) => sum + ((entry as PerformanceResourceTiming).transferSize || 0), 0);
  show("model", `${model.manifest.model.name} ${model.version} (tau ${model.manifest.tau.toFixed(3)}, ${runtime})`);
  outbox = await Outbox.open(DEADLINE_S);
  session.check();
  const running = await open(device, model, outbox);
  pipeline = running;
  session.check();
  if (device.mqtt_url) {
    const { link, updater } = connect(device, running, session);
    running.link = link;
    session.started(() => Promise.all([updater.stop(), link.stop()]));
  } else show("link", "no hub link configured (phones.mqtt_websocket_url): the model answers alone");
  const tick = setInterval(() => void running.tick().catch((error) => console.error(`outbox: ${describe(error)}`)),
    TICK_EVERY_MS);
  session.started(() => clearInterval(tick));
  session.started(() => running.halt()); // stopped after the camera: the frame under way stored, the rest dropped
  const screen = new ScreenLock((lock) => {
    state.wakeLock = lock;
  });
  const lens = new Camera(document.getElementById("camera") as HTMLVideoElement, options.canvasOnly);
  const camera = new CameraKeeper({
    start: () => lens.start({ width: options.width, height: options.height }),
    each: (events) => lens.each(events),
    stop: () => lens.stop(),
  }, {
    frame: (frame, presented) => {
      state.capture[lens.path] = (state.capture[lens.path] ?? 0) + 1;
      running.offer(frame, presented);
    },
    state: (stopped) => cameraState(stopped, camera),
  });
  session.started(() => camera.stop());
  await camera.start();
  session.check();
  const visible = () => {
    if (document.visibilityState !== "visible") return;
    void screen.request(); // released while hidden
    camera.visible(); // a hidden page's camera may have been stopped
  };
  session.started(() => {
    document.removeEventListener("visibilitychange", visible);
    return screen.release();
  });
  await screen.request();
  session.check();
  document.addEventListener("visibilitychange", visible);
  state.camera = "streaming";
  setStatus("streaming", refusedOlder === null ? null : `${refusedOlder}: refused; running ${model.version}`);
}

/** The outbox's listing loaded (no image read), and the pipeline that feeds it. */
async function open(device: provision.Provisioning, model: Model, outbox: Outbox): Promise<Pipeline> {
  const ledger = new Ledger(PHONE_LIMITS);
  ledger.load(await outbox.listing(), performance.now(), Date.now());
  const gate = new Gate(new LabourBucket(device.labour_share), device.min_escalation_interval_s,
    device.audit_share ?? 0, device.audit_seed ?? 0, device.unfamiliar_share ?? 1);
  let pipeline: Pipeline | null = null;
  const maxPayload = device.max_payload_bytes ?? MAX_PAYLOAD_BYTES;
  const samples = new Samples(outbox, ledger, () => pipeline?.link ?? null, {
    refund: (labour) => gate.bucket.settle(labour, 0),
    settled: (entry, why) => pipeline?.settled(entry, why),
  }, maxPayload);
  Object.assign(state.outbox, { maxSamples: ledger.limits.maxSamples, maxBytes: ledger.limits.maxBytes,
    maxPayloadBytes: maxPayload });
  pipeline = new Pipeline(model, device, gate, samples, null);
  pipeline.counted();
  return pipeline;
}

/** The camera stopped (why) or streams again (null): the status says so, as the error line. */
function cameraState(stopped: string | null, camera: CameraKeeper): void {
  state.camera = stopped ?? "streaming";
  state.cameraRestarts = camera.restarts;
  if (stopped !== null) {
    setStatus("camera stopped", state.problems.status ?? null);
    setProblem("camera", `camera stopped: ${stopped}`);
  } else {
    if (state.status === "camera stopped") setStatus("streaming", state.problems.status ?? null);
    setProblem("camera", null);
  }
}

function connect(device: provision.Provisioning, pipeline: Pipeline,
  session: Session): { link: HubLink; updater: Updater } {
  const updater = new Updater({
    running: () => pipeline.model.version,
    install: (version) => hotSwap(device, pipeline, version, session),
    installed: () => setProblem("update", null),
    failed: (version, error, retryMs) => {
      if (session.stopped) return; // taken over while it was downloading: no update to report
      state.updateFailures += 1;
      setProblem("update", `update ${version} refused: ${describe(error)}`
        + (retryMs === null ? "" : `; trying again in ${Math.round(retryMs / 1000)} s`));
    },
  });
  const link = new HubLink(device, {
    onConnect: () => {
      state.connected = true;
      show("link", "connected");
      void pipeline.resend().catch((error) => console.error(`resend: ${describe(error)}`));
    },
    onOffline: () => {
      if (session.stopped) return; // taken over: the page says so
      state.connected = false;
      show("link", "offline (samples wait in the outbox)");
    },
    onReply: (reply) => void pipeline.reply(reply), // queued: one at a time, errors logged (replies.ts)
    onUpdate: (update) => {
      if (update.bundleName === device.bundle_name) updater.announce(update.version);
    },
  });
  return { link, updater };
}

/** Where the hub serves a bundle: `/device/bundle/<name>` (its newest), or one version of it. */
function bundleUrl(name: string, version?: string): string {
  const base = `/device/bundle/${encodeURIComponent(name)}`;
  return version === undefined ? base : `${base}/${encodeURIComponent(version)}`;
}

/** The provisioned bundle, as the hub serves it (`/device/bundle/<name>`): signed with the pinned key, of the
 * provisioned model, and not older than the newest version this phone has run (localStorage). When the hub (or the
 * service worker's copy, offline) gives an older one, the newest version run is asked for by name; if that fails
 * too the older one is refused, and the page says why. */
async function loadBundle(device: provision.Provisioning): Promise<{ model: Model; refusedOlder: string | null }> {
  const headers = { Authorization: `Bearer ${provision.bearer(device)}` };
  const key = provision.fromBase64(device.public_key);
  const highest = provision.highestVersion(device.bundle_name);
  const seen: { older: string | null } = { older: null }; // the first answer was older than `highest`
  const check = (manifest: Manifest) => {
    const refusal = loadRefusal(manifest, device.bundle_name, highest);
    if (refusal?.older) seen.older = refusal.message;
    if (refusal !== null) throw new BundleRefusedError(refusal.message);
  };
  try {
    return { model: await Model.fetch(bundleUrl(device.bundle_name), headers, key, runtime, check), refusedOlder: null };
  } catch (error) {
    const older = seen.older;
    if (older === null || highest === null) throw error;
    console.warn(`${older}: refused; asking for ${highest}`);
    try {
      return { model: await Model.fetch(bundleUrl(device.bundle_name, highest), headers, key, runtime, check),
        refusedOlder: older };
    } catch (again) {
      throw new BundleRefusedError(`${older}; ${highest} itself: ${again instanceof Error ? again.message : again}. `
        + "Publish a newer version, or onboard the phone again to run an older one");
    }
  }
}

/** Download, verify and open the new version beside the running one, then switch between two frames. */
async function hotSwap(device: provision.Provisioning, pipeline: Pipeline, version: string,
  session: Session): Promise<void> {
  const running = pipeline.model.manifest.model.name;
  const next = await Model.fetch(bundleUrl(device.bundle_name, version),
    { Authorization: `Bearer ${provision.bearer(device)}` }, provision.fromBase64(device.public_key), runtime,
    (manifest) => { // an older signed bundle, or another model signed with the same key
      if (manifest.model.name !== running || manifest.model.version !== version) {
        throw new BundleRefusedError(`the bundle is signed as ${manifest.model.name} ${manifest.model.version}, not as ${running} ${version}`);
      }
    });
  if (session.stopped) { // taken over meanwhile: the page runs no model any more
    await next.engine.release();
    throw new StoppedError();
  }
  pipeline.swap(next);
}

void main().catch((error) => {
  if (!(error instanceof StoppedError)) setStatus("failed", describe(error));
});
