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
