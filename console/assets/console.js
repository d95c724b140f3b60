// stepflow console: polls the live part of a page while runs run, and sends
// the pages' writes to the JSON API with the API token when the server has
// one. No framework, no build.
"use strict";

(function () {
  const POLL_MS = 1500;
  const TOKEN_KEY = "stepflow.apiToken";
  const tokenRequired = document.body.dataset.tokenRequired === "true";

  // --- live parts -------------------------------------------------------------

  // poll refreshes the .live element from its fragment URL while its
  // data-running is "true", keeping open <details> open and leaving it
  // alone while the user edits a form inside it.
  let polling = false;
  let lastHTML = "";

  function poll() {
    if (polling || !document.querySelector(".live[data-running=true]")) return;
    polling = true;
    setTimeout(async function tick() {
      const cur = document.querySelector(".live");
      if (!cur || cur.dataset.running !== "true") {
        polling = false;
        return;
      }
      if (document.hidden || cur.querySelector("form[data-dirty]")) {
        setTimeout(tick, POLL_MS);
        return;
      }
      try {
        await refresh(cur);
      } catch (e) {
        // A server restarting or a network blip: try again later.
      }
      setTimeout(tick, POLL_MS);
    }, POLL_MS);
  }

  async function refresh(cur) {
    const resp = await fetch(cur.dataset.liveUrl, { headers: { Accept: "text/html" }, cache: "no-store" });
    if (!resp.ok) return;
    const html = await resp.text();
    if (html === lastHTML) return;
    lastHTML = html;
    const tpl = document.createElement("template");
    tpl.innerHTML = html;
    const next = tpl.content.querySelector(".live");
    if (!next) return;
    const open = new Set();
    cur.querySelectorAll("details[open][data-key]").forEach((d) => open.add(d.dataset.key));
    next.querySelectorAll("details[data-key]").forEach((d) => { if (open.has(d.dataset.key)) d.open = true; });
    cur.replaceWith(next);
    document.dispatchEvent(new CustomEvent("stepflow:refreshed"));
  }

  // --- writes -------------------------------------------------------------------

  function flash(msg, bad) {
    const el = document.querySelector(".flash");
    el.textContent = msg;
    el.classList.toggle("bad", !!bad);
    el.hidden = false;
  }

  // askToken shows the token dialog and resolves to the token, or null.
  function askToken() {
    const dlg = document.getElementById("token-dialog");
    const input = dlg.querySelector("input[name=token]");
    input.value = "";
    return new Promise((resolve) => {
      dlg.addEventListener("close", function done() {
        dlg.removeEventListener("close", done);
        if (dlg.returnValue === "ok" && input.value.trim() !== "") {
          sessionStorage.setItem(TOKEN_KEY, input.value.trim());
          resolve(input.value.trim());
        } else {
          resolve(null);
        }
      });
      dlg.showModal();
      input.focus();
    });
  }

  // post sends body as JSON to url, with the token when there is one;
  // a 401 asks for the token and tries once more.
  async function post(url, body) {
    let token = sessionStorage.getItem(TOKEN_KEY);
    if (tokenRequired && !token) {
      token = await askToken();
      if (!token) return null;
    }
    for (let attempt = 0; ; attempt++) {
      const headers = { "Content-Type": "application/json" };
      if (token) headers.Authorization = "Bearer " + token;
      const resp = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
      if (resp.status === 401 && attempt === 0) {
        sessionStorage.removeItem(TOKEN_KEY);
        token = await askToken();
        if (!token) return null;
        continue;
      }
      let data = null;
      try { data = await resp.json(); } catch (e) { /* no JSON body */ }
      if (!resp.ok) {
        throw new Error((data && data.error) || resp.status + " " + resp.statusText);
      }
      return data || {};
    }
  }

  function described(url, data) {
    if (url.endsWith("/cancel")) return "Run " + data.runId + " is " + data.status + ".";
    if (url.endsWith("/resume")) return "Resumed.";
    if (url.endsWith("/dead-letters/replay")) {
      const runs = (data.runs || []).length;
      let s = "Replayed " + data.jobs + " job" + (data.jobs === 1 ? "" : "s") + " of " + runs + " run" + (runs === 1 ? "" : "s") + ".";
      if (data.unplayable && data.unplayable.length) s += " " + data.unplayable.length + " dead letter(s) are no job and cannot be replayed.";
      return s;
    }
    return "Done.";
  }

  // After a write the page shows what the server now holds.
  async function settle(msg) {
    const cur = document.querySelector(".live");
    if (cur && cur.dataset.liveUrl) {
      await refresh(cur);
      poll();
      flash(msg);
    } else {
      sessionStorage.setItem("stepflow.flash", msg);
      location.reload();
    }
  }

  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-post]");
    if (!btn) return;
    ev.preventDefault();
    if (btn.dataset.confirm && !confirm(btn.dataset.confirm)) return;
    btn.disabled = true;
    try {
      const body = btn.dataset.body ? JSON.parse(btn.dataset.body) : {};
      const data = await post(btn.dataset.post, body);
      if (data) await settle(described(btn.dataset.post, data));
    } catch (e) {
      flash(e.message, true);
    } finally {
      btn.disabled = false;
    }
  });

  document.addEventListener("input", (ev) => {
    const form = ev.target.closest("form[data-resume]");
    if (form) form.dataset.dirty = "true";
  });

  document.addEventListener("submit", async (ev) => {
    const form = ev.target.closest("form[data-resume]");
    if (!form) return;
    ev.preventDefault();
    const f = new FormData(form);
    const body = { node: String(f.get("node") || "") };
    const text = String(f.get("output") || "").trim();
    if (text !== "") {
      try {
        body.output = JSON.parse(text);
      } catch (e) {
        flash("The output is not JSON: " + e.message, true);
        return;
      }
    } else {
      body.output = null;
    }
    if (f.get("action")) body.action = String(f.get("action"));
    const btn = form.querySelector("button[type=submit]");
    btn.disabled = true;
    try {
      const data = await post(form.dataset.resume, body);
      if (data) {
        delete form.dataset.dirty;
        sessionStorage.setItem("stepflow.flash", described(form.dataset.resume, data));
        location.reload();
      }
    } catch (e) {
      flash(e.message, true);
    } finally {
      btn.disabled = false;
    }
  });

  const pending = sessionStorage.getItem("stepflow.flash");
  if (pending) {
    sessionStorage.removeItem("stepflow.flash");
    flash(pending);
  }
  poll();
})();
