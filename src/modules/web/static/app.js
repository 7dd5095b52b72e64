// The chat page: plain JavaScript, no build step; one vendored parser (markdown-it, used by
// markdown.js for an answer's structure only).
//
// Every string from the server (model output above all) reaches the page through
// textContent, an attribute or DOM nodes built from Markdown tokens, never as HTML. The
// session lives in an HttpOnly cookie set by POST /auth/session; state-changing requests
// echo its CSRF token in X-CSRF-Token.
"use strict";

const state = {
  user: null,
  csrf: null,
  conversationId: null,
  generation: null, // the AbortController of the answer being streamed
  defaultModel: null,
};

const $ = (id) => document.getElementById(id);

function element(tag, properties = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(properties)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function when(value) {
  return value ? new Date(value).toLocaleString() : "never";
}

function say(id, text, kind = "error") {
  const node = $(id);
  node.textContent = text || "";
  node.dataset.kind = kind;
}

// API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function problemOf(response) {
  let message = `The service answered ${response.status} ${response.statusText}.`;
  try {
    const problem = await response.json();
    if (problem && typeof problem.detail === "string") message = problem.detail;
    const extra = problem && Array.isArray(problem.extra) ? problem.extra : [];
    const reasons = extra.map((item) => (item && item.message) || "").filter(Boolean);
    if (reasons.length) message += `: ${reasons.join("; ")}`;
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 429) message += " (too many requests: wait a moment)";
  return new ApiError(response.status, message);
}

async function request(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "The service cannot be reached; check the connection and try again.");
  }
  if (!response.ok) {
    const error = await problemOf(response);
    if (response.status === 401 && state.user && path !== "/auth/session") {
      sessionEnded("Your session has ended; log in again.");
    }
    throw error;
  }
  return response;
}

async function api(path, options) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

// Server-Sent Events from a fetch body (EventSource cannot POST).
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let boundary;
    while ((boundary = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary).replace(/^\r?\n\r?\n/, "");
      let name = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

// Session ---------------------------------------------------------------------------------

function showAuth(message = "") {
  $("app-view").hidden = true;
  $("auth-view").hidden = false;
  say("auth-message", message);
  $("email").focus();
}

function sessionEnded(message) {
  if (state.generation) state.generation.abort();
  state.user = null;
  state.csrf = null;
  showAuth(message);
}

function credentials() {
  const email = $("email").value.trim();
  const password = $("password").value;
  if (!email || !password) throw new ApiError(0, "Enter an email and a password.");
  return { email, password };
}

// Log in (after registering first, when asked): the session cookie, then the app.
async function openSession(registerFirst) {
  try {
    const body = credentials();
    if (registerFirst) await api("/auth/register", { method: "POST", body });
    const session = await api("/auth/session", { method: "POST", body });
    $("password").value = "";
    await startApp(session);
  } catch (error) {
    say("auth-message", error.message);
  }
}

function logIn(event) {
  event.preventDefault();
  openSession(false);
}

function register() {
  openSession(true);
}

async function logOut() {
  try {
    await api("/auth/session", { method: "DELETE" });
  } catch {
    // the session may be gone already: the page logs out either way
  }
  sessionEnded("You are logged out.");
  say("auth-message", "You are logged out.", "info");
}

async function startApp(session) {
  state.user = session.user;
  state.csrf = session.csrf_token;
  $("auth-view").hidden = true;
  $("app-view").hidden = false;
  $("whoami").textContent = session.user.email;
  const admin = session.user.role === "admin";
  $("admin-tab").hidden = !admin;
  showView("chat-view");
  newChat();
  await Promise.all([loadModels(), loadConversations(), admin ? loadProfiles() : null]);
  $("prompt").focus();
}

// Views -----------------------------------------------------------------------------------

function showView(id) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== id;
  // The conversation drawer (phones) belongs to the chat view.
  toggleSidebar(false);
  $("sidebar-toggle").hidden = id !== "chat-view";
  for (const tab of document.querySelectorAll(".tab")) {
    if (tab.dataset.view === id) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  if (id === "keys-view") loadKeys();
  if (id === "account-view") openAccount();
  if (id === "admin-view" && state.user && state.user.role === "admin") {
    say("admin-message", "");
    loadAdmin();
  }
}

function toggleSidebar(open) {
  const sidebar = $("sidebar");
  const show = open ?? !sidebar.classList.contains("open");
  sidebar.classList.toggle("open", show);
  $("sidebar-toggle").setAttribute("aria-expanded", String(show));
}

// Chat ------------------------------------------------------------------------------------

const ROLE_LABELS = { user: "You", assistant: "Assistant", tool: "Tool result" };

// The log follows a streaming answer only while its reader is at the bottom: one who
// scrolled up to read stays where they are.
function atBottom() {
  const log = $("messages-log");
  return log.scrollHeight - log.scrollTop - log.clientHeight < 48;
}

function toBottom() {
  const log = $("messages-log");
  log.scrollTop = log.scrollHeight;
}

// A message in the log. An assistant's text is Markdown (built by markdown.js); a person's
// and a tool's stay as typed. `item.markdown` is an answer's view, for streaming.
function addMessage(role, text) {
  const follow = atBottom();
  const markdown = role === "assistant";
  const content = element("div", { class: markdown ? "content markdown" : "content" });
  const item = element(
    "li",
    { class: `message-item ${role}` },
    element("span", { class: "role", text: ROLE_LABELS[role] || role }),
    content,
  );
  if (markdown) item.markdown = Markdown.render(content, text || "");
  else content.textContent = text || "";
  $("messages").append(item);
  if (follow) toBottom();
  return item;
}

function jsonShown(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

// A labelled block: a tool call's name and arguments, or a tool's result. Text only.
function toolBlock(label, text) {
  return element(
    "div",
    { class: "tool-block", role: "group", "aria-label": label },
    element("span", { class: "tool-label", text: label }),
    element("pre", { tabindex: "0" }, element("code", { text })),
  );
}

// An answer its reader stopped: kept with what it had said (the server stores it so too).
function markStopped(answer) {
  answer.dataset.finish = "cancelled";
  answer.append(element("span", { class: "note", text: "Stopped." }));
}

function setGenerating(generating) {
  $("send-button").hidden = generating;
  $("stop-button").hidden = !generating;
  $("prompt").setAttribute("aria-busy", String(generating));
}

function chosenSettings() {
  const settings = {};
  const temperature = $("temperature").valueAsNumber;
  const maxTokens = $("max-tokens").valueAsNumber;
  if (!Number.isNaN(temperature)) settings.temperature = temperature;
  if (!Number.isNaN(maxTokens)) settings.max_tokens = maxTokens;
  return settings;
}

async function send(event) {
  if (event) event.preventDefault();
  const text = $("prompt").value;
  if (!text.trim() || state.generation) return;
  say("chat-message", "");
  $("prompt").value = "";
  addMessage("user", text);
  toBottom(); // one's own question: the log shows it
  const answer = addMessage("assistant", "");
  answer.setAttribute("aria-busy", "true");
  // Tokens arrive faster than frames: the text is rendered at most once a frame.
  let written = "";
  let frame = 0;
  const render = () => {
    frame = 0;
    const follow = atBottom();
    answer.markdown.update(written);
    if (follow) toBottom();
  };
  const body = {
    messages: [{ role: "user", content: text }],
    stream: true,
    settings: chosenSettings(),
  };
  if ($("model").value) body.model = $("model").value;
  if (state.conversationId) body.conversation_id = state.conversationId;
  if ($("system").value.trim()) body.system = $("system").value;
  if ($("profile").value.trim()) body.profile = $("profile").value.trim();
  const generation = new AbortController();
  state.generation = generation;
  setGenerating(true);
  let fresh = false;
  try {
    const response = await request("/llm/generate", {
      method: "POST",
      body,
      signal: generation.signal,
    });
    await readEvents(response, (name, data) => {
      if (name === "start" && data.conversation_id) {
        fresh = !state.conversationId;
        state.conversationId = data.conversation_id;
      } else if (name === "token") {
        written += data.text;
        if (!frame) frame = requestAnimationFrame(render);
      } else if (name === "done") {
        const usage = data.usage || {};
        answer.dataset.finish = data.finish_reason;
        answer.title = `${data.model}: ${usage.completion_tokens ?? "?"} tokens, ${data.finish_reason}`;
        // A new conversation is stored with its first answer: list it now.
        if (fresh) loadConversations();
      } else if (name === "error") {
        throw new ApiError(data.status || 503, data.detail || "The generation failed.");
      }
    });
  } catch (error) {
    if (error.name === "AbortError") {
      markStopped(answer);
      // The server stores a stopped first answer once it has seen the client go.
      if (fresh) setTimeout(loadConversations, 500);
    } else {
      answer.dataset.finish = "error";
      say("chat-message", error.message);
      if (!written) answer.remove();
    }
  } finally {
    if (frame) cancelAnimationFrame(frame);
    if (answer.isConnected) render();
    answer.removeAttribute("aria-busy");
    state.generation = null;
    setGenerating(false);
    $("prompt").focus();
  }
}

function stop() {
  if (state.generation) state.generation.abort();
}

function newChat() {
  stop();
  state.conversationId = null;
  $("messages").replaceChildren();
  $("conversation-title").textContent = "New chat";
  say("chat-message", "");
  markCurrentConversation();
  toggleSidebar(false);
}

async function openConversation(id) {
  stop();
  try {
    const conversation = await api(`/conversations/${encodeURIComponent(id)}`);
    state.conversationId = conversation.id;
    $("conversation-title").textContent = conversation.title;
    $("messages").replaceChildren();
    const called = new Map(); // a tool call's id: its function's name
    for (const message of conversation.messages) {
      if (!["user", "assistant", "tool"].includes(message.role)) continue;
      // Tool calls and results (an app's, through /v1): labelled blocks of text.
      if (message.role === "tool") {
        const name = called.get(message.tool_call_id) || "a tool";
        const item = addMessage("tool", "");
        item.querySelector(".content").replaceWith(
          toolBlock(`Result of ${name}`, message.content),
        );
        continue;
      }
      const item = addMessage(message.role, message.content);
      for (const call of message.tool_calls || []) {
        const name = (call.function && call.function.name) || "unknown";
        called.set(call.id, name);
        item.append(toolBlock(`Tool call: ${name}`, jsonShown(call.function?.arguments || "")));
      }
      if (message.finish_reason === "cancelled") markStopped(item);
    }
    toBottom();
    if ([...$("model").options].some((option) => option.value === conversation.model)) {
      $("model").value = conversation.model;
    }
    say("chat-message", "");
    markCurrentConversation();
    toggleSidebar(false);
  } catch (error) {
    say("chat-message", error.message);
  }
}

function markCurrentConversation() {
  for (const item of $("conversation-list").children) {
    const open = item.querySelector(".open");
    if (item.dataset.id === state.conversationId) {
      open.setAttribute("aria-current", "true");
      $("conversation-title").textContent = open.textContent;
    } else {
      open.removeAttribute("aria-current");
    }
  }
}

async function loadConversations() {
  try {
    const page = await api("/conversations?limit=100");
    $("conversation-list").replaceChildren(...page.items.map(conversationItem));
    markCurrentConversation();
  } catch (error) {
    say("chat-message", error.message);
  }
}

function conversationItem(conversation) {
  const item = element("li", { class: "conversation" });
  item.dataset.id = conversation.id;
  const open = element("button", {
    type: "button",
    class: "open",
    text: conversation.title,
    title: `${conversation.model}, ${when(conversation.updated_at)}`,
    onclick: () => openConversation(conversation.id),
  });
  const rename = element("button", {
    type: "button",
    class: "small secondary",
    text: "Rename",
    "aria-label": `Rename ${conversation.title}`,
    onclick: () => startRename(item, conversation),
  });
  const remove = element("button", {
    type: "button",
    class: "small danger",
    text: "Delete",
    "aria-label": `Delete ${conversation.title}`,
    onclick: () => confirmDelete(remove, conversation),
  });
  item.append(open, element("span", { class: "actions" }, rename, remove));
  return item;
}

function startRename(item, conversation) {
  const input = element("input", {
    type: "text",
    value: conversation.title,
    maxlength: "200",
    "aria-label": "New title",
  });
  const save = element("button", { type: "submit", class: "small", text: "Save" });
  const cancel = element("button", {
    type: "button",
    class: "small secondary",
    text: "Cancel",
    onclick: () => loadConversations(),
  });
  const form = element("form", { class: "rename" }, input, save, cancel);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const renamed = await api(`/conversations/${encodeURIComponent(conversation.id)}`, {
        method: "PATCH",
        body: { title: input.value },
      });
      if (renamed.id === state.conversationId) {
        $("conversation-title").textContent = renamed.title;
      }
      await loadConversations();
    } catch (error) {
      say("chat-message", error.message);
    }
  });
  item.replaceChildren(form);
  input.focus();
  input.select();
}

function confirmDelete(button, conversation) {
  if (button.dataset.armed !== "true") {
    button.dataset.armed = "true";
    button.textContent = "Confirm delete";
    return;
  }
  api(`/conversations/${encodeURIComponent(conversation.id)}`, { method: "DELETE" })
    .then(() => {
      if (conversation.id === state.conversationId) newChat();
      return loadConversations();
    })
    .catch((error) => say("chat-message", error.message));
}

async function loadModels() {
  try {
    const list = await api("/llm/models");
    state.defaultModel = list.default;
    const select = $("model");
    const chosen = select.value;
    select.replaceChildren(
      ...list.models.map((model) =>
        element("option", {
          value: model.alias,
          text: model.alias + (model.default ? " (default)" : "") + (model.state === "ready" ? "" : ` (${model.state})`),
        }),
      ),
    );
    select.value = chosen || list.default;
    return list;
  } catch (error) {
    say("chat-message", error.message);
    return null;
  }
}

// API keys --------------------------------------------------------------------------------

async function loadKeys() {
  try {
    const keys = await api("/auth/api-keys");
    $("key-list").replaceChildren(...keys.map(keyRow));
  } catch (error) {
    say("keys-message", error.message);
  }
}

function keyRow(key) {
  const revoked = Boolean(key.revoked_at);
  const expired = key.expires_at && new Date(key.expires_at) < new Date();
  const actions = element("td");
  if (!revoked) {
    actions.append(
      element("button", {
        type: "button",
        class: "small danger",
        text: "Revoke",
        "aria-label": `Revoke ${key.name}`,
        onclick: () => revokeKey(key),
      }),
    );
  }
  return element(
    "tr",
    {},
    element("td", { text: key.name }),
    element("td", {}, element("code", { text: `${key.prefix}…` })),
    element("td", { text: when(key.created_at) }),
    element("td", { text: when(key.last_used_at) }),
    element("td", { text: revoked ? "revoked" : expired ? "expired" : "active" }),
    actions,
  );
}

async function createKey(event) {
  event.preventDefault();
  const name = $("key-name").value.trim();
  if (!name) {
    say("keys-message", "Give the key a name.");
    return;
  }
  try {
    const created = await api("/auth/api-keys", { method: "POST", body: { name } });
    $("new-key-value").textContent = created.key;
    $("new-key").hidden = false;
    $("key-name").value = "";
    say("keys-message", `Key "${created.name}" created.`, "info");
    await loadKeys();
  } catch (error) {
    say("keys-message", error.message);
  }
}

async function revokeKey(key) {
  try {
    await api(`/auth/api-keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
    $("new-key").hidden = true;
    say("keys-message", `Key "${key.name}" revoked.`, "info");
    await loadKeys();
  } catch (error) {
    say("keys-message", error.message);
  }
}

// Administration (shown to admins only; the API checks the role again) ----------------------

async function loadAdmin() {
  try {
    const [users, models] = await Promise.all([api("/users?limit=100"), api("/llm/models")]);
    $("user-list").replaceChildren(...users.items.map(userRow));
    $("model-list").replaceChildren(...models.models.map(modelRow));
    await loadProfiles();
  } catch (error) {
    say("admin-message", error.message);
  }
}

function userRow(user) {
  const role = element(
    "select",
    { "aria-label": `Role of ${user.email}` },
    element("option", { value: "user", text: "user" }),
    element("option", { value: "admin", text: "admin" }),
  );
  role.value = user.role;
  role.addEventListener("change", () => updateUser(user, { role: role.value }));
  const active = element("input", { type: "checkbox", "aria-label": `${user.email} is active` });
  active.checked = user.is_active;
  active.addEventListener("change", () => updateUser(user, { is_active: active.checked }));
  return element(
    "tr",
    {},
    element("td", { text: user.email }),
    element("td", {}, role),
    element("td", {}, active),
    element("td", { text: when(user.created_at) }),
  );
}

async function updateUser(user, change) {
  try {
    await api(`/users/${encodeURIComponent(user.id)}`, { method: "PATCH", body: change });
    say("admin-message", `${user.email} updated.`, "info");
  } catch (error) {
    say("admin-message", error.message);
  }
  await loadAdmin();
}

function modelState(model) {
  const cell = element("td", { text: model.error ? `${model.state}: ${model.error}` : model.state });
  if (model.state === "downloading" || model.state === "loading") {
    const bar = element("progress", { max: 1, "aria-label": `${model.alias} ${model.state}` });
    if (model.progress !== null && model.progress !== undefined) bar.value = model.progress;
    const shown = model.progress === null || model.progress === undefined ? "" : ` ${Math.round(model.progress * 100)}%`;
    cell.replaceChildren(element("span", { text: `${model.state}${shown} ` }), bar);
  }
  return cell;
}

function modelRow(model) {
  const loaded = model.state === "ready";
  const action = loaded ? "unload" : "load";
  const label = loaded ? "Unload" : "Load";
  const busy = model.state === "downloading" || model.state === "loading";
  const actions = element("td", {});
  if (!busy) {
    actions.append(
      element("button", {
        type: "button",
        class: "small",
        text: label,
        "aria-label": `${label} ${model.alias}`,
        onclick: () => changeModel(model, action),
      }),
    );
  }
  if (model.origin === "catalog") {
    actions.append(
      element("button", {
        type: "button",
        class: "small",
        text: "Delete",
        "aria-label": `Delete ${model.alias}`,
        onclick: () => deleteModel(model),
      }),
    );
  }
  return element(
    "tr",
    { id: `model-row-${model.alias}` },
    element("td", { text: model.alias + (model.default ? " (default)" : "") }),
    modelState(model),
    element("td", {}, element("code", { text: model.file || "" })),
    actions,
  );
}

async function addModel(event) {
  event.preventDefault();
  const alias = $("model-alias").value.trim();
  const source = $("model-source").value;
  const body = { alias, [source]: $("model-location").value.trim() };
  const digest = $("model-sha256").value.trim();
  const key = $("model-key").value;
  if (digest && source === "url") body.sha256 = digest;
  if (key && source === "remote") body.api_key = key;
  try {
    const added = await api("/llm/models", { method: "POST", body });
    $("model-form").reset();
    say("admin-message", `Adding ${alias}…`, "info");
    await loadAdmin();
    await followModel(added.alias);
  } catch (error) {
    say("admin-message", error.message);
  }
}

// The model's states as they change, until it is ready or failed: its row and its bar.
async function followModel(alias) {
  const response = await request(`/llm/models/${encodeURIComponent(alias)}/events`);
  let last = null;
  await readEvents(response, (_, model) => {
    last = model;
    $(`model-row-${alias}`)?.replaceWith(modelRow(model));
  });
  if (last?.state === "ready") say("admin-message", `${alias} is ready.`, "info");
  else if (last?.state === "failed") say("admin-message", `${alias} failed: ${last.error}`);
  await Promise.all([loadAdmin(), loadModels()]);
}

async function deleteModel(model) {
  if (!window.confirm(`Delete ${model.alias}? It is unloaded on every replica.`)) return;
  try {
    await api(`/llm/models/${encodeURIComponent(model.alias)}`, { method: "DELETE" });
    say("admin-message", `${model.alias} deleted.`, "info");
  } catch (error) {
    say("admin-message", error.message);
  }
  await Promise.all([loadAdmin(), loadModels()]);
}

async function changeModel(model, action) {
  say("admin-message", `${action === "load" ? "Loading" : "Unloading"} ${model.alias}…`, "info");
  try {
    await api(`/llm/models/${encodeURIComponent(model.alias)}/${action}`, { method: "POST" });
    say("admin-message", `${model.alias} ${action === "load" ? "loaded" : "unloaded"}.`, "info");
  } catch (error) {
    say("admin-message", error.message);
  }
  await Promise.all([loadAdmin(), loadModels()]);
}

// Account: one's password, email, sessions and usage ------------------------------------------

function openAccount() {
  $("account-email").textContent = state.user ? state.user.email : "";
  say("account-message", "");
  loadUsage();
}

const USAGE_ROWS = [
  ["requests_per_minute", "Requests in the last minute"],
  ["tokens_per_minute", "Tokens this minute"],
  ["tokens_per_day", "Tokens today"],
];

function seconds(value) {
  if (value >= 3600) return `${Math.floor(value / 3600)} h ${Math.floor((value % 3600) / 60)} min`;
  if (value >= 60) return `${Math.floor(value / 60)} min`;
  return `${value} s`;
}

function usageRow([key, label], window) {
  const limited = window.limit !== null && window.limit !== undefined;
  const shown = limited ? `${window.used} of ${window.limit}` : `${window.used} (no limit)`;
  const bar = limited
    ? element("meter", {
        min: 0,
        max: window.limit,
        value: Math.min(window.used, window.limit),
        high: window.limit * 0.8,
        optimum: 0,
        "aria-label": `${label}: ${shown}`,
      })
    : "";
  const row = element(
    "tr",
    {},
    element("th", { scope: "row", text: label }),
    element("td", { class: "used", text: shown }),
    element("td", {}, bar),
    element("td", { text: `in ${seconds(window.reset_seconds)}` }),
  );
  row.dataset.window = key;
  return row;
}

async function loadUsage() {
  try {
    const usage = await api("/users/me/usage");
    $("usage-list").replaceChildren(...USAGE_ROWS.map((row) => usageRow(row, usage[row[0]])));
  } catch (error) {
    say("account-message", error.message);
  }
}

async function changeAccount(body, done) {
  try {
    const user = await api("/users/me", { method: "PATCH", body });
    state.user = user;
    $("whoami").textContent = user.email;
    $("account-email").textContent = user.email;
    say("account-message", done, "info");
    return true;
  } catch (error) {
    say("account-message", error.message);
    return false;
  }
}

async function changePassword(event) {
  event.preventDefault();
  const body = {
    current_password: $("current-password").value,
    new_password: $("new-password").value,
  };
  if (!body.current_password || !body.new_password) {
    say("account-message", "Enter your current password and a new one.");
    return;
  }
  const changed = await changeAccount(
    body,
    "Password changed. Your other sessions and API keys have ended; this one goes on.",
  );
  if (changed) $("password-form").reset();
}

async function changeEmail(event) {
  event.preventDefault();
  const body = { current_password: $("email-password").value, email: $("new-email").value.trim() };
  if (!body.current_password || !body.email) {
    say("account-message", "Enter the new email and your password.");
    return;
  }
  const changed = await changeAccount(
    body,
    "Email changed. Your other sessions and API keys have ended; this one goes on.",
  );
  if (changed) $("email-form").reset();
}

async function logOutEverywhere() {
  try {
    await api("/auth/logout-all", { method: "POST" });
  } catch (error) {
    say("account-message", error.message);
    return;
  }
  sessionEnded("");
  say("auth-message", "You are logged out everywhere.", "info");
}

// Profiles (admins): a name, a system prompt and default settings ----------------------------

const PROFILE_SETTINGS = [
  ["temperature", "profile-temperature"],
  ["max_tokens", "profile-max-tokens"],
  ["top_p", "profile-top-p"],
  ["top_k", "profile-top-k"],
  ["repeat_penalty", "profile-repeat-penalty"],
  ["seed", "profile-seed"],
];

async function loadProfiles() {
  try {
    const profiles = await api("/admin/profiles");
    // The chat's Profile field suggests them.
    $("profile-names").replaceChildren(
      ...profiles.map((profile) => element("option", { value: profile.name })),
    );
    $("profile-list").replaceChildren(...profiles.map(profileRow));
  } catch (error) {
    say("profiles-message", error.message);
  }
}

function settingsShown(settings) {
  const parts = PROFILE_SETTINGS.filter(([key]) => settings[key] !== undefined).map(
    ([key]) => `${key} ${settings[key]}`,
  );
  return parts.join(", ") || "server defaults";
}

function profileRow(profile) {
  return element(
    "tr",
    {},
    element("td", { text: profile.name }),
    element("td", { class: "clip", text: profile.system_prompt, title: profile.system_prompt }),
    element("td", { text: settingsShown(profile.settings || {}) }),
    element(
      "td",
      { class: "actions" },
      element("button", {
        type: "button",
        class: "small secondary",
        text: "Edit",
        "aria-label": `Edit ${profile.name}`,
        onclick: () => editProfile(profile),
      }),
      element("button", {
        type: "button",
        class: "small danger",
        text: "Delete",
        "aria-label": `Delete ${profile.name}`,
        onclick: () => deleteProfile(profile),
      }),
    ),
  );
}

function editProfile(profile) {
  const form = $("profile-form");
  form.dataset.id = profile.id;
  $("profile-name").value = profile.name;
  $("profile-description").value = profile.description || "";
  $("profile-system").value = profile.system_prompt;
  const settings = profile.settings || {};
  for (const [key, id] of PROFILE_SETTINGS) $(id).value = settings[key] ?? "";
  $("profile-save").textContent = "Save profile";
  $("profile-cancel").hidden = false;
  $("profile-form-heading").textContent = `Edit ${profile.name}`;
  $("profile-name").focus();
}

function resetProfileForm() {
  const form = $("profile-form");
  form.reset();
  delete form.dataset.id;
  $("profile-save").textContent = "Create profile";
  $("profile-cancel").hidden = true;
  $("profile-form-heading").textContent = "New profile";
}

async function saveProfile(event) {
  event.preventDefault();
  const settings = {};
  for (const [key, id] of PROFILE_SETTINGS) {
    const value = $(id).valueAsNumber;
    if (!Number.isNaN(value)) settings[key] = value;
  }
  const body = {
    name: $("profile-name").value.trim(),
    description: $("profile-description").value,
    system_prompt: $("profile-system").value,
    settings,
  };
  const id = $("profile-form").dataset.id;
  try {
    const saved = id
      ? await api(`/admin/profiles/${encodeURIComponent(id)}`, { method: "PATCH", body })
      : await api("/admin/profiles", { method: "POST", body });
    say("profiles-message", `Profile ${saved.name} ${id ? "saved" : "created"}.`, "info");
    resetProfileForm();
    await loadProfiles();
  } catch (error) {
    say("profiles-message", error.message);
  }
}

async function deleteProfile(profile) {
  if (!window.confirm(`Delete the profile ${profile.name}? Chats that use it go on without it.`)) {
    return;
  }
  try {
    await api(`/admin/profiles/${encodeURIComponent(profile.id)}`, { method: "DELETE" });
    say("profiles-message", `Profile ${profile.name} deleted.`, "info");
    if ($("profile-form").dataset.id === profile.id) resetProfileForm();
  } catch (error) {
    say("profiles-message", error.message);
  }
  await loadProfiles();
}

// Memory search -----------------------------------------------------------------------------

async function searchMessages(event) {
  event?.preventDefault();
  const query = $("search-query").value.trim();
  const list = $("search-results");
  if (!query) {
    list.replaceChildren();
    list.hidden = true;
    say("search-message", "");
    return;
  }
  try {
    const found = await api(`/conversations/search?q=${encodeURIComponent(query)}&limit=10`);
    list.replaceChildren(...found.items.map(searchHit));
    list.hidden = found.items.length === 0;
    say("search-message", found.items.length ? "" : "Nothing found.", "info");
  } catch (error) {
    list.replaceChildren();
    list.hidden = true;
    say("search-message", error.message);
  }
}

function searchHit(hit) {
  // Text only: the snippet and title are stored messages (model output among them).
  const open = element(
    "button",
    {
      type: "button",
      class: "hit",
      title: `${when(hit.created_at)}, similarity ${hit.score.toFixed(2)}`,
      onclick: () => openConversation(hit.conversation_id),
    },
    element("span", { class: "hit-title", text: hit.conversation_title }),
    element("span", { class: "hit-snippet", text: `${hit.role}: ${hit.snippet}` }),
  );
  const item = element("li", { class: "search-hit" }, open);
  item.dataset.conversationId = hit.conversation_id;
  return item;
}

// Wiring ----------------------------------------------------------------------------------

function wire() {
  $("auth-form").addEventListener("submit", logIn);
  $("register-button").addEventListener("click", register);
  $("logout-button").addEventListener("click", logOut);
  $("composer").addEventListener("submit", send);
  $("stop-button").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newChat);
  $("sidebar-toggle").addEventListener("click", () => toggleSidebar());
  $("key-form").addEventListener("submit", createKey);
  $("search-form").addEventListener("submit", searchMessages);
  $("model-form").addEventListener("submit", addModel);
  $("password-form").addEventListener("submit", changePassword);
  $("email-form").addEventListener("submit", changeEmail);
  $("logout-all-button").addEventListener("click", logOutEverywhere);
  $("usage-refresh").addEventListener("click", loadUsage);
  $("profile-form").addEventListener("submit", saveProfile);
  $("profile-cancel").addEventListener("click", resetProfileForm);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
}

async function boot() {
  wire();
  try {
    await startApp(await api("/auth/session"));
  } catch {
    showAuth();
  }
}

boot();
