/* Fiduciary consent banner. Served by the privacy center with the policy's cookie categories
   filled in. Scripts, iframes and pixels tagged data-fiduciary-category stay inert until their
   category is allowed (PLA-6); Global Privacy Control turns off what sells or shares (LAW-12);
   every choice is posted to the privacy center as proof (LAW-8). No dependencies. */
(function () {
  "use strict";
  var C = __FIDUCIARY_CONFIG__;
  var me = document.currentScript;
  var base = me && me.src ? new URL(me.src).origin : "";
  var STORE = "fid_consent", VISITOR = "fid_visitor", AGE = 86400 * C.days;
  var gpc = navigator.globalPrivacyControl === true;
  var byKey = {}, optional = [], listeners = [], box = null, reopen = null;
  C.categories.forEach(function (c) {
    byKey[c.key] = c;
    if (!c.required) optional.push(c);
  });

  function readCookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) {
        try { return decodeURIComponent(parts[i].slice(eq + 1)); } catch (e) { return null; }
      }
    }
    return null;
  }
  function writeCookie(name, value, age) {
    document.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=" + age +
      "; Path=/; SameSite=Lax" + (location.protocol === "https:" ? "; Secure" : "");
  }
  function gpcAll(c) { return gpc && c.gpc === "all"; }
  // Under GPC: is this category (or the named cookie of it) kept off?
  function gpcOff(c, cookie) {
    if (!gpc || c.gpc === "none") return false;
    return c.gpc === "all" || !cookie || c.gpc_cookies.indexOf(cookie) >= 0;
  }

  var saved = null;
  try {
    var raw = JSON.parse(readCookie(STORE) || "null");
    if (raw && raw.d === C.digest && raw.c) saved = raw.c;  // a changed banner asks again
  } catch (e) { saved = null; }
  var choices = {};
  C.categories.forEach(function (c) {
    var on = c.required ? true : (saved && c.key in saved ? saved[c.key] === true : c["default"]);
    choices[c.key] = on && !gpcAll(c);
  });

  // ------------------------------------------------------------------ enforcement
  function allowed(el) {
    var c = byKey[el.getAttribute("data-fiduciary-category")];
    if (!c) return false;  // an unknown category stays blocked
    if (c.required) return true;
    return choices[c.key] === true && !gpcOff(c, el.getAttribute("data-fiduciary-cookie"));
  }
  function activate(el) {
    el.setAttribute("data-fiduciary-done", "1");
    if (el.tagName === "SCRIPT") {
      var s = document.createElement("script");
      for (var i = 0; i < el.attributes.length; i++) {
        var a = el.attributes[i];
        if (a.name !== "type" && a.name.indexOf("data-fiduciary") !== 0) s.setAttribute(a.name, a.value);
      }
      s.setAttribute("data-fiduciary-done", "1");
      s.type = el.getAttribute("data-type") || "text/javascript";
      if (!el.hasAttribute("src")) s.text = el.text;
      el.parentNode.replaceChild(s, el);
      return;
    }
    var ph = el.previousElementSibling;
    if (ph && ph.className === "fid-placeholder") ph.parentNode.removeChild(ph);
    el.hidden = false;
    var src = el.getAttribute("data-src");
    if (src) el.setAttribute("src", src);
  }
  function placeholder(el) {
    var ph = el.previousElementSibling;
    if (ph && ph.className === "fid-placeholder") return;
    var c = byKey[el.getAttribute("data-fiduciary-category")];
    if (!c || el.tagName === "IMG") return;  // pixels just stay unloaded
    el.hidden = true;
    ph = make("div", { "class": "fid-placeholder" });
    var off = gpcOff(c, el.getAttribute("data-fiduciary-cookie"));
    var name = el.title ? "“" + el.title + "”" : C.text.content;
    ph.appendChild(make("p", {}, (off ? C.text.blocked_gpc : C.text.blocked)
      .replace("{name}", name).replace("{title}", c.title.toLowerCase())));
    if (!off) {
      var b = make("button", { type: "button" }, C.text.allow.replace("{title}", c.title.toLowerCase()));
      b.addEventListener("click", function () { choices[c.key] = true; commit(); });
      ph.appendChild(b);
    }
    el.parentNode.insertBefore(ph, el);
  }
  function apply() {
    var els = document.querySelectorAll("[data-fiduciary-category]:not([data-fiduciary-done])");
    for (var i = 0; i < els.length; i++) {
      if (allowed(els[i])) activate(els[i]); else if (els[i].tagName !== "SCRIPT") placeholder(els[i]);
    }
  }

  // ------------------------------------------------------------------ the banner
  function make(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]);
    if (text) e.textContent = text;  // policy words are text, never markup
    return e;
  }
  function build() {
    box = make("section", { "class": "fid-banner", "aria-labelledby": "fid-title", hidden: "" });
    var h = make("h2", { id: "fid-title", tabindex: "-1" }, C.text.title);
    var p = make("p", {}, C.text.intro + " ");
    p.appendChild(make("a", { href: base + C.notice }, C.text.notice));
    box.appendChild(h);
    box.appendChild(p);
    if (gpc && optional.some(function (c) { return c.gpc !== "none"; })) {
      box.appendChild(make("p", { "class": "fid-gpc", role: "note" }, C.text.gpc));
    }
    var cats = make("fieldset", { id: "fid-cats", "class": "fid-cats", hidden: "" });
    cats.appendChild(make("legend", {}, C.text.legend));
    C.categories.forEach(function (c) {
      var row = make("div", { "class": "fid-cat" });
      var input = make("input", { type: "checkbox", id: "fid-c-" + c.key, "data-key": c.key,
        "aria-describedby": "fid-h-" + c.key });
      input.checked = choices[c.key];
      input.disabled = c.required || gpcAll(c);
      var label = make("label", { "for": "fid-c-" + c.key }, c.title);
      var hint = c.description + " " + C.text.cookies + ": " +
        c.cookies.map(function (k) { return k.name + ": " + k.provider + ", " + k.lifetime; }).join("; ") + ".";
      var note = c.required ? C.text.always + ". " : (gpcAll(c) ? C.text.gpc_cookie + " " : "");
      var text = make("div", {});
      text.appendChild(label);
      text.appendChild(make("p", { id: "fid-h-" + c.key, "class": "fid-hint" }, note + hint));
      row.appendChild(input);
      row.appendChild(text);
      cats.appendChild(row);
    });
    box.appendChild(cats);
    var actions = make("div", { "class": "fid-actions" });
    var accept = make("button", { type: "button", "data-act": "accept" }, C.text.accept);
    var reject = make("button", { type: "button", "data-act": "reject" }, C.text.reject);
    var choose = make("button", { type: "button", "data-act": "choose", "aria-expanded": "false",
      "aria-controls": "fid-cats" }, C.text.choose);
    var save = make("button", { type: "button", "data-act": "save", hidden: "" }, C.text.save);
    [accept, reject, choose, save].forEach(function (b) { actions.appendChild(b); });
    box.appendChild(actions);
    accept.addEventListener("click", function () {
      optional.forEach(function (c) { choices[c.key] = !gpcAll(c); });
      commit();
    });
    reject.addEventListener("click", function () {
      optional.forEach(function (c) { choices[c.key] = false; });
      commit();
    });
    choose.addEventListener("click", function () {
      var open = cats.hidden;
      cats.hidden = !open;
      save.hidden = !open;
      choose.setAttribute("aria-expanded", open ? "true" : "false");
      var first = cats.querySelector("input:not([disabled])");
      if (open && first) first.focus();
    });
    save.addEventListener("click", function () {
      var inputs = cats.querySelectorAll("input[data-key]");
      for (var i = 0; i < inputs.length; i++) {
        var c = byKey[inputs[i].getAttribute("data-key")];
        if (!c.required) choices[c.key] = inputs[i].checked && !gpcAll(c);
      }
      commit();
    });
    // First in the page's order, so keyboard and screen-reader users meet it early; it is
    // shown fixed at the bottom.
    document.body.insertBefore(box, document.body.firstChild);
  }
  function open(focus) {
    if (!box) build();
    var inputs = box.querySelectorAll("input[data-key]");
    for (var i = 0; i < inputs.length; i++) inputs[i].checked = choices[inputs[i].getAttribute("data-key")];
    box.hidden = false;
    if (reopen) reopen.hidden = true;
    if (focus) box.querySelector("#fid-title").focus();
  }
  function close() {
    var hadFocus = box && box.contains(document.activeElement);
    if (box) box.hidden = true;
    if (!reopen) {
      reopen = make("button", { type: "button", "class": "fid-reopen" }, C.text.settings);
      reopen.addEventListener("click", function () { open(true); });
      document.body.appendChild(reopen);
    }
    reopen.hidden = false;
    if (hadFocus) reopen.focus();
  }

  // ------------------------------------------------------------------ choosing
  function current() {
    var out = {};
    optional.forEach(function (c) { out[c.key] = choices[c.key] === true; });
    return out;
  }
  function send() {
    var body = { visitor: readCookie(VISITOR), choices: current(), region: C.region || null,
      config: C.digest, gpc: gpc };
    if (!window.fetch) return;
    fetch(base + C.api, { method: "POST", mode: "cors", credentials: "omit", keepalive: true,
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (j) { if (j && j.visitor) writeCookie(VISITOR, j.visitor, AGE); })
      .catch(function () { /* the choice holds in this browser; the proof is retried next time */ });
  }
  function commit(quiet) {
    var before = saved || {};
    var revoked = quiet ? [] : optional.filter(function (c) { return before[c.key] === true && !choices[c.key]; });
    saved = current();
    writeCookie(STORE, JSON.stringify({ d: C.digest, c: saved, t: Date.now() }), AGE);
    close();
    send();
    listeners.forEach(function (f) { try { f(current()); } catch (e) { /* a listener's own bug */ } });
    if (revoked.length) {
      // What already ran cannot be unloaded: drop its first-party cookies and reload.
      revoked.forEach(function (c) {
        c.cookies.forEach(function (k) { document.cookie = k.name + "=; Max-Age=0; Path=/"; });
      });
      setTimeout(function () { location.reload(); }, 300);
      return;
    }
    apply();
  }

  function start() {
    var css = make("link", { rel: "stylesheet", href: base + C.css });
    document.head.appendChild(css);
    document.addEventListener("click", function (ev) {
      var t = ev.target && ev.target.closest ? ev.target.closest("[data-fiduciary-open]") : null;
      if (t) { ev.preventDefault(); open(true); }
    });
    if (window.MutationObserver) {
      // Tags the page adds later (a single-page app, a tag manager) are held back too.
      new MutationObserver(function (records) {
        for (var i = 0; i < records.length; i++) {
          for (var j = 0; j < records[i].addedNodes.length; j++) {
            var n = records[i].addedNodes[j];
            if (n.nodeType === 1 && !n.hasAttribute("data-fiduciary-done") &&
                (n.hasAttribute("data-fiduciary-category") || n.querySelector("[data-fiduciary-category]"))) {
              apply();
              return;
            }
          }
        }
      }).observe(document.documentElement, { childList: true, subtree: true });
    }
    apply();
    var toAsk = optional.filter(function (c) { return !gpcAll(c); });
    if (saved) {
      close();
      // GPC turned on since the last choice: record it once.
      if (gpc && optional.some(function (c) { return gpcAll(c) && saved[c.key]; })) commit(true);
    } else if (!optional.length) {
      return;  // strictly necessary cookies only: nothing to ask
    } else if (!toAsk.length) {
      commit(true);  // GPC already said no to everything there is to ask: record it, no prompt
    } else {
      open(false);
    }
  }

  window.FiduciaryConsent = {
    open: function () { open(true); },
    choices: current,
    gpc: gpc,
    onChange: function (f) { listeners.push(f); }
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
