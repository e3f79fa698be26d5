// Steno's playground: files through POST /v1/audio/transcriptions, live captions through
// the Realtime transcription API (GET /v1/realtime?intent=transcription, a WebSocket).
// Plain DOM, no framework, nothing fetched but this server's API.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "steno-playground-key";
// Sent in session.update; Steno's own VAD applies them (OpenAI's defaults).
const TURN_DETECTION = { type: "server_vad", threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 };
// Audio captured before the session is configured waits here, at most this many chunks (10 s).
const MAX_QUEUED_CHUNKS = 100;
// After Stop, how long the last turn may take to come back before the socket closes.
const FINISH_MS = 8000;
const HEALTH_EVERY_MS = 10000;

// ---------------------------------------------------------------------------------------
// The API key and HTTP

function apiKey() {
  return $("key").value.trim();
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// The message of OpenAI's error envelope, else the status line.
async function errorMessage(response) {
  const fallback = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    return body && body.error && body.error.message ? `${body.error.message} (${response.status})` : fallback;
  } catch {
    return fallback;
  }
}

async function api(path, init = {}) {
  let response;
  try {
    response = await fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers || {}) } });
  } catch (error) {
    throw new Error(`The server cannot be reached (${error.message}).`);
  }
  if (!response.ok) throw new Error(await errorMessage(response));
  return response;
}

// ---------------------------------------------------------------------------------------
// Server status and models

function showStatus(text, ok) {
  const status = $("status");
  status.textContent = text;
  status.className = ok ? "ok" : "bad";
}

async function checkServer() {
  try {
    const health = await fetch("/health", { headers: authHeaders() });
    if (health.status === 401) return showStatus("The server needs an API key: enter it under Settings.", false);
    if (!health.ok) return showStatus(`Server not ready: ${await errorMessage(health)}`, false);
    const models = await loadModels();
    showStatus(`Server ready · model ${$("model").value || "?"} · ${models} served`, true);
  } catch (error) {
    showStatus(`Server: ${error.message}`, false);
  }
}

// Fills the model menu from GET /v1/models, keeping the choice; returns how many.
async function loadModels() {
  const list = await (await api("/v1/models")).json();
  const select = $("model");
  const ids = list.data.map((m) => m.id);
  const shown = [...select.options].map((o) => o.value);
  // Unchanged lists are left alone: replacing them would close a menu the user has open.
  if (ids.join("\n") !== shown.join("\n")) {
    const chosen = select.value;
    select.replaceChildren(...ids.map((id) => new Option(id, id)));
    if (ids.includes(chosen)) select.value = chosen;
  }
  return ids.length;
}

// ---------------------------------------------------------------------------------------
// Files

function secondsText(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(2).padStart(5, "0")}`;
}

function showSegments(segments) {
  const table = $("segments");
  const rows = (segments || []).map((s) => {
    const row = document.createElement("tr");
    for (const [text, cls] of [[secondsText(s.start), "time"], [secondsText(s.end), "time"], [s.text.trim(), ""]]) {
      const cell = row.insertCell();
      cell.textContent = text;
      if (cls) cell.className = cls;
    }
    return row;
  });
  table.tBodies[0].replaceChildren(...rows);
  table.hidden = rows.length === 0;
}

function clearFileResult() {
  $("transcript").textContent = "";
  $("raw").textContent = "";
  $("raw").hidden = true;
  $("file-error").textContent = "";
  showSegments([]);
}

async function showFileResult(response, format) {
  if (format === "json" || format === "verbose_json") {
    const body = await response.json();
    $("transcript").textContent = body.text.trim();
    showSegments(body.segments);
    return;
  }
  const text = await response.text();
  if (format === "text") $("transcript").textContent = text.trim();
  else Object.assign($("raw"), { textContent: text, hidden: false });
}

async function transcribeFile(file) {
  const format = $("format").value;
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", $("model").value);
  form.append("response_format", format);
  if ($("language").value) form.append("language", $("language").value);
  clearFileResult();
  $("transcribe").disabled = true;
  $("file-state").textContent = `Transcribing ${file.name}…`;
  const started = performance.now();
  try {
    await showFileResult(await api("/v1/audio/transcriptions", { method: "POST", body: form }), format);
    $("file-state").textContent = `${file.name}: done in ${((performance.now() - started) / 1000).toFixed(1)} s`;
  } catch (error) {
    $("file-state").textContent = "";
    $("file-error").textContent = `Could not transcribe ${file.name}: ${error.message}`;
  } finally {
    $("transcribe").disabled = false;
  }
}

function chosenFile() {
  return $("file").files[0];
}

function setUpFiles() {
  const drop = $("drop");
  $("file").addEventListener("change", () => {
    $("file-name").textContent = chosenFile() ? `Chosen: ${chosenFile().name}` : "";
    if (chosenFile()) transcribeFile(chosenFile());
  });
  $("file-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (chosenFile()) transcribeFile(chosenFile());
    else $("file-error").textContent = "Choose or drop an audio file first.";
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length === 0) return;
    $("file").files = event.dataTransfer.files;
    $("file").dispatchEvent(new Event("change"));
  });
}

// ---------------------------------------------------------------------------------------
// Live captions

// The one live session (null when idle): its socket, audio graph, queue and captions.
let live = null;

function liveState(text) {
  $("live-state").textContent = text;
}

function realtimeUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/realtime?intent=transcription`;
}

// Browsers cannot set headers on a WebSocket: the key rides in the subprotocol list,
// as OpenAI's browser clients send it.
function subprotocols() {
  const key = apiKey();
  return key ? ["realtime", `openai-insecure-api-key.${key}`] : ["realtime"];
}

function sessionUpdate() {
  const transcription = { model: $("model").value };
  if ($("language").value) transcription.language = $("language").value;
  return {
    type: "session.update",
    session: {
      type: "transcription",
      audio: { input: { format: { type: "audio/pcm", rate: 24000 }, transcription, turn_detection: TURN_DETECTION } },
    },
  };
}

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function sendAudio(session, buffer) {
  if (!session.configured) {
    if (session.queue.length < MAX_QUEUED_CHUNKS) session.queue.push(buffer);
    return;
  }
  if (session.socket.readyState === WebSocket.OPEN) {
    session.socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64(buffer) }));
  }
}

// The caption of turn `itemId`, created at the end of the list when new.
function caption(session, itemId) {
  let item = session.captions.get(itemId);
  if (!item) {
    item = document.createElement("li");
    item.className = "pending";
    $("captions").append(item);
    session.captions.set(itemId, item);
  }
  return item;
}

function finishCaption(session, itemId, text) {
  const item = caption(session, itemId);
  item.className = "";
  item.textContent = text.trim();
  if (!item.textContent) item.remove();
  session.captions.delete(itemId);
  if (session.stopping && session.captions.size === 0) closeSession(session, 1000, "done");
}

function onServerEvent(session, event) {
  switch (event.type) {
    case "session.updated":
      session.configured = true;
      session.queue.splice(0).forEach((buffer) => sendAudio(session, buffer));
      return liveState("Listening: speak, and captions appear below.");
    case "input_audio_buffer.speech_started":
      liveState("Hearing speech…");
      return caption(session, event.item_id);
    case "input_audio_buffer.speech_stopped":
      return liveState("Transcribing the last turn…");
    case "conversation.item.input_audio_transcription.delta":
      return caption(session, event.item_id).append(event.delta || "");
    case "conversation.item.input_audio_transcription.completed":
      liveState(session.stopping ? "Finishing…" : "Listening: speak, and captions appear below.");
      return finishCaption(session, event.item_id, event.transcript || "");
    case "conversation.item.input_audio_transcription.failed":
      $("live-error").textContent = `A turn could not be transcribed: ${(event.error && event.error.message) || "unknown error"}`;
      return finishCaption(session, event.item_id, "");
    case "error":
      $("live-error").textContent = `Server: ${(event.error && event.error.message) || "unknown error"}`;
      return;
    default:
      return; // session.created, committed, cleared: nothing to show
  }
}

function closeText(event, opened) {
  if (event.code === 1000) return "";
  // A refused handshake (bad key, unknown route, no free session) tells the page nothing more.
  if (!opened) return "Could not open a live session: the server refused it or cannot be reached (check the API key and the server's status).";
  if (event.code === 1006) return "The connection to the server was lost. Press Record to reconnect.";
  const reason = event.reason ? `: ${event.reason}` : "";
  return `The server closed the session (${event.code}${reason}). Press Record to reconnect.`;
}

function openSocket(session) {
  const socket = new WebSocket(realtimeUrl(), subprotocols());
  socket.onopen = () => {
    session.opened = true;
    liveState("Connected; configuring the session…");
    socket.send(JSON.stringify(sessionUpdate()));
  };
  socket.onmessage = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    onServerEvent(session, event);
  };
  socket.onclose = (event) => {
    if (!session.stopping || event.code !== 1000) {
      const text = closeText(event, session.opened);
      if (text) $("live-error").textContent = text;
    }
    stopAudio(session);
    endSession(session);
  };
  return socket;
}

async function startAudio(session) {
  session.stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
  });
  session.context = new AudioContext();
  await session.context.audioWorklet.addModule("/playground/capture.js");
  const source = session.context.createMediaStreamSource(session.stream);
  session.worklet = new AudioWorkletNode(session.context, "pcm-capture");
  session.worklet.port.onmessage = (message) => sendAudio(session, message.data);
  session.worklet.onprocessorerror = () => {
    $("live-error").textContent = "The audio capture failed; press Stop and Record to start again.";
  };
  source.connect(session.worklet);
  // The worklet writes no output (silence); connected, the graph pulls it every block.
  session.worklet.connect(session.context.destination);
}

function stopAudio(session) {
  if (session.stream) session.stream.getTracks().forEach((track) => track.stop());
  if (session.worklet) session.worklet.port.postMessage("flush");
  if (session.context && session.context.state !== "closed") session.context.close();
  session.stream = session.context = null;
}

function closeSession(session, code, reason) {
  clearTimeout(session.finishTimer);
  if (session.socket.readyState <= WebSocket.OPEN) session.socket.close(code, reason);
}

function endSession(session) {
  clearTimeout(session.finishTimer);
  for (const item of session.captions.values()) if (!item.textContent) item.remove();
  if (live === session) live = null;
  $("record").textContent = "Record";
  $("record").setAttribute("aria-pressed", "false");
  $("record").disabled = false;
  if (!$("live-error").textContent) liveState("Stopped.");
  else liveState("");
}

async function startLive() {
  $("live-error").textContent = "";
  if (!navigator.mediaDevices || !window.AudioWorkletNode) {
    $("live-error").textContent = "This page needs https:// (or localhost) for the microphone.";
    return;
  }
  const session = { opened: false, configured: false, queue: [], captions: new Map(), stopping: false };
  live = session;
  $("record").textContent = "Stop";
  $("record").setAttribute("aria-pressed", "true");
  liveState("Asking for the microphone…");
  try {
    await startAudio(session);
    session.socket = openSocket(session);
  } catch (error) {
    stopAudio(session);
    $("live-error").textContent = `Could not start recording: ${error.message}`;
    endSession(session);
  }
}

// Stop: no more audio; the turn being spoken is committed and its text awaited (at most
// FINISH_MS) before the socket closes.
function stopLive() {
  const session = live;
  if (!session || !session.socket) return;
  session.stopping = true;
  $("record").disabled = true;
  stopAudio(session);
  if (session.captions.size === 0 || session.socket.readyState !== WebSocket.OPEN) {
    return closeSession(session, 1000, "done");
  }
  liveState("Finishing…");
  setTimeout(() => {
    if (session.socket.readyState === WebSocket.OPEN) {
      session.socket.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
    }
  }, 200); // after the worklet's last chunk
  session.finishTimer = setTimeout(() => closeSession(session, 1000, "done"), FINISH_MS);
}

// ---------------------------------------------------------------------------------------

function setUp() {
  const key = $("key");
  key.value = sessionStorage.getItem(KEY_STORE) || "";
  key.addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORE, key.value.trim());
    checkServer();
  });
  $("model").addEventListener("change", checkServer);
  $("record").addEventListener("click", () => (live ? stopLive() : startLive()));
  setUpFiles();
  checkServer();
  setInterval(checkServer, HEALTH_EVERY_MS);
}

setUp();
