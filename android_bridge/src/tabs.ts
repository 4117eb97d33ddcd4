/**
 * The page's side of the single-tab lock (tablock.ts): a page whose device runs in another tab or window says so,
 * starts nothing (no camera, no hub link, no outbox) and offers to take the device over; a page taken over stops
 * everything it started (session.ts) and says so; a browser without Web Locks runs unguarded, and says that too.
 */

import { type Session } from "./session.js";
import { ensureRow, notice, setProblem, setStatus, show, state } from "./state.js";
import { type Claim, type Locks, TabLock } from "./tablock.js";

// sessionStorage (this tab's): its button asked to take the device over, then reloaded the page
const TAKE_OVER = "hgen-take-over";
const ELSEWHERE = "This device already runs in another tab or window. This one does nothing (no camera, no hub "
  + "link, no outbox): close it, or run the device here instead (the other one then stops).";
const TAKEN = "This device was taken over by another tab or window: this one stopped its camera, its hub link "
  + "and its outbox.";
const UNGUARDED = "unguarded: this browser has no Web Locks API, so another tab or window of this device would run "
  + "beside this one (the hub would keep switching between them): open it in one only";

/** Whether this page runs the device (else it says which tab or window does, and offers to take it over). */
export async function claimTab(deviceId: string, session: Session): Promise<boolean> {
  const lock = new TabLock(deviceId, (navigator as { locks?: Locks }).locks, { lost: () => takenOver(session) });
  let claim: Claim;
  try {
    claim = await lock.claim(takeOverAsked());
  } catch (error) { // the browser refused the lock itself (a SecurityError: an opaque origin)
    console.warn(`single-tab lock refused (${(error as { name?: string }).name ?? error})`);
    claim = "unguarded";
  }
  if (claim === "busy" || claim === "lost") {
    elsewhere(claim === "lost" ? "taken over" : "another tab");
    return false;
  }
  state.tab = claim === "held" ? "running" : "unguarded";
  if (claim === "unguarded") {
    console.warn(`single-tab lock ${UNGUARDED}`);
    ensureRow("tabs", "Tabs");
    show("tabs", UNGUARDED);
  }
  return true;
}

/** This tab's button: the page again, taking the device over from the page that runs it. */
function takeOver(): void {
  sessionStorage.setItem(TAKE_OVER, "1");
  location.reload();
}

function takeOverAsked(): boolean {
  const asked = sessionStorage.getItem(TAKE_OVER) !== null;
  sessionStorage.removeItem(TAKE_OVER);
  return asked;
}

/** Another tab or window runs the device (or took it over from this one before it ran): nothing runs here. */
function elsewhere(tab: "another tab" | "taken over"): void {
  state.tab = tab;
  setStatus(tab === "taken over" ? "taken over" : "running in another tab");
  notice(tab === "taken over" ? TAKEN : ELSEWHERE, { label: "Run this device here", press: takeOver });
  const video = document.getElementById("camera");
  if (video !== null) video.hidden = true;
}

/** Another tab or window took the device over: everything this page started stops (the run lock, which that page
 * waits for, is let go when this resolves). */
async function takenOver(session: Session): Promise<void> {
  console.info("another tab or window took this device over: stopping");
  elsewhere("taken over");
  await session.stop();
  state.camera = "stopped: taken over";
  state.connected = false;
  setProblem("camera", null);
  show("link", "stopped: another tab or window runs this device");
}
