// Guest consoles: the screen (noVNC) and the serial line (xterm.js), each over a WebSocket of
// this site opened with a single-use ticket. Every element with data-console is one console.
import RFB from "/static/vendor/novnc-1.7.0/core/rfb.js";
import keysyms from "/static/vendor/novnc-1.7.0/core/input/keysymdef.js";
import KeyTable from "/static/vendor/novnc-1.7.0/core/input/keysym.js";
import { initLogging } from "/static/vendor/novnc-1.7.0/core/util/logging.js";
import { Terminal } from "/static/vendor/xterm-6.0.0/xterm.mjs";
import { FitAddon } from "/static/vendor/xterm-addon-fit-0.11.0/addon-fit.mjs";

// The page says why a screen closed or was refused (closed(), refused()); noVNC would repeat
// it in the browser's console as an error.
initLogging("none");

const STATES = {
  idle: "Not connected.",
  connecting: "Connecting…",
  connected: "Connected.",
};
// Key combinations the screen's menu sends: [label, [keysym, code] pressed in order].
const COMBOS = {
  "ctrl-alt-del": [[KeyTable.XK_Control_L, "ControlLeft"], [KeyTable.XK_Alt_L, "AltLeft"], [KeyTable.XK_Delete, "Delete"]],
  "ctrl-alt-backspace": [[KeyTable.XK_Control_L, "ControlLeft"], [KeyTable.XK_Alt_L, "AltLeft"], [KeyTable.XK_BackSpace, "Backspace"]],
  "ctrl-alt-f1": [[KeyTable.XK_Control_L, "ControlLeft"], [KeyTable.XK_Alt_L, "AltLeft"], [KeyTable.XK_F1, "F1"]],
  "ctrl-alt-f2": [[KeyTable.XK_Control_L, "ControlLeft"], [KeyTable.XK_Alt_L, "AltLeft"], [KeyTable.XK_F2, "F2"]],
  "ctrl-alt-f7": [[KeyTable.XK_Control_L, "ControlLeft"], [KeyTable.XK_Alt_L, "AltLeft"], [KeyTable.XK_F7, "F7"]],
  "alt-tab": [[KeyTable.XK_Alt_L, "AltLeft"], [KeyTable.XK_Tab, "Tab"]],
  "esc": [[KeyTable.XK_Escape, "Escape"]],
};

// Typed text goes as US-layout key presses (scan codes, with Shift where the character needs
// it), as a person would type it: QEMU maps a bare keysym without the Shift state, so "S"
// would arrive as "s". Characters not on that layout go as bare keysyms.
const US_KEYS = new Map();
function usKey(plain, shifted, code) {
  US_KEYS.set(plain, [code, false]);
  if (shifted) US_KEYS.set(shifted, [code, true]);
}
for (const letter of "abcdefghijklmnopqrstuvwxyz") usKey(letter, letter.toUpperCase(), `Key${letter.toUpperCase()}`);
[..."0123456789"].forEach((digit, i) => usKey(digit, ")!@#$%^&*("[i], `Digit${digit}`));
for (const [plain, shifted, code] of [
  ["-", "_", "Minus"], ["=", "+", "Equal"], ["[", "{", "BracketLeft"], ["]", "}", "BracketRight"],
  ["\\", "|", "Backslash"], [";", ":", "Semicolon"], ["'", '"', "Quote"], [",", "<", "Comma"],
  [".", ">", "Period"], ["/", "?", "Slash"], ["`", "~", "Backquote"], [" ", null, "Space"],
  ["\t", null, "Tab"],
]) usKey(plain, shifted, code);

function csrfToken() {
  try {
    return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "";
  } catch {
    return "";
  }
}

// A ticket for this console, or a thrown error carrying the server's words and status.
async function ticketFor(guest, kind, takeover) {
  const response = await fetch(`/api/v1/guests/${guest}/console/tickets`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify({ kind, takeover }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.detail || `the server answered ${response.status}`);
    error.status = response.status;
    error.body = body;
    throw error;
  }
  return body;
}

function socketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

// The words after a WebSocket closed: its reason, or what its code means.
function closedWords(event) {
  if (event.reason) return event.reason;
  if (event.code === 1006) return "the connection to virtdeck was lost";
  return "the console closed";
}

// xterm.js writes its colours and cell size into <style> elements it makes, which this site's
// Content-Security-Policy (style-src 'self') refuses. Once a serial console opens, a <style>
// made by script on this page is an inert stand-in whose text goes into a constructed style
// sheet, which the policy allows (xterm.js only sets textContent, appends and removes them).
let stylesAdopted = false;
function adoptScriptStyles() {
  if (stylesAdopted) return;
  stylesAdopted = true;
  const createElement = Document.prototype.createElement;
  Document.prototype.createElement = function (tag, options) {
    if (String(tag).toLowerCase() !== "style") return createElement.call(this, tag, options);
    const standIn = createElement.call(this, "template");
    const sheet = new CSSStyleSheet();
    let text = "";
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    Object.defineProperty(standIn, "textContent", {
      get: () => text,
      set: (value) => { text = String(value ?? ""); sheet.replaceSync(text); },
    });
    standIn.remove = () => {
      document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== sheet);
      Element.prototype.remove.call(standIn);
    };
    return standIn;
  };
}

class Console {
  constructor(root) {
    this.root = root;
    this.kind = root.dataset.console;
    this.guest = root.dataset.guest;
    this.name = root.dataset.name;
    this.status = root.querySelector(".console-state");
    this.screen = root.querySelector(".console-screen");
    this.takeoverButton = root.querySelector("[data-do=takeover]");
    this.rfb = null;
    this.term = null;
    this.socket = null;
    this.closing = false;
    root.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-do]");
      if (button && root.contains(button)) this.act(button.dataset.do);
    });
    const keys = root.querySelector("select[data-do=keys]");
    if (keys) {
      keys.addEventListener("change", () => {
        this.sendCombo(keys.value);
        keys.value = "";
      });
    }
    const scale = root.querySelector("input[data-do=scale]");
    if (scale) scale.addEventListener("change", () => { if (this.rfb) this.rfb.scaleViewport = scale.checked; });
    this.scale = scale;
    this.setState("idle");
    if (root.dataset.autoconnect !== undefined) this.connect(false);
  }

  setState(state, words) {
    this.root.dataset.state = state;
    this.status.textContent = words || STATES[state] || state;
    for (const button of this.root.querySelectorAll("[data-when]")) {
      button.hidden = !button.dataset.when.split(" ").includes(state);
    }
  }

  act(what) {
    if (what === "connect") this.connect(false);
    else if (what === "takeover") this.connect(true);
    else if (what === "disconnect") this.disconnect();
    else if (what === "fullscreen") this.screen.requestFullscreen?.();
    else if (what === "ctrl-alt-del") this.sendCombo("ctrl-alt-del");
    else if (what === "type") this.typeText();
  }

  async connect(takeover) {
    this.disconnect();
    this.closing = false;
    this.setState("connecting");
    let ticket;
    try {
      ticket = await ticketFor(this.guest, this.kind, takeover);
    } catch (error) {
      this.refused(error);
      return;
    }
    if (this.kind === "vnc") this.openScreen(ticket);
    else this.openSerial(ticket);
  }

  refused(error) {
    const body = error.body || {};
    if (error.status === 409 && body.holder !== undefined) {
      this.setState("in-use", `${sentence(error.message)} You may take it over; they will be disconnected.`);
    } else if (error.status === 409 && body.state !== undefined) {
      this.setState("not-running", sentence(error.message));
    } else {
      this.setState("disconnected", `Could not connect: ${error.message}.`);
    }
  }

  closed(event) {
    if (this.closing) return;
    const words = closedWords(event);
    if (event.code === 4409 && /not running|no longer/.test(words)) {
      this.setState("not-running", sentence(words));
    } else {
      this.setState("disconnected", `Disconnected: ${words}.`);
    }
  }

  openScreen(ticket) {
    this.screen.replaceChildren();
    const socket = new WebSocket(socketUrl(ticket.url), ["binary"]);
    socket.addEventListener("close", (event) => this.closed(event));
    this.socket = socket;
    const rfb = new RFB(this.screen, socket, { shared: true });
    rfb.scaleViewport = this.scale ? this.scale.checked : true;
    rfb.background = "#111";
    rfb.addEventListener("connect", () => {
      this.setState("connected", `Connected to the screen of ${this.name}. Click it to type.`);
      rfb.focus();
    });
    rfb.addEventListener("credentialsrequired", () => {
      this.setState("disconnected", "The guest's VNC server asks for a password, which virtdeck does not hold.");
      this.disconnect();
    });
    rfb.addEventListener("securityfailure", (event) => {
      this.setState("disconnected", `The guest's VNC server refused: ${event.detail.reason || "security failure"}.`);
    });
    this.rfb = rfb;
  }

  openSerial(ticket) {
    this.screen.replaceChildren();
    adoptScriptStyles();
    const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 2000, convertEol: false });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(this.screen);
    fit.fit();
    this.fitter = () => fit.fit();
    window.addEventListener("resize", this.fitter);
    this.term = term;
    const socket = new WebSocket(socketUrl(ticket.url));
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    const encoder = new TextEncoder();
    socket.addEventListener("open", () => {
      this.setState("connected", `Connected to the serial console of ${this.name} (ttyS0). Press Enter if nothing shows.`);
      term.focus();
    });
    socket.addEventListener("message", (event) => term.write(new Uint8Array(event.data)));
    socket.addEventListener("close", (event) => this.closed(event));
    term.onData((data) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
    });
  }

  sendCombo(name) {
    const keys = COMBOS[name];
    if (!this.rfb || !keys) return;
    for (const [keysym, code] of keys) this.rfb.sendKey(keysym, code, true);
    for (const [keysym, code] of [...keys].reverse()) this.rfb.sendKey(keysym, code, false);
    this.rfb.focus();
  }

  // Types the text as key presses (the guest needs no clipboard support), and offers it to the
  // guest's clipboard too.
  typeText() {
    const field = this.root.querySelector("textarea[data-type]");
    if (!this.rfb || !field || !field.value) return;
    this.rfb.clipboardPasteFrom(field.value);
    for (const char of field.value.replace(/\r\n?/g, "\n")) {
      if (char === "\n") {
        this.rfb.sendKey(KeyTable.XK_Return, "Enter");
        continue;
      }
      const keysym = keysyms.lookup(char.codePointAt(0));
      const [code, shift] = US_KEYS.get(char) || [null, false];
      if (shift) this.rfb.sendKey(KeyTable.XK_Shift_L, "ShiftLeft", true);
      this.rfb.sendKey(keysym, code);
      if (shift) this.rfb.sendKey(KeyTable.XK_Shift_L, "ShiftLeft", false);
    }
    field.value = "";
    this.rfb.focus();
  }

  disconnect() {
    this.closing = true;
    if (this.rfb) {
      this.rfb.disconnect();
      this.rfb = null;
    } else if (this.socket) {
      this.socket.close(1000, "closed by the user");
    }
    this.socket = null;
    if (this.term) {
      window.removeEventListener("resize", this.fitter);
      this.term.dispose();
      this.term = null;
    }
    if (this.root.dataset.state !== "idle") this.setState("idle", "Disconnected.");
  }
}

function sentence(words) {
  const text = words.charAt(0).toUpperCase() + words.slice(1);
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

// The screenshot of a running guest, refreshed while the page is visible.
function refreshScreenshots() {
  for (const image of document.querySelectorAll("img[data-screenshot]")) {
    if (document.hidden || !image.isConnected) continue;
    const next = new Image();
    next.onload = () => { image.src = next.src; image.closest("figure")?.classList.remove("stale"); };
    next.onerror = () => image.closest("figure")?.classList.add("stale");
    next.src = `${image.dataset.screenshot}?at=${Date.now()}`;
  }
}

function start() {
  for (const root of document.querySelectorAll("[data-console]")) {
    if (!root.virtdeckConsole) root.virtdeckConsole = new Console(root);
  }
}

start();
document.addEventListener("htmx:afterSettle", start);
setInterval(refreshScreenshots, 5000);
