// PUSH_TOKEN (cmd 25) and NOTIFICATION_ACK (cmd 26) against a real server without a push
// provider configured: registering is refused with INVALID_ARGUMENT (the connection stays
// usable), listing is empty, receipts for unknown notifications match nothing. A server that
// answers UNKNOWN_CMD (built before these commands) makes the tests SKIP, never pass.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client, LonglinkError } from "../dist/index.js";
import { startServer, uniq } from "./helpers.mjs";

let server;
const clients = [];

before(async () => {
  server = await startServer({ name: "push" });
});

after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

async function connect(uid) {
  const c = new Client({ url: server.wsUrl, appcode: 129, token: await server.token(129, uid), deviceId: `web-${uid}`, requestTimeoutMs: 5000 });
  clients.push(c);
  await c.connect();
  return c;
}

const NOT_SERVED = "the server answers UNKNOWN_CMD: PUSH_TOKEN / NOTIFICATION_ACK are not served by this build";

test("push tokens: an unknown provider is INVALID_ARGUMENT, the client stays connected", async (t) => {
  const c = await connect(uniq("alice"));
  let tokens;
  try {
    tokens = await c.pushTokens();
  } catch (err) {
    if (err instanceof LonglinkError && err.code === "UNKNOWN_CMD") return t.skip(NOT_SERVED);
    throw err;
  }
  assert.deepEqual(tokens, []);
  await assert.rejects(c.registerPushToken("no-such-provider", "tok", { platform: "web" }), (err) => {
    assert.ok(err instanceof LonglinkError);
    assert.equal(err.code, "INVALID_ARGUMENT");
    return true;
  });
  assert.equal(c.state, "connected");
  assert.deepEqual(await c.removePushToken(), []);
  assert.equal(await c.ackNotifications([12345n, 67890n]), 0);
});
