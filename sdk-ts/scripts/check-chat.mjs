// Fails when the checked-in chat page (crates/api/assets/chat/) is not what chat/ and src/
// build to today: someone changed the page or the SDK without running `npm run build:chat`.
// Type-checks chat/, builds in memory (no temp dir needed) and compares byte for byte.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ASSETS, FILES, buildChat } from "./build-chat.mjs";

// esbuild strips types without checking them: the page's types are checked here.
const sdk = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = spawnSync(join(sdk, "node_modules", ".bin", "tsc"), ["-p", "chat"], { cwd: sdk, stdio: "inherit" });
if (tsc.status !== 0) {
  console.error("the chat page does not type-check (tsc -p chat)");
  process.exit(1);
}

const fresh = await buildChat();
const problems = [];
for (const name of FILES) {
  const path = join(ASSETS, name);
  if (!existsSync(path)) problems.push(`${name} is missing`);
  else if (readFileSync(path, "utf8") !== fresh[name]) problems.push(`${name} differs`);
}
for (const name of existsSync(ASSETS) ? readdirSync(ASSETS) : []) {
  if (!FILES.includes(name)) problems.push(`${name} is not built by build-chat.mjs`);
}
if (problems.length > 0) {
  console.error(`crates/api/assets/chat is stale (${problems.join("; ")}): run npm run build:chat and commit the result`);
  process.exit(1);
}
console.log("crates/api/assets/chat matches chat/ and src/");
