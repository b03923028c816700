// lmforge studio: the little JavaScript the pages need. No libraries; user text is only ever set with
// textContent, never innerHTML.
"use strict";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

async function postJSON(url, csrf, body) {
  const r = await fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify(body)});
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((data.error && data.error.message) || ("HTTP " + r.status));
  return data;
}

// ---------------------------------------------------------------------------- shared bits
document.addEventListener("change", (ev) => {
  if (ev.target.matches("select[data-autosubmit]")) ev.target.form.submit();
});
document.addEventListener("click", (ev) => {
  const t = ev.target;
  if (t.matches("[data-confirm]") && !window.confirm(t.dataset.confirm)) ev.preventDefault();
  if (t.matches("[data-copy]")) {
    const text = document.getElementById(t.dataset.copy).textContent;
    if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
    t.textContent = "Copied";
  }
});

// ---------------------------------------------------------------------------- bot builder
function setupBuilder() {
  const card = document.getElementById("train");
  if (!card) return;
  const bot = card.dataset.bot, csrf = card.dataset.csrf;
  const button = document.getElementById("train-button");
  const bar = document.getElementById("train-progress");
  const status = document.getElementById("train-status");

  const add = document.getElementById("add-intent");
  if (add) add.addEventListener("click", () => {
    const rows = document.getElementById("intent-rows");
    const copy = rows.querySelector("tr.new").cloneNode(true);
    copy.querySelectorAll("input, textarea").forEach((i) => { i.value = ""; });
    rows.appendChild(copy);
    copy.querySelector("input").focus();
  });

  function show(s) {
    bar.value = s.progress;
    status.textContent = s.status + ": " + s.message;
    status.dataset.status = s.status;
    status.dataset.version = s.version;
    button.disabled = s.status === "running";
  }
  async function poll() {
    const r = await fetch(`/studio/bots/${bot}/train`, {credentials: "same-origin", headers: {"Accept": "application/json"}});
    const s = await r.json();
    show(s);
    if (s.status === "running") setTimeout(poll, 400);
  }
  button.addEventListener("click", async () => {
    button.disabled = true;
    try { show(await postJSON(`/studio/bots/${bot}/train`, csrf, {})); } catch (e) { status.textContent = e.message; }
    poll();
  });
  if (status.dataset.status === "running") poll();

  const log = document.getElementById("test-log");
  const form = document.getElementById("test-form");
  const input = document.getElementById("test-input");
  let conversation = null;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    log.appendChild(el("p", "user", text));
    try {
      const r = await postJSON(`/studio/bots/${bot}/test`, csrf, {message: text, conversation});
      conversation = r.conversation;
      const p = el("p", "bot");
      p.appendChild(el("span", "answer", r.answer));
      let why = r.source;
      if (r.source === "intent") why += `: ${r.intent}`;
      else if (r.source === "document") why += `: ${r.document}`;
      else if (r.intent) why += ` (closest intent ${r.intent})`;
      why += ` · confidence ${r.confidence.toFixed(2)} (threshold ${r.threshold})`;
      if (r.example && r.source === "intent") why += ` · nearest example “${r.example}”`;
      p.appendChild(el("small", "why", why));
      p.dataset.source = r.source;
      log.appendChild(p);
    } catch (e) {
      log.appendChild(el("p", "error", e.message));
    }
    log.scrollTop = log.scrollHeight;
  });
}

// ---------------------------------------------------------------------------- playground
function setupPlayground() {
  const card = document.getElementById("playground");
  if (!card) return;
  const csrf = card.dataset.csrf, prices = JSON.parse(card.dataset.prices || "{}"), base = card.dataset.base;
  const $ = (id) => document.getElementById(id);
  const history = [];  // earlier turns of the chat, when "keep the conversation" is on
  function showHistory() {
    const box = $("pg-history");
    box.textContent = "";
    for (const m of history) box.appendChild(el("p", m.role, m.role + ": " + m.content));
  }
  $("pg-clear").addEventListener("click", () => { history.length = 0; showHistory(); code(); });
  // The picked model's card: what it is, and a max-tokens limit that fits its context.
  function showCard() {
    const option = $("pg-model").selectedOptions[0];
    if (!option) return;
    $("pg-model-card").textContent = option.dataset.description;
    const limit = $("pg-max-tokens"), context = parseInt(option.dataset.context, 10);
    limit.max = context;
    if (parseInt(limit.value, 10) > context) limit.value = context;
  }
  $("pg-model").addEventListener("change", showCard);
  showCard();
  for (const id of ["pg-temperature", "pg-top-p"]) {
    $(id).addEventListener("input", () => { $(id + "-out").textContent = $(id).value; });
  }
  function request() {
    const stop = $("pg-stop").value.split("\n").filter((s) => s.length > 0).slice(0, 4);
    const body = {model: $("pg-model").value, temperature: parseFloat($("pg-temperature").value),
      top_p: parseFloat($("pg-top-p").value), max_tokens: parseInt($("pg-max-tokens").value, 10)};
    if (stop.length) body.stop = stop;
    if ($("pg-mode").value === "completion") {
      body.prompt = $("pg-prompt").value;
    } else {
      body.messages = [];
      if ($("pg-system").value) body.messages.push({role: "system", content: $("pg-system").value});
      for (const m of history) body.messages.push(m);
      body.messages.push({role: "user", content: $("pg-prompt").value});
    }
    return body;
  }
  function code() {
    const body = request(), chat = $("pg-mode").value === "chat";
    const path = chat ? "chat/completions" : "completions";
    const json = JSON.stringify(body, null, 2).replace(/'/g, "'\\''");
    $("pg-code-curl").textContent = `curl ${base}/v1/${path} \\\n  -H "Authorization: Bearer $LMFORGE_API_KEY" \\\n` +
      `  -H "Content-Type: application/json" \\\n  -d '${json}'`;
    const args = Object.entries(body).map(([k, v]) => `    ${k}=${JSON.stringify(v).replace(/\btrue\b/g, "True").replace(/\bfalse\b/g, "False").replace(/\bnull\b/g, "None")},`).join("\n");
    $("pg-code-python").textContent = `import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url="${base}/v1", api_key=os.environ["LMFORGE_API_KEY"])\n` +
      (chat ? `stream = client.chat.completions.create(\n${args}\n    stream=True,\n)\nfor chunk in stream:\n    if chunk.choices:\n        print(chunk.choices[0].delta.content or "", end="")\n`
            : `stream = client.completions.create(\n${args}\n    stream=True,\n)\nfor chunk in stream:\n    if chunk.choices:\n        print(chunk.choices[0].text, end="")\n`);
  }
  card.addEventListener("input", code);
  card.addEventListener("change", code);
  code();
  $("pg-code-toggle").addEventListener("click", () => { $("pg-code").hidden = !$("pg-code").hidden; });

  $("pg-run").addEventListener("click", async () => {
    const out = $("pg-output"), usage = $("pg-usage"), run = $("pg-run");
    const body = request();
    body.mode = $("pg-mode").value;
    out.textContent = ""; usage.textContent = ""; run.disabled = true;
    try {
      const r = await fetch("/studio/playground/run", {method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body)});
      if (!r.ok) {
        const data = await r.json().catch(() => ({}));
        throw new Error((data.error && data.error.message) || ("HTTP " + r.status));
      }
      const dropped = parseInt(r.headers.get("x-lmforge-dropped-messages") || "0", 10);
      const note = dropped ? ` · ${dropped} earlier message${dropped > 1 ? "s" : ""} left out to fit the model's context` : "";
      const reader = r.body.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const line = buffer.slice(0, cut).trim();
          buffer = buffer.slice(cut + 2);
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          for (const c of chunk.choices || []) out.textContent += c.text !== undefined ? c.text : (c.delta.content || "");
          if (chunk.usage) {
            const p = prices[body.model] || {prompt: 0, completion: 0};
            const cost = (chunk.usage.prompt_tokens * p.prompt + chunk.usage.completion_tokens * p.completion) / 1000;
            usage.textContent = `prompt ${chunk.usage.prompt_tokens} tokens · completion ${chunk.usage.completion_tokens} tokens · cost $${cost.toFixed(6)}${note}`;
            usage.dataset.done = "1";
          }
        }
      }
      if (body.messages && $("pg-keep").checked) {
        history.push(body.messages[body.messages.length - 1], {role: "assistant", content: out.textContent});
        showHistory();
        $("pg-prompt").value = "";
        code();
      }
    } catch (e) {
      usage.textContent = "Error: " + e.message;
    } finally {
      run.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => { setupBuilder(); setupPlayground(); });
