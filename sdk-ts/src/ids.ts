import type { UserRef } from "./types.js";

/** A random, URL-safe client message id (128 bits, base64url without padding). */
export function newClientMsgId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** "129:alice": a user as one string (a Map key, a URL part). */
export function userKey(user: UserRef): string {
  return `${user.appcode}:${user.uid}`;
}

/** "129:alice" → { appcode: 129, uid: "alice" }. The uid may itself contain ':'. */
export function parseUserRef(text: string): UserRef {
  const at = text.indexOf(":");
  const appcode = Number(text.slice(0, at));
  const uid = text.slice(at + 1);
  if (at <= 0 || !Number.isInteger(appcode) || appcode < 0 || appcode > 0xffffffff || uid === "") {
    throw new TypeError(`not APPCODE:UID: ${JSON.stringify(text)}`);
  }
  return { appcode, uid };
}

export function sameUser(a: UserRef | undefined, b: UserRef | undefined): boolean {
  return a !== undefined && b !== undefined && a.appcode === b.appcode && a.uid === b.uid;
}
