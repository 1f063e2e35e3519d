"use strict";
const $ = (id) => document.getElementById(id);

// When the server requires a bearer token (IMGCLS_API_TOKENS), a 401 shows the token field;
// the token lives in this tab's sessionStorage only.
function authHeaders() {
  const token = sessionStorage.getItem("imgcls-token");
  return token ? { Authorization: "Bearer " + token } : {};
}

function askForToken(message) {
  $("auth").style.display = "block";
  $("error").textContent = message;
}

$("auth").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("imgcls-token", $("token").value.trim());
  $("auth").style.display = "none";
  $("error").textContent = "";
  loadModel();
});

function showUntrained(untrained) {
  $("untrained").style.display = untrained ? "block" : "none";
}

// Top 3, or fewer when the model has fewer classes (a two-class model answers top 2).
let topK = 3;

async function loadModel() {
  try {
    const response = await fetch("/v1/model", { headers: authHeaders() });
    const body = await response.json();
    if (response.status === 401) { $("model").textContent = "model: sign in below"; askForToken(body.error.message); return; }
    if (!response.ok) { $("model").textContent = "model: " + body.error.message; return; }
    topK = Math.min(3, body.num_classes);
    $("model").textContent =
      `model: ${body.name} ${body.version}, ${body.num_classes} classes (${body.precision}, ${body.provider})`;
    showUntrained(body.untrained);
  } catch (err) {
    $("model").textContent = "model: unreachable (" + err + ")";
  }
}

function row(prediction, index) {
  const div = document.createElement("div");
  div.className = "row prediction";
  div.dataset.rank = String(index + 1);
  div.dataset.classIndex = String(prediction.class_index);
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = prediction.label;
  const bar = document.createElement("div");
  bar.className = "bar";
  const fill = document.createElement("div");
  fill.style.width = (100 * prediction.score).toFixed(1) + "%";
  bar.appendChild(fill);
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = (100 * prediction.score).toFixed(1) + "%";
  div.append(label, bar, score);
  return div;
}

async function classify(file) {
  $("error").textContent = "";
  $("results").replaceChildren();
  $("timing").textContent = "classifying...";
  $("preview").src = URL.createObjectURL(file);
  $("preview").style.display = "block";
  try {
    const response = await fetch(`/v1/classify?top_k=${topK}`, {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream", ...authHeaders() },
      body: file,
    });
    const body = await response.json();
    if (response.status === 401) {
      $("timing").textContent = "";
      askForToken(body.error.message);
      document.body.dataset.state = "error";
      return;
    }
    if (!response.ok) {
      $("timing").textContent = "";
      $("error").textContent = `${response.status} ${body.error.code}: ${body.error.message}`;
      document.body.dataset.state = "error";
      return;
    }
    showUntrained(body.untrained);
    $("results").replaceChildren(...body.predictions.map(row));
    const t = body.timing;
    $("timing").textContent =
      `decode ${t.decode_ms.toFixed(1)} ms, queue ${t.queue_ms.toFixed(1)} ms, ` +
      `inference ${t.inference_ms.toFixed(1)} ms (batch of ${t.batch_size}); ` +
      `request id ${response.headers.get("X-Request-ID")}`;
    document.body.dataset.state = "done";
  } catch (err) {
    $("timing").textContent = "";
    $("error").textContent = "request failed: " + err;
    document.body.dataset.state = "error";
  }
}

$("file").addEventListener("change", (event) => {
  if (event.target.files.length) classify(event.target.files[0]);
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) classify(event.dataTransfer.files[0]);
});
loadModel();
