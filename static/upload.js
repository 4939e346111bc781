// The host page's "Upload an image" form (templates/partials/upload_form.html, swapped in by
// htmx): sends the file as the body of PUT /api/v1/hosts/{id}/pools/{pool}/volumes/{name}, with
// the session cookie and the page's CSRF token, shows its progress, cancels it, and shows the
// SHA-256 of what the host stored, or the API's reason for a refusal.

const MIB = 1024 * 1024;
const size = (bytes) =>
  bytes >= 1024 * MIB ? `${(bytes / 1024 / MIB).toFixed(1)} GiB` : `${(bytes / MIB).toFixed(1)} MiB`;

// The token htmx sends on this page (base.html puts it on <body hx-headers>).
const csrfToken = () => JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "";

// What the form can tell before sending a byte: an empty file, one over the limit, or one larger
// than the pool's free space (the server checks all of them again).
function refusal(form, file) {
  const limit = Number(form.dataset.limit);
  const pool = form.elements.pool.selectedOptions[0];
  const free = Number(pool.dataset.free);
  if (file.size === 0) return "The file is empty.";
  if (file.size > limit) return `The file (${size(file.size)}) is over the upload limit of ${size(limit)}.`;
  if (file.size > free) return `The file (${size(file.size)}) does not fit in pool ${pool.value} (${size(free)} free).`;
  return null;
}

function say(box, text, isError = false) {
  const result = box.querySelector(".upload-result");
  result.replaceChildren();
  result.classList.toggle("error", isError);
  if (typeof text === "string") result.textContent = text;
  else result.append(...text);
}

// The volume and its SHA-256, as elements (never markup built from strings).
function stored(volume) {
  const sum = document.createElement("code");
  sum.className = "sha256";
  sum.textContent = volume.sha256;
  return [`Uploaded ${volume.name} (${size(volume.size)}) into pool ${volume.pool}: ${volume.path}. SHA-256: `, sum];
}

function detail(xhr) {
  try {
    return JSON.parse(xhr.responseText).detail || `the server answered ${xhr.status}`;
  } catch {
    return `the server answered ${xhr.status}`;
  }
}

function upload(form) {
  const box = form.closest(".uploader");
  const progress = box.querySelector(".upload-progress");
  const bar = progress.querySelector("progress");
  const bytes = progress.querySelector(".upload-bytes");
  const cancel = progress.querySelector(".upload-cancel");
  const submit = form.querySelector('button[type="submit"]');
  const file = form.elements.file.files[0];
  const problem = refusal(form, file);
  if (problem) {
    say(box, problem, true);
    return;
  }
  const pool = encodeURIComponent(form.elements.pool.value);
  const name = encodeURIComponent(form.elements.name.value);
  const format = encodeURIComponent(form.elements.format.value);
  const xhr = new XMLHttpRequest();
  xhr.open("PUT", `/api/v1/hosts/${form.dataset.host}/pools/${pool}/volumes/${name}?format=${format}`);
  xhr.setRequestHeader("X-CSRF-Token", csrfToken());
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  const finish = () => {
    progress.hidden = true;
    submit.disabled = false;
    cancel.onclick = null;
  };
  xhr.upload.onprogress = (event) => {
    const percent = Math.floor((100 * event.loaded) / file.size);
    bar.value = percent;
    bytes.textContent = `${size(event.loaded)} of ${size(file.size)} (${percent} %)`;
  };
  xhr.upload.onload = () => {
    bytes.textContent = `${size(file.size)} sent; the host checks the image…`;
  };
  xhr.onload = () => {
    finish();
    if (xhr.status === 201) say(box, stored(JSON.parse(xhr.responseText)));
    else say(box, `Not uploaded: ${detail(xhr)}`, true);
  };
  xhr.onerror = () => {
    finish();
    say(box, "Not uploaded: the connection to virtdeck was lost; nothing was kept.", true);
  };
  xhr.onabort = () => {
    finish();
    say(box, "Upload cancelled; nothing was kept.");
  };
  cancel.onclick = () => xhr.abort();
  bar.value = 0;
  bytes.textContent = `0 MiB of ${size(file.size)} (0 %)`;
  say(box, "");
  progress.hidden = false;
  submit.disabled = true;
  xhr.send(file);
}

document.addEventListener("submit", (event) => {
  if (!event.target.matches(".upload-form")) return;
  event.preventDefault();
  upload(event.target);
});

// The volume's name follows the file's until someone types one.
document.addEventListener("change", (event) => {
  const input = event.target;
  if (!input.matches('.upload-form input[name="file"]') || !input.files[0]) return;
  const name = input.form.elements.name;
  if (!name.value || name.dataset.fromFile === name.value) {
    name.value = input.files[0].name;
    name.dataset.fromFile = name.value;
  }
});
