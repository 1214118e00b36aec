// Chat page of CommunityBots: draws the conversation, the agents panel and the cues,
// and sends messages exactly once (a client-made id per message; the server ignores a
// repeated id and answers with the stored turn). Everything shown is set as text,
// never as HTML.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const root = document.getElementById("chat");
  const log = document.getElementById("log");
  const agentsList = document.getElementById("agents");
  const badge = document.getElementById("topic-badge");
  const progress = document.getElementById("progress");
  const progressBar = document.getElementById("progress-bar");
  const progressText = document.getElementById("progress-text");
  const typing = document.getElementById("typing");
  const typingText = document.getElementById("typing-text");
  const errorBox = document.getElementById("error");
  const finished = document.getElementById("finished");
  const continueLink = document.getElementById("continue");
  const form = document.getElementById("composer");
  const input = document.getElementById("text");
  const sendButton = document.getElementById("send");
  const skipButton = document.getElementById("skip");
  const counter = document.getElementById("counter");
  const maxChars = parseInt(root.dataset.maxChars, 10);
  const PENDING_KEY = "cb_pending";
  const REPLY_PAUSE_MS = 250;
  const WIZARD_POLL_MS = 500;
  const wizardNote = document.getElementById("wizard-note");
  const clockBox = document.getElementById("clock");
  const endButton = document.getElementById("end-chat");
  const maxMinutes = parseFloat(root.dataset.maxMinutes);

  // the elapsed-time clock; "End chat" once every topic is done or the time is up (the
  // server checks the same and refuses an early end)
  let clockBase = null; // [elapsed seconds from the server, Date.now() then]
  let topicsDone = false;
  function tick() {
    if (!clockBase) return;
    const s = Math.floor(clockBase[0] + (Date.now() - clockBase[1]) / 1000);
    clockBox.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
    endButton.disabled = !(topicsDone || s >= maxMinutes * 60);
  }
  setInterval(tick, 1000);
  endButton.addEventListener("click", async () => {
    endButton.disabled = true;
    const response = await fetch("/api/end", {
      method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
    const body = await response.json().catch(() => ({}));
    if (response.ok) { window.location.href = body.next; return; }
    showError(body.error || "the server answered " + response.status);
    tick();
  });

  let agents = {};
  let busy = false;
  let owner = null; // the session's participant: a message kept for another is never sent

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  function drawAgents(list) {
    agents = {};
    agentsList.textContent = "";
    for (const a of list) {
      agents[a.id] = a;
      const li = document.createElement("li");
      li.className = "agent agent-" + a.id;
      li.dataset.agent = a.id;
      const avatar = document.createElement("img"); // SVG: no emoji font needed
      avatar.className = "avatar";
      avatar.alt = "";
      avatar.width = 30;
      avatar.height = 30;
      avatar.src = "/avatars/" + encodeURIComponent(a.id) + ".svg";
      const name = document.createElement("span");
      name.className = "agent-name";
      name.textContent = a.name;
      const status = document.createElement("span");
      status.className = "agent-status";
      const label = document.createElement("span");
      label.className = "agent-text";
      label.append(name, status);
      li.append(avatar, label);
      agentsList.append(li);
    }
  }

  function drawCues(cues) {
    for (const li of agentsList.children) {
      const awake = li.dataset.agent === cues.agent_id && !cues.finished;
      li.classList.toggle("awake", awake);
      li.classList.toggle("asleep", !awake);
      li.querySelector(".agent-status").textContent = awake ? "awake" : "asleep";
      li.setAttribute("aria-label", agents[li.dataset.agent].name + ", " + (awake ? "active" : "asleep"));
    }
    badge.textContent = cues.finished ? "Done" : (cues.topic_title || "…");
    badge.setAttribute("aria-label", "Current topic: " + badge.textContent);
    const [done, total] = cues.progress;
    progress.setAttribute("aria-valuemax", String(total));
    progress.setAttribute("aria-valuenow", String(done));
    progressBar.style.width = (total ? (100 * done) / total : 0) + "%";
    progressText.textContent = done + " of " + total + " topics";
    topicsDone = cues.finished || (total > 0 && done >= total);
    tick();
    if (cues.finished) {
      finished.hidden = false;
      form.hidden = true;
      continueLink.href = cues.status === "completed" ? "/done" : "/survey";
      continueLink.focus();
    }
  }

  function bubble(m) {
    const div = document.createElement("div");
    const mine = m.role === "participant";
    div.className = "bubble " + (mine ? "mine" : "bot agent-" + m.agent_id);
    div.dataset.seq = m.seq === undefined ? "" : String(m.seq);
    const label = document.createElement("span");
    label.className = "who";
    label.textContent = mine ? "You" : (m.agent_name || "Bot");
    const text = document.createElement("p");
    text.className = "text";
    text.dir = "auto"; // right-to-left text (or an override character) stays inside its bubble
    text.textContent = m.text;
    div.append(label, text);
    log.append(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }

  function setBusy(value, agentId) {
    busy = value;
    sendButton.disabled = value;
    skipButton.disabled = value;
    typing.hidden = !value;
    if (value) {
      const a = agents[agentId];
      typingText.textContent = (a ? a.name : "The bot") + " is typing…";
    }
  }

  let currentAgent = null;

  async function post(pending) {
    // retries network failures with the same id: the server stores the message once
    for (let attempt = 0; ; attempt++) {
      let response;
      try {
        response = await fetch("/api/messages", {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
          body: JSON.stringify(pending),
          credentials: "same-origin",
        });
      } catch (err) {
        if (attempt >= 5) throw new Error("the connection failed; your message is kept, reload to retry");
        await sleep(500 * 2 ** attempt);
        continue;
      }
      if (response.status === 503 && attempt < 5) { await sleep(300 * 2 ** attempt); continue; }
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        const error = new Error(body.error || "the server answered " + response.status);
        error.status = response.status;
        throw error;
      }
      return body;
    }
  }

  async function deliver(pending, ownBubble) {
    setBusy(true, currentAgent);
    showError("");
    try {
      const body = await post(pending);
      localStorage.removeItem(PENDING_KEY);
      for (const r of body.replies) {
        typingText.textContent = (agents[r.agent_id] ? agents[r.agent_id].name : "The bot") + " is typing…";
        await sleep(REPLY_PAUSE_MS);
        bubble(r);
        if (r.agent_id && r.agent_id !== currentAgent) { currentAgent = r.agent_id; }
        drawCues({ ...body.cues, finished: false, agent_id: r.agent_id });
      }
      currentAgent = body.cues.agent_id || currentAgent;
      drawCues(body.cues);
    } catch (err) {
      if (err.status) {
        // refused (too long, too many, ended): nothing was stored, so the bubble goes and
        // the text returns to the box to be edited
        localStorage.removeItem(PENDING_KEY);
        if (ownBubble) ownBubble.remove();
        if (pending.kind === "message" && !input.value) { input.value = pending.text; updateCounter(); }
      }
      showError(err.message);
    } finally {
      setBusy(false);
      if (!form.hidden) input.focus();
    }
  }

  function send(text, kind) {
    if (busy) return;
    const pending = { client_id: newId(), text: text, kind: kind };
    localStorage.setItem(PENDING_KEY, JSON.stringify({ ...pending, owner: owner }));
    const own = bubble({ role: "participant", text: kind === "skip_button" ? "Skip topic" : text });
    deliver(pending, own);
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (busy) return; // the text stays in the box until the previous message is answered
    const text = input.value;
    if (!text.trim()) { showError("Please write something first."); return; }
    if (text.length > maxChars) { showError("Your message is too long (" + text.length + " of " + maxChars + " characters)."); return; }
    input.value = "";
    updateCounter();
    send(text, "message");
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  skipButton.addEventListener("click", () => send("", "skip_button"));

  function updateCounter() {
    const n = input.value.length;
    counter.textContent = n > maxChars * 0.8 ? n + " / " + maxChars : "";
  }
  input.addEventListener("input", updateCounter);

  // wizard condition: the replies come from a person at the operator console, so the
  // page asks for them twice a second instead of getting them with its own message
  let nextSeq = 0;
  const shown = new Set();

  function drawWizard(status) {
    const typingNow = status.waiting && status.operator_online;
    if (!busy) {
      typing.hidden = !typingNow;
      const a = agents[currentAgent];
      typingText.textContent = (a ? a.name : "The bot") + " is typing…";
    }
    wizardNote.hidden = !(status.waiting && !status.operator_online);
    wizardNote.textContent = "The chatbots are busy right now, so the answer may take a while. " +
      "Please keep this page open: " + (status.fallback_in_s !== null
        ? "an answer comes in about " + Math.ceil(status.fallback_in_s) + " s."
        : "you will get an answer as soon as they are back.");
  }

  async function poll() {
    try {
      const response = await fetch("/api/wizard/updates?after=" + nextSeq, { credentials: "same-origin" });
      if (response.status === 401) { window.location.href = "/"; return; }
      if (response.ok) {
        const body = await response.json();
        for (const m of body.messages) {
          nextSeq = Math.max(nextSeq, m.seq + 1);
          if (shown.has(m.seq)) continue;
          shown.add(m.seq);
          bubble(m);
          if (m.agent_id) currentAgent = m.agent_id;
        }
        drawWizard(body.wizard);
        if (!busy) drawCues(body.cues);
        if (body.cues.finished) { typing.hidden = true; wizardNote.hidden = true; return; }
      }
    } catch (err) {
      // the network comes back: ask again
    }
    setTimeout(poll, WIZARD_POLL_MS);
  }

  async function load() {
    const response = await fetch("/api/session", { credentials: "same-origin" });
    if (response.status === 401) { window.location.href = "/"; return; }
    const data = await response.json();
    owner = data.participant;
    clockBase = [data.clock.elapsed_s, Date.now()];
    drawAgents(data.agents);
    const seen = new Set();
    for (const m of data.messages) {
      bubble(m);
      if (m.client_id) seen.add(m.client_id);
      shown.add(m.seq);
      nextSeq = Math.max(nextSeq, m.seq + 1);
    }
    currentAgent = data.cues.agent_id;
    drawCues(data.cues);
    root.dataset.ready = "true";
    const saved = localStorage.getItem(PENDING_KEY);
    if (saved) {
      const { owner: savedOwner, ...pending } = JSON.parse(saved);
      // a message kept by the previous person at this browser is dropped, never sent
      if (savedOwner !== owner || seen.has(pending.client_id) || data.cues.finished) {
        localStorage.removeItem(PENDING_KEY);
      } else {
        const own = bubble({ role: "participant", text: pending.kind === "skip_button" ? "Skip topic" : pending.text });
        await deliver(pending, own);
      }
    }
    if (!form.hidden) input.focus();
    if (data.condition === "wizard" && !data.cues.finished) poll();
  }

  load().catch((err) => showError("Could not load the conversation: " + err.message));
})();
