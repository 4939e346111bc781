// Toasts the server asks for with `HX-Trigger: {"toast": {"message": "..."}}`.
document.addEventListener("toast", (event) => {
  const toast = document.createElement("div");
  toast.className = "toast";
  toast.setAttribute("role", "status");
  toast.textContent = event.detail.message;
  document.getElementById("toasts").append(toast);
  setTimeout(() => toast.remove(), 8000);
});

// Refreshes (polls and live updates) send X-Virtdeck-Background so they do not keep an idle
// session alive. A button inside a refreshing element would inherit the header with hx-headers;
// only the element that declares it sends it.
const BACKGROUND = "X-Virtdeck-Background";
document.addEventListener("htmx:configRequest", (event) => {
  if (!(event.detail.elt.getAttribute("hx-headers") || "").includes(BACKGROUND)) {
    delete event.detail.headers[BACKGROUND];
  }
});

// Live updates: parts of a page refresh on the topics of the page's one event stream
// (hx-trigger="sse:<topic>", see base.html). A topic that arrives while a part's refresh is in
// flight, or while its replacement settles, finds no element to refresh; so a part swapped in
// refreshes once more if one of its topics arrived after the request that brought it left.
// After the stream reconnects (a restart, a lost network), every part refreshes: it may have
// missed some.
const arrived = new Map(); // topic -> when (performance.now()) it last arrived
const left = new WeakMap(); // request (xhr) -> when it left
const asked = new Map(); // element id -> when the request that brought its content left
const topics = (elt) => (elt.getAttribute("hx-trigger") || "").match(/sse:[^\s,]+/g) || [];

htmx.createEventSource = (url) => {
  const source = new EventSource(url, { withCredentials: true });
  const listen = source.addEventListener.bind(source);
  const noted = new Set();
  source.addEventListener = (type, listener, options) => {
    if (!noted.has(type)) {
      noted.add(type);
      listen(type, () => arrived.set(type, performance.now()));
    }
    listen(type, listener, options);
  };
  return source;
};

document.addEventListener("htmx:beforeRequest", (event) => {
  left.set(event.detail.xhr, performance.now());
});

document.addEventListener("htmx:beforeSwap", (event) => {
  const { target, xhr } = event.detail;
  if (target && target.id && left.has(xhr)) asked.set(target.id, left.get(xhr));
});

document.addEventListener("htmx:load", (event) => {
  const elt = event.detail.elt;
  const since = elt.id && asked.get(elt.id);
  const late = since && topics(elt).find((t) => (arrived.get(t.slice(4)) || 0) > since);
  if (late) htmx.trigger(elt, late);
});

// Screen readers hear of a state change that a refresh brought: an element with data-announce
// (a guest's row or status panel) whose data-state differs from the one it replaced has its
// data-announce text put in the page's live region.
const states = new Map(); // element id -> data-state before the swap that replaces it
const announced = (root) => [root, ...root.querySelectorAll("[data-announce]")]
  .filter((elt) => elt.id && elt.dataset && elt.dataset.announce);

document.addEventListener("htmx:beforeSwap", (event) => {
  const target = event.detail.target;
  if (!target || !target.querySelectorAll) return;
  for (const elt of announced(target)) states.set(elt.id, elt.dataset.state);
});

document.addEventListener("htmx:load", (event) => {
  if (!event.detail.elt.querySelectorAll) return;
  for (const elt of announced(event.detail.elt)) {
    const before = states.get(elt.id);
    states.delete(elt.id);
    if (before !== undefined && before !== elt.dataset.state) {
      document.getElementById("announcer").textContent = elt.dataset.announce;
    }
  }
});

let streamOpened = false;
document.addEventListener("htmx:sseOpen", () => {
  if (streamOpened) {
    for (const elt of document.querySelectorAll('[hx-trigger*="sse:"]')) {
      htmx.trigger(elt, topics(elt)[0]);
    }
  }
  streamOpened = true;
});

// Behaviour that templates would otherwise write inline (the Content-Security-Policy forbids
// inline script and htmx's hx-on):
// a form with data-confirm-name enables its submit button only once its `confirm` field holds
// that name (the guest delete form);
document.addEventListener("input", (event) => {
  const form = event.target.closest && event.target.closest("form[data-confirm-name]");
  if (!form) return;
  const typed = form.elements.confirm.value.trim();
  form.querySelector("button[type=submit]").disabled = typed !== form.dataset.confirmName;
});

// a select whose change the server refused goes back to the stored value, data-current (a
// user's role).
document.addEventListener("htmx:afterRequest", (event) => {
  const elt = event.detail.elt;
  if (elt.matches("select[data-current]") && event.detail.xhr.status >= 400) {
    elt.value = elt.dataset.current;
  }
});

// a box with data-pick-all ticks (or clears) every guest's box of the Guests page's bulk bar.
document.addEventListener("change", (event) => {
  if (!event.target.matches("input[data-pick-all]")) return;
  for (const box of document.querySelectorAll("input.pick[form=bulk-form]")) {
    box.checked = event.target.checked;
  }
});

// A page that is already leaving (an answer said HX-Redirect) does not start to leave again: a
// job's bar asks on load and on its live event, and a second redirect to the guest would abort
// the first navigation (net::ERR_ABORTED) while it loads.
let leaving = false;
document.addEventListener("htmx:beforeOnLoad", (event) => {
  if (!event.detail.xhr.getResponseHeader("HX-Redirect")) return;
  if (leaving) event.preventDefault();
  leaving = true;
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted) leaving = false; // back again from the browser's page cache
});
