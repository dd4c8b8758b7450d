// The package runs in browsers (no Node import anywhere in the bundle), speaks the exact bytes
// of docs/protocol.md §10, and leaves nothing behind that would keep Node from exiting.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, resolve } from "node:path";
import { build } from "esbuild";
import { create, toBinary } from "@bufbuild/protobuf";
import { encodeFrame, decodeFrame, Cmd, FrameType } from "../dist/frame.js";
import { LoginRequestSchema } from "../dist/gen/longlink_pb.js";
import { startServer, uniq } from "./helpers.mjs";

const sdk = resolve(dirname(fileURLToPath(import.meta.url)), "..");
let server;

before(async () => {
  server = await startServer({ name: "platform" });
});

after(async () => {
  await server?.stop();
});

test("browser: the package bundles for the browser with no Node built-in", async () => {
  const result = await build({
    entryPoints: [resolve(sdk, "dist/index.js")],
    bundle: true,
    platform: "browser",
    format: "esm",
    write: false,
    logLevel: "silent",
    metafile: true,
  });
  const inputs = Object.keys(result.metafile.inputs);
  assert.ok(inputs.some((i) => i.includes("@bufbuild/protobuf")), "protobuf runtime bundled");
  assert.ok(!inputs.some((i) => i.startsWith("node:")), inputs.join(", "));
  assert.doesNotMatch(result.outputFiles[0].text, /\brequire\(|from "node:/);
  // Our own modules touch no Node global (the protobuf runtime probes `process` behind typeof).
  for (const input of inputs.filter((i) => i.startsWith("dist/"))) {
    assert.doesNotMatch(readFileSync(resolve(sdk, input), "utf8"), /\bprocess\.|\bBuffer\b|\brequire\(/, input);
  }
});

test("frame: the LOGIN request of protocol §10.2, byte for byte", () => {
  const token =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImFwcGNvZGUiOjEyOSwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3OTUwMDAwMDB9.i4cLAfMB_yDjAUzShoCoo4UmLr5mZrq5H_uBu14rSlg";
  const body = toBinary(
    LoginRequestSchema,
    create(LoginRequestSchema, { token, appcode: 129, deviceId: "phone", clientVersion: "demo/1.0" }),
  );
  const bytes = encodeFrame({ logId: 0n, seq: 1, cmd: Cmd.LOGIN, type: FrameType.Request, body });
  assert.equal(bytes.length, 212);
  const hex = Buffer.from(bytes).toString("hex");
  assert.equal(hex.slice(0, 48), "4c4c01000000000000000000000000010001000000000" + "0bc");
  assert.equal(hex.slice(48, 54), "0aa501");
  assert.equal(hex.slice(-40), "1081011a0570686f6e6532086465" + "6d6f2f312e30");
  const back = decodeFrame(bytes);
  assert.deepEqual({ ...back, body: back.body.length }, { flags: 0, logId: 0n, seq: 1, cmd: 1, type: 0, body: 188 });
});

test("frame: the C2C response of protocol §10.4 decodes", () => {
  const bytes = Buffer.from(
    "4c4c0100000000000" + "75bcd1500000002001101000000001108808080c9bd9ea5901a1092fbbccaa034",
    "hex",
  );
  const frame = decodeFrame(new Uint8Array(bytes));
  assert.equal(frame.logId, 123456789n);
  assert.equal(frame.seq, 2);
  assert.equal(frame.cmd, Cmd.C2C);
  assert.equal(frame.type, FrameType.Response);
  assert.equal(frame.body.length, 17);
  assert.throws(() => decodeFrame(new Uint8Array(bytes.subarray(0, 30))), /body_len/);
  const bad = new Uint8Array(bytes);
  bad[0] = 0x4d;
  assert.throws(() => decodeFrame(bad), /magic/);
});

test("node: a process that connects, sends and closes exits by itself (no timer left)", async () => {
  const uid = uniq("exit");
  const token = await server.token(129, uid);
  const script = `
    import { Client } from ${JSON.stringify(resolve(sdk, "dist/index.js"))};
    const c = await Client.connect({ url: ${JSON.stringify(server.wsUrl)}, appcode: 129, token: ${JSON.stringify(token)}, deviceId: "d" });
    await c.sendText({ appcode: 129, uid: ${JSON.stringify(uid)} }, "to myself");
    c.typing({ appcode: 129, uid: "x" });
    c.close();
    console.log("closed");
  `;
  // Node 20 has the global WebSocket only behind a flag (this process got it from run-tests).
  const flags = Number(process.versions.node.split(".")[0]) < 22 ? ["--experimental-websocket"] : [];
  const child = spawn(process.execPath, [...flags, "--no-warnings", "--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const started = Date.now();
  const code = await new Promise((resolveExit, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error("the process did not exit within 5 s of close(): a timer or socket is left"));
    }, 5000);
    child.on("exit", (c) => {
      clearTimeout(timer);
      resolveExit(c);
    });
  });
  assert.equal(code, 0);
  assert.equal(out.trim(), "closed");
  assert.ok(Date.now() - started < 5000);
});
