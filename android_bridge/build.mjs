// Builds android_bridge (all git-ignored): the device page's script and service worker, the wasm of onnxruntime-web
// and LiteRT.js into ../hub/web/device_app/ (package data of hgen.hub.web, so an installed hub serves them without
// this checkout), the protobuf code generated from protos/hub.proto into gen/, the golden-vector tests into
// dist/test and the unit tests (test/*.test.ts but golden) into dist/unit. The service worker is built last, with
// a hash of every other built file in it (its cache's name): a new build is a new worker, which drops the old cache.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";

const out = "dist";
const app = "../hub/web/device_app";
rmSync(app, { recursive: true, force: true });
mkdirSync(app, { recursive: true });
mkdirSync("gen", { recursive: true });
// protos/hub.proto -> static protobuf code (no eval, so the page's CSP holds) and its TypeScript declarations
const pbjs = ["-t", "static-module", "-w", "es6", "--no-verify", "--no-convert", "--no-delimited",
  "-o", "gen/hub_pb.js", "../protos/hub.proto"];
execFileSync("node_modules/.bin/pbjs", pbjs, { stdio: "inherit" });
execFileSync("node_modules/.bin/pbts", ["-o", "gen/hub_pb.d.ts", "gen/hub_pb.js"], { stdio: "inherit" });
const common = { bundle: true, format: "esm", target: "es2022", logLevel: "warning", legalComments: "none" };
rmSync(`${out}/unit`, { recursive: true, force: true }); // no stale tests
await build({ ...common, entryPoints: ["test/golden.test.ts"], outdir: `${out}/test`, platform: "node",
  outExtension: { ".js": ".mjs" } });
const units = readdirSync("test").filter((f) => f.endsWith(".test.ts") && f !== "golden.test.ts").map((f) => `test/${f}`);
await build({ ...common, entryPoints: units, outdir: `${out}/unit`, platform: "node", outExtension: { ".js": ".mjs" } });
await build({ ...common, entryPoints: { device: "src/device.ts", onboard: "src/onboard.ts" },
  outdir: app, platform: "browser", minify: true, sourcemap: false });
const litert = "node_modules/@litertjs/core/wasm";
for (const name of readdirSync(litert).filter((f) => /^litert_wasm_(compat_)?internal\.(js|wasm)$/.test(f))) {
  copyFileSync(`${litert}/${name}`, `${app}/${name}`);
}
for (const name of readdirSync("static")) copyFileSync(`static/${name}`, `${app}/${name}`);
const ort = "node_modules/onnxruntime-web/dist";
for (const name of readdirSync(ort).filter((f) => /^ort-wasm-simd-threaded\.(wasm|mjs)$/.test(f))) {
  copyFileSync(`${ort}/${name}`, `${app}/${name}`);
}
// the build's name: a hash of every file the page loads (the worker itself aside)
const hash = createHash("sha256");
for (const name of readdirSync(app).sort()) hash.update(name).update("\0").update(readFileSync(`${app}/${name}`));
await build({ ...common, entryPoints: { sw: "src/sw.ts" }, outdir: app, platform: "browser", minify: true,
  sourcemap: false, define: { __HGEN_BUILD__: JSON.stringify(hash.digest("hex").slice(0, 16)) } });
