// Wizard-of-Oz operator console of CommunityBots: the queue of live wizard conversations
// (polled), and for one conversation the transcript as it happens (server-sent events),
// the topics, the CTM's suggestion and a composer that speaks as a chosen agent.
// A move carries a client-made id and is kept in localStorage until the server has it,
// so a login that expires mid-chat loses nothing: log in again and send it again.
// Everything shown is set as text, never as HTML.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // -- the queue -------------------------------------------------------------------------
  const queueRoot = document.getElementById("wizard-queue");
  if (queueRoot) {
    const body = document.getElementById("queue");
    const refresh = async () => {
      const response = await fetch("/admin/wizard/queue.json", { credentials: "same-origin" });
      if (response.status === 401) { window.location.href = "/admin/login?next=/admin/wizard"; return; }
      const data = await response.json();
      body.textContent = "";
      if (!data.conversations.length) {
        const tr = el("tr");
        const td = el("td", "", "No live wizard conversation.");
        td.colSpan = 5;
        tr.append(td);
        body.append(tr);
      }
      for (const c of data.conversations) {
        const tr = el("tr");
        tr.dataset.participant = c.participant;
        const link = el("a", "", c.participant);
        link.href = "/admin/wizard/" + c.participant;
        const first = el("td");
        first.append(link);
        tr.append(first, el("td", "", c.consented_at.slice(0, 19).replace("T", " ")),
          el("td", "num", String(c.turns)),
          el("td", c.waiting_since ? "waiting" : "", c.waiting_since ? "since " + c.waiting_since.slice(11, 19) : ""),
          el("td", "", c.operator || "nobody"));
        body.append(tr);
      }
      queueRoot.dataset.ready = "true";
    };
    refresh();
    setInterval(refresh, 2000);
    return;
  }

  // -- one conversation --------------------------------------------------------------------
  const root = document.getElementById("console");
  if (!root) return;
  const pid = root.dataset.participant;
  const maxChars = parseInt(root.dataset.maxChars, 10);
  const log = document.getElementById("w-log");
  const claimNote = document.getElementById("claim-note");
  const claimButton = document.getElementById("claim");
  const releaseButton = document.getElementById("release");
  const errorBox = document.getElementById("console-error");
  const topicBadge = document.getElementById("w-topic");
  const agentLabel = document.getElementById("w-agent");
  const progressText = document.getElementById("w-progress");
  const form = document.getElementById("w-composer");
  const asAgent = document.getElementById("w-as-agent");
  const asTopic = document.getElementById("w-as-topic");
  const text = document.getElementById("w-text");
  const sendButton = document.getElementById("w-send");
  const endButton = document.getElementById("w-end");
  const useButton = document.getElementById("w-use");
  const suggestionBox = document.getElementById("w-suggestion");
  const topicsList = document.getElementById("w-topics");
  const PENDING_KEY = "cb_wizard_move:" + pid;

  let snap = null; // the latest state from the stream
  let agents = {};
  let topics = {};
  let mine = false;
  let busy = false;
  let lastCues = null;

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function loginLost() {
    const next = encodeURIComponent("/admin/wizard/" + pid);
    showError("");
    errorBox.hidden = false;
    errorBox.textContent = "Your login has expired; your unsent message is kept on this page. ";
    const link = el("a", "", "Log in again");
    link.href = "/admin/login?next=" + next;
    link.id = "relogin";
    errorBox.append(link);
  }

  async function post(path, body) {
    const response = await fetch("/admin/wizard/" + pid + path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    const data = await response.json().catch(() => ({}));
    if (response.status === 401) { loginLost(); throw new Error("login expired"); }
    if (!response.ok) throw new Error(data.error || data.detail || "the server answered " + response.status);
    return data;
  }

  function option(select, value, label) {
    const o = el("option", "", label);
    o.value = value;
    select.append(o);
  }

  function setup(data) {
    agents = {};
    topics = {};
    asAgent.textContent = "";
    asTopic.textContent = "";
    for (const a of data.agents) { agents[a.id] = a; option(asAgent, a.id, a.name); }
    for (const t of data.topics) { topics[t.id] = t; option(asTopic, t.id, t.title); }
  }

  function drawItem(item) {
    if (item.type === "event") {
      const div = el("div", "event");
      div.append(el("span", "kind", item.kind), document.createTextNode(
        (item.topic_id ? " [" + item.topic_id + "] " : " ") + item.reason));
      log.append(div);
      return;
    }
    const mineBubble = item.role === "participant";
    const div = el("div", "bubble " + (mineBubble ? "mine" : "bot agent-" + item.agent_id));
    div.dataset.seq = String(item.seq);
    div.append(el("span", "who", mineBubble ? "Participant" : item.agent_name));
    const p = el("p", "text", item.text);
    p.dir = "auto";
    div.append(p);
    if (mineBubble && item.intent) {
      div.append(el("span", "meta", "intent " + item.intent +
        (item.quality !== null && item.quality !== undefined ? " · quality " + item.quality.toFixed(2) : "")));
    }
    if (!mineBubble) {
      div.append(el("span", "operator", item.operator ? "written by " + item.operator : "sent by the CTM"));
      if (item.operator && item.suggestion && item.suggestion.replies.length) {
        div.append(el("span", "suggested", "CTM: " + item.suggestion.replies.map((r) => r.text).join(" ")));
      }
    }
    log.append(div);
  }

  function drawTopics(data) {
    topicsList.textContent = "";
    for (const t of data.topics) {
      const li = el("li", t.status);
      li.dataset.topic = t.id;
      li.append(el("span", "", t.title + " (" + agents[t.agent_id].name + "): " +
        (t.status === "done" ? "covered" : t.status)));
      for (const q of t.questions) {
        const b = el("button", "ask", q);
        b.type = "button";
        b.addEventListener("click", () => {
          asTopic.value = t.id;
          asAgent.value = t.agent_id;
          text.value = q;
          text.focus();
        });
        li.append(b);
      }
      topicsList.append(li);
    }
  }

  function drawSuggestion(s) {
    suggestionBox.textContent = "";
    const open = s && !s.answered;
    useButton.disabled = !open || !mine || busy;
    if (!s) {
      suggestionBox.append(el("p", "hint", "None yet: the CTM suggests a move for each participant message."));
      return;
    }
    suggestionBox.append(el("p", "hint", open ? "For the participant's last message (waiting):"
      : "For the participant's last message (answered):"));
    for (const r of s.replies) {
      const div = el("div", "reply agent-" + r.agent_id);
      div.append(el("strong", "", (agents[r.agent_id] ? agents[r.agent_id].name : r.agent_id) + ": "),
        document.createTextNode(r.text));
      suggestionBox.append(div);
    }
    for (const d of s.decisions) suggestionBox.append(el("div", "decision", d.kind + ": " + d.reason));
  }

  function drawState(data) {
    const cues = data.cues;
    const claim = data.claim;
    mine = claim.mine;
    claimNote.textContent = data.status !== "chatting" ? "This conversation has ended."
      : mine ? "You are answering this conversation."
      : claim.operator ? claim.operator + " is answering this conversation (read only)."
      : "Nobody is answering this conversation.";
    claimButton.hidden = mine || data.status !== "chatting";
    claimButton.disabled = Boolean(claim.operator) && !mine;
    releaseButton.hidden = !mine || data.status !== "chatting";
    topicBadge.textContent = cues.finished ? "Done" : (cues.topic_title || "…");
    agentLabel.textContent = cues.agent_id ? "Active: " + agents[cues.agent_id].name : "";
    progressText.textContent = cues.progress[0] + " of " + cues.progress[1] + " topics covered";
    // the composer follows the conversation unless the operator chose otherwise meanwhile
    const changed = !lastCues || lastCues.agent_id !== cues.agent_id || lastCues.topic_id !== cues.topic_id;
    if (changed && cues.agent_id) { asAgent.value = cues.agent_id; asTopic.value = cues.topic_id; }
    lastCues = cues;
    const enabled = mine && data.status === "chatting" && !busy;
    for (const c of [sendButton, endButton, asAgent, asTopic, text]) c.disabled = !enabled;
    form.hidden = data.status !== "chatting";
    drawTopics(data);
    drawSuggestion(data.suggestion);
  }

  let source = null;
  function connect() {
    source = new EventSource("/admin/wizard/" + pid + "/stream");
    source.onmessage = (ev) => {
      const data = JSON.parse(ev.data);
      if (!snap) setup(data);
      snap = data;
      for (const item of data.items) drawItem(item);
      if (data.items.length) log.scrollTop = log.scrollHeight;
      drawState(data);
      root.dataset.ready = "true";
    };
    source.addEventListener("expired", () => { source.close(); loginLost(); });
    source.addEventListener("gone", () => { source.close(); showError("This conversation has been deleted."); });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) loginLost();
    };
  }

  async function sendMove(move) {
    if (busy) return;
    busy = true;
    if (snap) drawState(snap);
    showError("");
    localStorage.setItem(PENDING_KEY, JSON.stringify(move));
    try {
      await post("/moves", move);
      localStorage.removeItem(PENDING_KEY);
      if (move.action === "say") text.value = "";
    } catch (err) {
      if (err.message !== "login expired") {
        showError(err.message);
        localStorage.removeItem(PENDING_KEY); // refused: nothing was stored; the text stays in the box
      }
    } finally {
      busy = false;
      if (snap) drawState(snap);
      text.focus();
    }
  }

  function pendingFor(action, body) {
    // a move kept from before a lost login is sent again with its id (stored once)
    const saved = JSON.parse(localStorage.getItem(PENDING_KEY) || "null");
    if (saved && saved.action === action && saved.text === (body.text || "")) return saved.client_id;
    return newId();
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = text.value;
    if (!value.trim()) { showError("Write a message first."); return; }
    if (value.length > maxChars) { showError("Too long (" + value.length + " of " + maxChars + " characters)."); return; }
    const move = { action: "say", text: value, agent_id: asAgent.value, topic_id: asTopic.value };
    sendMove({ client_id: pendingFor("say", move), ...move });
  });
  text.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); form.requestSubmit(); }
  });
  asTopic.addEventListener("change", () => {
    const t = topics[asTopic.value];
    if (t) asAgent.value = t.agent_id; // a topic's own agent asks about it, unless changed again
  });
  useButton.addEventListener("click", () => sendMove({ client_id: pendingFor("suggestion", {}), action: "suggestion", text: "" }));
  endButton.addEventListener("click", () => sendMove({ client_id: pendingFor("end", {}), action: "end", text: "" }));
  claimButton.addEventListener("click", async () => {
    try { await post("/claim"); showError(""); } catch (err) { if (err.message !== "login expired") showError(err.message); }
  });
  releaseButton.addEventListener("click", async () => {
    try { await post("/release"); } catch (err) { if (err.message !== "login expired") showError(err.message); }
  });

  const saved = JSON.parse(localStorage.getItem(PENDING_KEY) || "null");
  if (saved && saved.action === "say") text.value = saved.text;
  connect();
  // open to answer: claim it unless someone else has
  post("/claim").catch((err) => { if (err.message !== "login expired") showError(err.message); });
})();
