// The README's chat bot is real code: this runs its code block against a server and talks to it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, resolve } from "node:path";
import { Client } from "../dist/index.js";
import { startServer, nextEvent, uniq } from "./helpers.mjs";

const sdk = resolve(dirname(fileURLToPath(import.meta.url)), "..");
let server;
let bot;

before(async () => {
  server = await startServer({ name: "readme" });
});

after(async () => {
  bot?.kill("SIGKILL");
  await server?.stop();
});

test("README: the 15-line chat bot answers a message", async () => {
  const readme = readFileSync(resolve(sdk, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## A chat bot in 15 lines"));
  const code = section.slice(section.indexOf("```js\n") + 6, section.indexOf("```\n", section.indexOf("```js\n") + 6));
  assert.ok(code.split("\n").filter((l) => l.trim()).length <= 15, "at most 15 lines");
  // Inside the package directory, so `import "@longlink/sdk"` resolves to this package itself.
  mkdirSync(resolve(sdk, "test-artifacts"), { recursive: true });
  const file = resolve(sdk, "test-artifacts", `readme-bot-${process.pid}.mjs`);
  writeFileSync(file, code);

  const botUid = uniq("helpbot");
  const flags = Number(process.versions.node.split(".")[0]) < 22 ? ["--experimental-websocket"] : [];
  bot = spawn(process.execPath, [...flags, "--no-warnings", file], {
    env: { ...process.env, LONGLINK_URL: server.wsUrl, LONGLINK_TOKEN: await server.token(132, botUid) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  await new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`bot not ready: ${out}`)), 10_000);
    bot.stdout.on("data", (d) => {
      out += d;
      if (out.includes("bot: ready as")) {
        clearTimeout(timer);
        resolveReady();
      }
    });
  });

  const uid = uniq("alice");
  const alice = await Client.connect({ url: server.wsUrl, appcode: 129, token: await server.token(129, uid), deviceId: "d" });
  try {
    const reply = nextEvent(alice, "message");
    await alice.sendText({ appcode: 132, uid: botUid }, "hello bot");
    const [m] = await reply;
    assert.deepEqual(m.content, { type: "text", text: "you said: hello bot" });
    assert.deepEqual(m.from, { appcode: 132, uid: botUid });
  } finally {
    alice.close();
  }
});
