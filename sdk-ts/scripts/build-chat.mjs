// npm run build:chat: bundles the browser chat page (chat/main.ts and the SDK it imports from
// src/) with the pinned esbuild into crates/api/assets/chat/ (index.html, chat.js, chat.css),
// which the server embeds and serves at /chat. The output is checked in, so it must be the
// same bytes on every machine: no source maps, no absolute paths, no timestamps.
// `node scripts/build-chat.mjs DIR` writes into DIR instead (check-chat.mjs uses that).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const sdk = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const ASSETS = resolve(sdk, "..", "crates", "api", "assets", "chat");
export const FILES = ["index.html", "chat.js", "chat.css"];

/** Builds the page; returns { file name: contents } without writing anything. */
export async function buildChat() {
  const common = {
    absWorkingDir: sdk,
    bundle: true,
    write: false,
    minify: true,
    legalComments: "none",
    charset: "utf8",
    sourcemap: false,
    logLevel: "warning",
  };
  const js = await esbuild.build({
    ...common,
    entryPoints: ["chat/main.ts"],
    format: "iife",
    target: ["es2022"],
    platform: "browser",
  });
  const css = await esbuild.build({
    ...common,
    entryPoints: ["chat/chat.css"],
    target: ["chrome110", "firefox110", "safari16"],
  });
  const only = (result) => {
    if (result.outputFiles.length !== 1) throw new Error("esbuild: expected one output file");
    return result.outputFiles[0].text;
  };
  return {
    "index.html": readFileSync(join(sdk, "chat", "index.html"), "utf8"),
    "chat.js": only(js),
    "chat.css": only(css),
  };
}

async function main() {
  const out = process.argv[2] ? resolve(process.argv[2]) : ASSETS;
  const files = await buildChat();
  mkdirSync(out, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(out, name), text);
  console.log(`chat page written to ${out} (${FILES.join(", ")})`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
