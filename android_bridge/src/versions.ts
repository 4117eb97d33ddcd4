/**
 * Which bundle version is newer: the order of `hgen.runtime.bundle.manifest.version_key` (major.minor.patch; a
 * version that is not semantic sorts first), checked against its golden vectors. An update notice is not signed,
 * so the phone follows only a newer version of the model it runs, as the Python agent does.
 */

export function versionKey(version: string): [number, number, number] {
  const match = /^(\d+)\.(\d+)\.(\d+)/.exec(version);
  return match ? [Number(match[1]), Number(match[2]), Number(match[3])] : [-1, -1, -1];
}

/** True when `candidate` sorts after `running`. */
export function isNewer(candidate: string, running: string): boolean {
  const [a, b] = [versionKey(candidate), versionKey(running)];
  for (let i = 0; i < 3; i++) {
    if (a[i] !== b[i]) return a[i] > b[i];
  }
  return false;
}

/** Whether a signed manifest's model (its name, built for `target`) is the bundle the hub records as `bundleName`:
 * the model's name, or `<name>-<target>` for a target other than the model's first (the hub's
 * `hgen.hub.retrain.publish.bundle_name_for`). */
export function namesBundle(name: string, target: string, bundleName: string): boolean {
  return bundleName === name || bundleName === `${name}-${target}`;
}

/** Why a bundle opened from `/device/bundle/<name>` (page open, reload) must not run, or null: it must be the
 * provisioned model (`bundleName`: the hub's answer is not signed, and another model signed with the same key
 * would run under this device's name), and not older than `highest`, the newest version this phone has run
 * (a reload answered with an older signed bundle would undo a hot swap; the hot swap path refuses both too).
 * `older` tells a refusal the phone may meet by asking for `highest` itself. */
export function loadRefusal(manifest: { model: { name: string; version: string }; target: string },
  bundleName: string, highest: string | null): { older: boolean; message: string } | null {
  const { name, version } = manifest.model;
  if (!namesBundle(name, manifest.target, bundleName)) {
    return { older: false, message: `the bundle is signed as ${name} ${version} (${manifest.target}), but this device `
      + `runs ${bundleName}` };
  }
  if (highest !== null && isNewer(highest, version)) {
    return { older: true, message: `the bundle is ${name} ${version}, older than ${highest} this phone already ran` };
  }
  return null;
}
