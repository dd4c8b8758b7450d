// The longlink browser chat page (served at /chat): sign in, then the conversation list and one
// conversation at a time. It talks to longlink only through the TypeScript SDK; the API gives it
// nothing but /chat/config.json and, on development nodes, /chat/dev-token.
import { Client, LonglinkError } from "../src/index.ts";
import { byId, show } from "./dom.ts";
import { ChatApp } from "./app.ts";
import type { ChatConfig } from "./config.ts";

/** Who signed in, kept per tab (sessionStorage) so that a reload comes back to the same place. */
interface SavedLogin {
  appcode: number;
  uid: string;
  /** A token pasted by the user; absent for a development login (minted again when needed). */
  token?: string;
}

const LOGIN_KEY = "longlink.chat.login";
const DEVICE_KEY = "longlink.chat.device";
const NOTICE_KEY = "longlink.chat.notice";

/** Turns anything thrown into the one line the page shows: "BAD_TOKEN: …". */
export function errorText(err: unknown): string {
  if (err instanceof LonglinkError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}

/**
 * This tab's device id: kept for the tab's life (reloads included), so a reload takes over the
 * same session and its unacknowledged messages instead of adding a device.
 */
function deviceId(): string {
  let id = sessionStorage.getItem(DEVICE_KEY);
  if (id === null) {
    const bytes = new Uint8Array(9);
    crypto.getRandomValues(bytes);
    id = "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    sessionStorage.setItem(DEVICE_KEY, id);
  }
  return id;
}

async function mintDevToken(appcode: number, uid: string): Promise<string> {
  const response = await fetch("/chat/dev-token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ appcode, uid }),
  });
  const body = (await response.json().catch(() => ({}))) as { token?: string; error?: { code?: string; message?: string } };
  if (!response.ok || typeof body.token !== "string") {
    const code = body.error?.code ?? `HTTP ${response.status}`;
    throw new Error(`${code}: ${body.error?.message ?? "the development login failed"}`);
  }
  return body.token;
}

class LoginForm {
  readonly form = byId<HTMLFormElement>("login-form");
  readonly appcode = byId<HTMLSelectElement>("login-appcode");
  readonly uid = byId<HTMLInputElement>("login-uid");
  readonly token = byId<HTMLTextAreaElement>("login-token");
  readonly tokenBox = byId<HTMLDetailsElement>("login-token-box");
  readonly error = byId("login-error");
  readonly submit = byId<HTMLButtonElement>("login-submit");

  constructor(private readonly config: ChatConfig) {
    for (const appcode of config.appcodes) {
      const option = document.createElement("option");
      option.value = String(appcode);
      option.textContent = String(appcode);
      this.appcode.append(option);
    }
    show(byId("login-dev-note"), config.dev_login);
    if (!config.dev_login) {
      // Without development logins a token is the only way in.
      this.tokenBox.open = true;
      byId("login-hint").textContent = "Paste a login token issued by your back end.";
      this.uid.disabled = true;
      this.uid.placeholder = "taken from the token";
    }
  }

  fail(message: string): void {
    this.error.textContent = message;
    show(this.error, true);
    this.busy(false);
  }

  busy(on: boolean): void {
    this.submit.disabled = on;
    this.submit.textContent = on ? "Signing in…" : "Sign in";
    document.body.dataset.state = on ? "signing-in" : "idle";
  }
}

async function signIn(config: ChatConfig, form: LoginForm, saved: SavedLogin): Promise<void> {
  form.busy(true);
  show(form.error, false);
  const url = config.ws_url;
  if (url === null) {
    form.fail("This server has no WebSocket listener ([gate] ws_listen is off): the chat page cannot connect.");
    return;
  }
  const token = saved.token ?? (() => mintDevToken(saved.appcode, saved.uid));
  const client = new Client({
    url,
    appcode: saved.appcode,
    token,
    deviceId: deviceId(),
    deviceClass: "web",
    clientVersion: "longlink-chat/0.1",
  });
  try {
    await client.connect();
  } catch (err) {
    sessionStorage.removeItem(LOGIN_KEY);
    form.fail(errorText(err));
    return;
  }
  sessionStorage.setItem(LOGIN_KEY, JSON.stringify({ ...saved, uid: client.uid }));
  form.busy(false);
  new ChatApp(config, client, { appcode: saved.appcode, uid: client.uid }, (message) => {
    // Signed out by the user or by the server (kicked): a fresh document for the next login,
    // so nothing of this user's conversations stays in memory; the form says why.
    sessionStorage.removeItem(LOGIN_KEY);
    if (message !== "") sessionStorage.setItem(NOTICE_KEY, message);
    location.reload();
  }).start();
  document.body.dataset.view = "chat";
  show(byId("login-view"), false);
  show(byId("chat-view"), true);
}

async function boot(): Promise<void> {
  let config: ChatConfig;
  try {
    const response = await fetch("/chat/config.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    config = (await response.json()) as ChatConfig;
  } catch (err) {
    document.body.dataset.view = "login";
    show(byId("login-view"), true);
    const error = byId("login-error");
    error.textContent = `Cannot load /chat/config.json: ${errorText(err)}`;
    show(error, true);
    return;
  }
  const form = new LoginForm(config);
  document.body.dataset.view = "login";
  show(byId("login-view"), true);
  form.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const appcode = Number(form.appcode.value);
    const token = form.token.value.trim();
    const uid = form.uid.value.trim();
    if (token === "" && !config.dev_login) {
      form.fail("INVALID_ARGUMENT: paste a login token");
      form.token.focus();
      return;
    }
    if (token === "" && uid === "") {
      form.fail("INVALID_ARGUMENT: enter a user id");
      form.uid.focus();
      return;
    }
    if (new TextEncoder().encode(uid).length > 128) {
      form.fail("INVALID_ARGUMENT: a user id is at most 128 bytes");
      return;
    }
    void signIn(config, form, token === "" ? { appcode, uid } : { appcode, uid, token });
  });
  const notice = sessionStorage.getItem(NOTICE_KEY);
  if (notice !== null) {
    sessionStorage.removeItem(NOTICE_KEY);
    form.fail(notice);
  }
  const saved = sessionStorage.getItem(LOGIN_KEY);
  if (saved !== null) {
    try {
      const login = JSON.parse(saved) as SavedLogin;
      form.appcode.value = String(login.appcode);
      form.uid.value = login.uid;
      await signIn(config, form, login);
      return;
    } catch {
      sessionStorage.removeItem(LOGIN_KEY);
    }
  }
  form.uid.focus();
}

void boot();
