// Builds android_bridge into dist/ (git-ignored): the device page's script and service worker, the wasm of
// onnxruntime-web, the protobuf code generated from protos/hub.proto, and the node tests.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readdirSync } from "node:fs";

const out = "dist";
mkdirSync(`${out}/static`, { recursive: true });
const common = { bundle: true, format: "esm", target: "es2022", logLevel: "warning", legalComments: "none" };
await build({ ...common, entryPoints: ["test/golden.test.ts"], outdir: `${out}/test`, platform: "node",
  outExtension: { ".js": ".mjs" } });
await build({ ...common, entryPoints: { device: "src/device.ts", onboard: "src/onboard.ts", sw: "src/sw.ts" },
  outdir: `${out}/static`, platform: "browser", minify: true, sourcemap: false });
for (const name of readdirSync("static")) copyFileSync(`static/${name}`, `${out}/static/${name}`);
const ort = "node_modules/onnxruntime-web/dist";
for (const name of readdirSync(ort).filter((f) => /^ort-wasm-simd-threaded\.(wasm|mjs)$/.test(f))) {
  copyFileSync(`${ort}/${name}`, `${out}/static/${name}`);
}
