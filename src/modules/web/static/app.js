// The chat page: plain JavaScript, no libraries, no build step.
//
// Every string from the server (model output above all) reaches the page through
// textContent or an attribute, never as HTML. The session lives in an HttpOnly cookie set by
// POST /auth/session; state-changing requests echo its CSRF token in X-CSRF-Token.
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
  await Promise.all([loadModels(), loadConversations(), admin ? loadProfileNames() : null]);
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

function addMessage(role, text) {
  const content = element("div", { class: "content", text });
  const item = element(
    "li",
    { class: `message-item ${role}` },
    element("span", { class: "role", text: ROLE_LABELS[role] || role }),
    content,
  );
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
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
  const answer = addMessage("assistant", "");
  const content = answer.querySelector(".content");
  answer.setAttribute("aria-busy", "true");
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
        content.append(data.text);
        answer.scrollIntoView({ block: "end" });
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
      if (!content.textContent) answer.remove();
    }
  } finally {
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
    for (const message of conversation.messages) {
      if (!["user", "assistant", "tool"].includes(message.role)) continue;
      // Tool calls and results (an app's, through /v1) show as text, as they were sent.
      const calls = (message.tool_calls || []).map(
        (call) => `Calls ${call.function.name}(${call.function.arguments})`,
      );
      const text = [message.content, ...calls].filter(Boolean).join("\n");
      const item = addMessage(message.role, text);
      if (message.finish_reason === "cancelled") markStopped(item);
    }
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

async function loadProfileNames() {
  try {
    const profiles = await api("/admin/profiles");
    $("profile-names").replaceChildren(
      ...profiles.map((profile) => element("option", { value: profile.name })),
    );
  } catch {
    // suggestions only
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
