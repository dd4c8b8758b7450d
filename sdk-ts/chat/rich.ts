// RICH content (docs/protocol.md §9): <font size= color=>…</font>, <img url= />, <shake />.
// The markup comes from other users, so it is parsed here by hand and turned into DOM nodes
// created one by one — never innerHTML — with every attribute value checked: a color is a name
// or a hex value, a size a clamped number, an image URL http(s) only. Elements this page does
// not know are dropped and their text shown; unknown attributes are ignored.

export type Token =
  | { kind: "text"; text: string }
  | { kind: "open"; name: string; attrs: Map<string, string>; selfClosing: boolean }
  | { kind: "close"; name: string };

// A tag: "<", optional "/", a name, attributes (quoted or bare values), optional "/", ">".
// The seed's sample separates attributes with tabs, so any whitespace counts.
const TAG = /^<\s*(\/?)\s*([A-Za-z][\w:-]*)((?:\s+[^\s=/>]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+))?)*)\s*(\/?)\s*>/;
const ATTR = /([^\s=/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?/g;

const NAMED: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'", nbsp: "\u00a0" };

export function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|[a-zA-Z]{2,8});/g, (whole, body: string) => {
    if (body.startsWith("#")) {
      const code = body[1] === "x" || body[1] === "X" ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
      return code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff) ? String.fromCodePoint(code) : whole;
    }
    return NAMED[body.toLowerCase()] ?? whole;
  });
}

export function escapeText(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function escapeAttr(text: string): string {
  return escapeText(text).replace(/"/g, "&quot;");
}

export function tokenize(markup: string): Token[] {
  const tokens: Token[] = [];
  let text = "";
  let i = 0;
  while (i < markup.length) {
    const lt = markup.indexOf("<", i);
    if (lt < 0) {
      text += markup.slice(i);
      break;
    }
    text += markup.slice(i, lt);
    const match = TAG.exec(markup.slice(lt));
    if (match === null) {
      text += "<"; // a lone "<" is text
      i = lt + 1;
      continue;
    }
    if (text !== "") tokens.push({ kind: "text", text: decodeEntities(text) });
    text = "";
    const [whole, slash, rawName, rawAttrs, selfClose] = match;
    const name = (rawName ?? "").toLowerCase();
    if (slash === "/") {
      tokens.push({ kind: "close", name });
    } else {
      const attrs = new Map<string, string>();
      for (const a of (rawAttrs ?? "").matchAll(ATTR)) {
        const key = (a[1] ?? "").toLowerCase();
        if (key !== "" && !attrs.has(key)) attrs.set(key, decodeEntities(a[2] ?? a[3] ?? a[4] ?? ""));
      }
      tokens.push({ kind: "open", name, attrs, selfClosing: selfClose === "/" });
    }
    i = lt + whole.length;
  }
  if (text !== "") tokens.push({ kind: "text", text: decodeEntities(text) });
  return tokens;
}

const COLOR = /^(#[0-9a-fA-F]{3,8}|[a-zA-Z]{3,20})$/;

/** A color the page accepts ("red", "#1c7ed6"), or undefined. */
export function safeColor(value: string | undefined): string | undefined {
  const v = value?.trim() ?? "";
  return COLOR.test(v) ? v : undefined;
}

/** A font size in CSS px, clamped to what stays readable in a bubble. */
export function safeSize(value: string | undefined): number | undefined {
  const n = Number.parseFloat(value ?? "");
  if (!Number.isFinite(n) || n <= 0) return undefined;
  return Math.min(32, Math.max(10, n));
}

/** An absolute http(s) URL, or undefined (javascript:, data:, relative… are refused). */
export function safeImageUrl(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  try {
    const url = new URL(value.trim());
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : undefined;
  } catch {
    return undefined;
  }
}

export interface Rendered {
  fragment: DocumentFragment;
  shake: boolean;
  /** One line for the conversation list: the text, "[image]", "[shake]". */
  preview: string;
}

/** Renders RICH markup into DOM nodes (text nodes and a few checked elements). */
export function renderRich(markup: string): Rendered {
  const fragment = document.createDocumentFragment();
  const stack: (DocumentFragment | HTMLElement)[] = [fragment];
  const top = () => stack[stack.length - 1] ?? fragment;
  let shake = false;
  const preview: string[] = [];
  for (const token of tokenize(markup)) {
    if (token.kind === "text") {
      top().append(document.createTextNode(token.text));
      preview.push(token.text);
      continue;
    }
    if (token.kind === "close") {
      if (token.name === "font" && stack.length > 1) stack.pop();
      continue;
    }
    switch (token.name) {
      case "font": {
        const span = document.createElement("span");
        span.className = "rich-font";
        const color = safeColor(token.attrs.get("color"));
        const size = safeSize(token.attrs.get("size"));
        // CSSOM properties, not a style attribute: allowed by the page's CSP and not markup.
        if (color !== undefined) span.style.color = color;
        if (size !== undefined) span.style.fontSize = `${size}px`;
        top().append(span);
        if (!token.selfClosing) stack.push(span);
        break;
      }
      case "img": {
        top().append(imageNode(token.attrs.get("url") ?? token.attrs.get("src")));
        preview.push("[image]");
        break;
      }
      case "shake": {
        shake = true;
        const badge = document.createElement("span");
        badge.className = "rich-shake";
        badge.textContent = "shake";
        badge.setAttribute("role", "img");
        badge.setAttribute("aria-label", "shake");
        top().append(badge);
        preview.push("[shake]");
        break;
      }
      default:
        break; // unknown element: its text (already separate tokens) shows, the tag does not
    }
  }
  return { fragment, shake, preview: preview.join(" ").replace(/\s+/g, " ").trim() };
}

function imageNode(raw: string | undefined): HTMLElement {
  const url = safeImageUrl(raw);
  if (url === undefined) {
    const span = document.createElement("span");
    span.className = "rich-img-missing";
    span.textContent = `[image: ${raw ?? "no url"}]`;
    return span;
  }
  const link = document.createElement("a");
  link.className = "rich-img";
  link.href = url;
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  link.setAttribute("aria-label", "Image (opens in a new tab)");
  const img = document.createElement("img");
  img.src = url;
  img.alt = "Image";
  img.loading = "lazy";
  img.decoding = "async";
  img.referrerPolicy = "no-referrer";
  img.addEventListener("error", () => {
    link.classList.add("broken");
    link.replaceChildren(document.createTextNode("Image unavailable"));
  });
  link.append(img);
  return link;
}

/** The markup the composer sends for `text` with the chosen style, image and shake. */
export function composeRich(text: string, style: { color?: string; size?: string; imageUrl?: string; shake?: boolean }): string {
  let out = "";
  if (text !== "") {
    const attrs: string[] = [];
    if (style.size) attrs.push(`size="${escapeAttr(style.size)}"`);
    if (style.color) attrs.push(`color="${escapeAttr(style.color)}"`);
    out += attrs.length > 0 ? `<font ${attrs.join(" ")}>${escapeText(text)}</font>` : escapeText(text);
  }
  if (style.imageUrl) out += `<img url="${escapeAttr(style.imageUrl)}" />`;
  if (style.shake) out += "<shake />";
  return out;
}
