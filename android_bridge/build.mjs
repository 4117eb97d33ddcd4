// Builds android_bridge into dist/ (git-ignored): the device page's script and service worker, the wasm of
// onnxruntime-web, the protobuf code generated from protos/hub.proto, and the node tests.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync } from "node:fs";

const out = "dist";
mkdirSync(`${out}/static`, { recursive: true });
mkdirSync("gen", { recursive: true });
// protos/hub.proto -> static protobuf code (no eval, so the page's CSP holds) and its TypeScript declarations
const pbjs = ["-t", "static-module", "-w", "es6", "--no-verify", "--no-convert", "--no-delimited",
  "-o", "gen/hub_pb.js", "../protos/hub.proto"];
execFileSync("node_modules/.bin/pbjs", pbjs, { stdio: "inherit" });
execFileSync("node_modules/.bin/pbts", ["-o", "gen/hub_pb.d.ts", "gen/hub_pb.js"], { stdio: "inherit" });
const common = { bundle: true, format: "esm", target: "es2022", logLevel: "warning", legalComments: "none" };
await build({ ...common, entryPoints: ["test/golden.test.ts"], outdir: `${out}/test`, platform: "node",
  outExtension: { ".js": ".mjs" } });
await build({ ...common, entryPoints: { device: "src/device.ts", onboard: "src/onboard.ts", sw: "src/sw.ts" },
  outdir: `${out}/static`, platform: "browser", minify: true, sourcemap: false });
const litert = "node_modules/@litertjs/core/wasm";
for (const name of readdirSync(litert).filter((f) => /^litert_wasm_(compat_)?internal\.(js|wasm)$/.test(f))) {
  copyFileSync(`${litert}/${name}`, `${out}/static/${name}`);
}
for (const name of readdirSync("static")) copyFileSync(`static/${name}`, `${out}/static/${name}`);
const ort = "node_modules/onnxruntime-web/dist";
for (const name of readdirSync(ort).filter((f) => /^ort-wasm-simd-threaded\.(wasm|mjs)$/.test(f))) {
  copyFileSync(`${ort}/${name}`, `${out}/static/${name}`);
}
