// The lmforge chat widget. Served by /bots/<token>/widget.js inside a function that defines LMFORGE_BOT
// ({endpoint, title, greeting}). It builds its own small DOM (inside a shadow root, so the host page's
// styles do not leak in) and talks to the bot's REST channel; text is set with textContent only.
"use strict";
var cfg = LMFORGE_BOT;
var host = document.createElement("div");
host.id = "lmforge-widget";
var root = host.attachShadow ? host.attachShadow({mode: "open"}) : host;
var style = document.createElement("style");
style.textContent = [
  ".box{position:fixed;right:16px;bottom:16px;width:320px;font:14px/1.4 system-ui,sans-serif;background:#fff;",
  "border:1px solid #ccd;border-radius:10px;box-shadow:0 4px 18px rgba(0,0,0,.15);display:flex;flex-direction:column;z-index:2147483647}",
  ".head{background:#2d4e9e;color:#fff;padding:8px 12px;border-radius:10px 10px 0 0;font-weight:600}",
  ".log{height:260px;overflow-y:auto;padding:8px}",
  ".msg{margin:6px 0;padding:6px 9px;border-radius:8px;max-width:85%;white-space:pre-wrap;word-wrap:break-word}",
  ".user{background:#e6ecfa;margin-left:auto}.bot{background:#f1f1f1}",
  ".rate{display:block;margin-top:3px}.rate{font-size:12px;color:#666}.rate button{border:1px solid #ccd;border-radius:4px;background:#fff;cursor:pointer;font-size:12px;margin-left:5px;padding:0 6px}",
  "form{display:flex;border-top:1px solid #ddd}input{flex:1;border:0;padding:9px;font:inherit}",
  "form button{border:0;background:#2d4e9e;color:#fff;padding:0 14px;border-radius:0 0 10px 0;cursor:pointer}"
].join("");
root.appendChild(style);
var box = document.createElement("div"); box.className = "box";
var head = document.createElement("div"); head.className = "head"; head.textContent = cfg.title;
var log = document.createElement("div"); log.className = "log";
var form = document.createElement("form");
var input = document.createElement("input"); input.placeholder = "Type a message"; input.maxLength = 2000;
input.setAttribute("aria-label", "Message");
var send = document.createElement("button"); send.type = "submit"; send.textContent = "Send";
form.appendChild(input); form.appendChild(send);
box.appendChild(head); box.appendChild(log); box.appendChild(form);
root.appendChild(box);
var conversation = null;

function add(cls, text) {
  var p = document.createElement("div"); p.className = "msg " + cls; p.textContent = text;
  log.appendChild(p); log.scrollTop = log.scrollHeight; return p;
}
function call(path, body) {
  return fetch(cfg.endpoint + path, {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body)}).then(function (r) {
      return r.json().then(function (d) { if (!r.ok) throw new Error(d.error ? d.error.message : "HTTP " + r.status); return d; });
    });
}
function rating(p, id) {
  var span = document.createElement("span"); span.className = "rate"; span.textContent = "Helpful?";
  [["Yes", 1, "Helpful"], ["No", -1, "Not helpful"]].forEach(function (r) {
    var b = document.createElement("button"); b.type = "button"; b.textContent = r[0]; b.title = r[2];
    b.setAttribute("aria-label", r[2]);
    b.addEventListener("click", function () {
      call("/feedback", {conversation: conversation, message_id: id, rating: r[1]}).then(function () {
        span.textContent = "Thanks for the feedback";
      }).catch(function (e) { span.textContent = e.message; });
    });
    span.appendChild(b);
  });
  p.appendChild(span);
}
if (cfg.greeting) add("bot", cfg.greeting);
form.addEventListener("submit", function (ev) {
  ev.preventDefault();
  var text = input.value.trim();
  if (!text) return;
  input.value = "";
  add("user", text);
  call("/messages", {message: text, conversation: conversation, channel: "widget"}).then(function (d) {
    conversation = d.conversation;
    rating(add("bot", d.answer), d.message_id);
  }).catch(function (e) { add("bot", "(" + e.message + ")"); });
});
function mount() { document.body.appendChild(host); }
if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
