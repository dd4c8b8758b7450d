// Small DOM helpers. Text always goes in as text nodes (textContent), never as HTML: message
// text, uids and error messages come from other people.

type Child = Node | string | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number | boolean | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (name === "class") el.className = String(value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return el;
}

/** The element with `id`, typed; a missing one is a bug in index.html. */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`#${id} is missing from index.html`);
  return el as T;
}

export function show(el: HTMLElement, visible: boolean): void {
  el.hidden = !visible;
}

/** A stable hue (0..359) for a user key: the avatar's color. */
export function hueOf(key: string): number {
  let hash = 2166136261;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 16777619);
  }
  return (hash >>> 0) % 360;
}

/** Fills an avatar element with the user's initials and color. */
export function paintAvatar(el: HTMLElement, key: string, uid: string): void {
  const letters = uid.replace(/[^\p{L}\p{N}]+/gu, " ").trim().split(" ");
  const initials = ((letters[0]?.[0] ?? "?") + (letters[1]?.[0] ?? letters[0]?.[1] ?? "")).toUpperCase();
  el.textContent = initials;
  el.style.setProperty("--hue", String(hueOf(key)));
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

export function formatTime(ms: number): string {
  return timeFormat.format(ms);
}

export function formatFull(ms: number): string {
  return fullFormat.format(ms);
}

/** "Today", "Yesterday" or a short date: the day separators and the list's times. */
export function formatDay(ms: number, now = Date.now()): string {
  const day = (t: number) => new Date(t).toDateString();
  if (day(ms) === day(now)) return "Today";
  if (day(ms) === day(now - 86_400_000)) return "Yesterday";
  return dateFormat.format(ms);
}

/** The time for the conversation list: hh:mm today, else the day. */
export function formatListTime(ms: number, now = Date.now()): string {
  return new Date(ms).toDateString() === new Date(now).toDateString() ? formatTime(ms) : formatDay(ms, now);
}

export function formatBytes(n: number): string {
  return n.toLocaleString("en-US");
}
