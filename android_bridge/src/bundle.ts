/**
 * Verify-then-load on the phone, in the order of `hgen.runtime.bundle.loader`: the archive's first two members
 * are the manifest and its signature; the signature (Ed25519, WebCrypto) is checked against the pinned key on
 * the manifest's raw bytes before they are parsed, then every listed file's size and SHA-256 before any engine
 * sees it. A member the manifest does not list, or a listed file that is missing, refuses the whole bundle.
 */

import type { Familiarity } from "./familiarity.js";
import type { Quant } from "./quantize.js";
import { type InputSpec } from "./preprocess.js";

const MAGIC = [0x48, 0x47, 0x53, 0x49, 0x47, 0x00, 0x01, 0x00]; // "HGSIG\0\1\0"
const FINGERPRINT_BYTES = 32;
const SIGNATURE_BYTES = 64;
const MAX_MANIFEST_BYTES = 1 << 20;

export class BundleRefusedError extends Error {
  override name = "BundleRefusedError";
}

export interface FileEntry {
  file: string;
  sha256: string;
  size: number;
}

export interface WebEntry extends FileEntry {
  runtime: "onnxruntime-web" | "litert-js";
  format: "onnx" | "tflite";
  io_dtype?: "float32" | "uint8"; // uint8: LiteRT.js running an int8 bundle, (de)quantised by the page
  input_quantization?: Quant | null;
  output_quantization?: Quant | null;
}

export interface Manifest {
  schema_version: number;
  model: { name: string; version: string };
  kind: string;
  target: string;
  engines: FileEntry[];
  web?: WebEntry[];
  input: InputSpec;
  output_shape: number[];
  labels: string[];
  tau: number;
  temperature: number;
  lambda: number;
  confidence: Record<string, number>;
  familiarity?: Familiarity | null; // absent or null: a bundle without the familiarity check
}

export interface VerifiedBundle {
  manifest: Manifest;
  web: WebEntry;
  model: Uint8Array;
  bytes: number;
}

interface Member {
  name: string;
  data: Uint8Array;
}

function text(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}

function field(header: Uint8Array, offset: number, length: number): string {
  const raw = header.subarray(offset, offset + length);
  const end = raw.indexOf(0);
  return text(end < 0 ? raw : raw.subarray(0, end));
}

/** Members of a POSIX/PAX tar, in order (PAX headers are read for long names; other types are refused). */
export function* tarMembers(tar: Uint8Array): Generator<Member> {
  let offset = 0;
  let paxName: string | null = null;
  while (offset + 512 <= tar.length) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) return;
    const size = parseInt(field(header, 124, 12).trim() || "0", 8);
    const type = String.fromCharCode(header[156] || 0x30);
    const start = offset + 512;
    if (!Number.isFinite(size) || size < 0 || start + size > tar.length) throw new BundleRefusedError("archive is truncated");
    const data = tar.subarray(start, start + size);
    offset = start + Math.ceil(size / 512) * 512;
    if (type === "x") {
      const found = /\d+ path=([^\n]*)\n/.exec(text(data));
      paxName = found ? found[1] : null;
      continue;
    }
    if (type !== "0") throw new BundleRefusedError(`unexpected archive member type '${type}'`);
    const prefix = field(header, 345, 155);
    const name = paxName ?? (prefix ? `${prefix}/${field(header, 0, 100)}` : field(header, 0, 100));
    paxName = null;
    yield { name, data };
  }
}

/** The most a bundle archive may hold once decompressed. The page decompresses it whole before the signature is
 * checked (the agent streams it, checking each member's size against the signed manifest before writing it), so
 * a small archive of zeros must not fill the phone's memory first: a phone's web model is a few MB, a large
 * classifier's well under this. */
export const MAX_ARCHIVE_BYTES = 256 * 1024 * 1024;

/** The gzip archive decompressed, refused as soon as it passes `limit` bytes. */
export async function gunzip(bytes: Uint8Array, limit: number = MAX_ARCHIVE_BYTES): Promise<Uint8Array> {
  const reader = new Blob([bytes as BlobPart]).stream().pipeThrough(new DecompressionStream("gzip")).getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > limit) {
        void reader.cancel().catch(() => undefined);
        throw new BundleRefusedError(`bundle archive decompresses to more than ${limit} bytes (${bytes.length} `
          + "compressed): refused before its signature is checked");
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof BundleRefusedError) throw error;
    throw new BundleRefusedError(`bundle archive is truncated or corrupt: ${error}`);
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

export async function sha256Hex(data: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data as BufferSource));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** The pinned Ed25519 key (32 raw bytes) as a WebCrypto key. */
export async function importPinnedKey(raw: Uint8Array): Promise<CryptoKey> {
  if (raw.length !== 32) throw new BundleRefusedError(`pinned key must be 32 raw bytes, got ${raw.length}`);
  return crypto.subtle.importKey("raw", raw as BufferSource, { name: "Ed25519" }, false, ["verify"]);
}

/** Raise unless `signature` (hgen's signature file) signs `message` with the pinned key. */
export async function verifySignature(message: Uint8Array, signature: Uint8Array, keyRaw: Uint8Array): Promise<void> {
  const fixed = MAGIC.length + FINGERPRINT_BYTES + SIGNATURE_BYTES;
  if (signature.length !== fixed || !MAGIC.every((b, i) => signature[i] === b)) {
    throw new BundleRefusedError(`signature file is malformed (${signature.length} bytes, expected ${fixed})`);
  }
  const keyId = signature.subarray(MAGIC.length, MAGIC.length + FINGERPRINT_BYTES);
  const expected = new Uint8Array(await crypto.subtle.digest("SHA-256", keyRaw as BufferSource));
  if (!equal(keyId, expected)) throw new BundleRefusedError("bundle is signed by a key other than the pinned one");
  const key = await importPinnedKey(keyRaw);
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, signature.subarray(fixed - SIGNATURE_BYTES) as BufferSource,
    message as BufferSource);
  if (!ok) throw new BundleRefusedError("manifest signature does not match: the manifest was modified after signing");
}

function parseManifest(bytes: Uint8Array): Manifest {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(text(bytes));
  } catch (error) {
    throw new BundleRefusedError(`manifest is not valid JSON: ${error}`);
  }
  if (manifest.schema_version !== 1) throw new BundleRefusedError(`unsupported manifest schema ${manifest.schema_version}`);
  if (manifest.kind !== "cnn") throw new BundleRefusedError(`this phone app runs H-CNN bundles, not '${manifest.kind}'`);
  return manifest;
}

/** Verify a `.hgb` archive (gzip tar) and return its manifest and the browser model's bytes. */
export async function verifyArchive(archive: Uint8Array, keyRaw: Uint8Array,
  runtime: WebEntry["runtime"] = "onnxruntime-web", limit: number = MAX_ARCHIVE_BYTES): Promise<VerifiedBundle> {
  const members = tarMembers(await gunzip(archive, limit));
  const first = members.next();
  const second = members.next();
  if (first.done || second.done || first.value.name !== "manifest.json" || second.value.name !== "manifest.sig") {
    throw new BundleRefusedError("archive must start with manifest.json and manifest.sig");
  }
  if (first.value.data.length > MAX_MANIFEST_BYTES) throw new BundleRefusedError("manifest is too large");
  await verifySignature(first.value.data, second.value.data, keyRaw);
  const manifest = parseManifest(first.value.data);
  const web = (manifest.web ?? []).find((entry) => entry.runtime === runtime);
  if (web === undefined) throw new BundleRefusedError(`bundle has no model for ${runtime} (compile it with that web model)`);
  const expected = new Map<string, FileEntry>([...manifest.engines, ...(manifest.web ?? [])].map((e) => [e.file, e]));
  let model: Uint8Array | null = null;
  for (const member of members) {
    const entry = expected.get(member.name);
    if (entry === undefined) throw new BundleRefusedError(`unexpected archive member '${member.name}' (not listed once in the manifest)`);
    expected.delete(member.name);
    const digest = await sha256Hex(member.data);
    if (member.data.length !== entry.size || digest !== entry.sha256) {
      throw new BundleRefusedError(`${entry.file}: size/SHA-256 differ from the signed manifest: the file was modified`);
    }
    if (member.name === web.file) model = member.data;
  }
  if (expected.size > 0 || model === null) throw new BundleRefusedError(`archive is missing ${[...expected.keys()].join(", ")}`);
  return { manifest, web, model, bytes: archive.length };
}
