"""The two HTML pages the server sends: the start page and the annotation page (HTML + inline JS).

The annotation page gets its text from the JSON API and puts it in with ``textContent``, so
responses are shown exactly as generated and never interpreted as HTML. Neither page nor the API
ever names a system: the annotator sees a query, a left and a right response.
"""

import html
import json

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:980px;margin:1.5em auto;
padding:0 1em;color:#212529;background:#f8f9fa}
h1{font-size:1.25em;margin:.2em 0}
.bar{display:flex;justify-content:space-between;align-items:center;gap:1em}
.box{background:#fff;border:1px solid #dee2e6;border-radius:8px;padding:.8em 1em;margin:.6em 0;
white-space:pre-wrap;font-size:1.1em;line-height:1.4}
.label{font-size:.8em;color:#6c757d;text-transform:uppercase;letter-spacing:.05em;margin-bottom:.2em}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em}
.crit{background:#fff;border:2px solid #dee2e6;border-radius:8px;padding:.5em 1em;margin:.5em 0;
display:grid;grid-template-columns:1fr auto;gap:.3em 1em;align-items:center}
.crit.active{border-color:#1971c2}
.crit .def{font-size:.85em;color:#495057}
.crit .name{font-weight:600}
.buttons{grid-row:1/3;grid-column:2;display:flex;gap:.4em}
button{font-size:1em;padding:.45em .8em;border:1px solid #adb5bd;border-radius:6px;background:#fff;cursor:pointer}
button.chosen{background:#1971c2;color:#fff;border-color:#1971c2}
kbd{font-size:.8em;border:1px solid #adb5bd;border-radius:3px;padding:0 .3em;background:#f1f3f5;color:#495057}
button.chosen kbd{color:#fff;background:transparent}
#status{font-size:.9em;color:#6c757d}
#status.error{color:#c92a2a;font-weight:600}
#progress{font-variant-numeric:tabular-nums;font-weight:600}
.help{font-size:.85em;color:#495057}
#done{display:none}
"""

START = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Human evaluation</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{style}</style></head>
<body><h1>Human evaluation</h1>
<p>You will see {n} items. Each shows a query from a conversation and two responses to it. For each
criterion, say which response is better, or that they are equally good. The responses come from
different systems in a random order; judge each on its own merits.</p>
<div class="box">{criteria}</div>
{error}
<form action="/start" method="get"><label>Your name (letters, digits, . _ -):
<input name="name" id="name" autofocus required pattern="[A-Za-z0-9][A-Za-z0-9_.\\-]{{0,39}}" maxlength="40"></label>
<button type="submit">Start</button></form>
<p class="help">Your work is saved after every answer; come back to the same address (or enter the same
name) to continue where you stopped.</p></body></html>
"""

ANNOTATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Human evaluation</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{style}</style></head>
<body>
<div class="bar"><h1>Item <span id="position">…</span></h1>
<div>judged: <span id="progress">… / …</span></div></div>
<div id="work">
<div class="label">Query</div><div class="box" id="query"></div>
<div class="pair"><div><div class="label">Left response</div><div class="box" id="left"></div></div>
<div><div class="label">Right response</div><div class="box" id="right"></div></div></div>
<div id="criteria"></div>
<div class="bar"><div><button id="prev">&larr; previous item <kbd>p</kbd></button>
<button id="next">next item <kbd>n</kbd> &rarr;</button></div><div id="status"></div></div>
<p class="help">Keys: <kbd>1</kbd> or <kbd>a</kbd> or <kbd>&larr;</kbd> left is better, <kbd>2</kbd> or
<kbd>s</kbd> or <kbd>&darr;</kbd> tie, <kbd>3</kbd> or <kbd>d</kbd> or <kbd>&rarr;</kbd> right is better,
for the highlighted criterion; <kbd>&uarr;</kbd> back to the previous criterion. The next item opens when
every criterion has an answer. Every answer is saved at once.</p>
</div>
<div id="done" class="box">All <span id="total"></span> items are judged. Thank you! You can close this tab,
or <button id="review">review from item 1</button></div>
<script>
const ANNOTATOR = {annotator};
const API = "/api/a/" + encodeURIComponent(ANNOTATOR);
const KEYS = {{"1": "left", "a": "left", "ArrowLeft": "left", "2": "tie", "s": "tie", "ArrowDown": "tie",
              "3": "right", "d": "right", "ArrowRight": "right"}};
const LABELS = {{left: "left is better", tie: "tie", right: "right is better"}};
const KEYCAP = {{left: "1", tie: "2", right: "3"}};
let criteria = [], total = 0, position = 1, choices = {{}}, active = 0, pending = 0, busy = false;

function setStatus(text, error) {{
  const s = document.getElementById("status");
  s.textContent = text; s.className = error ? "error" : "";
}}
async function api(path, body) {{
  const opts = body === undefined ? {{}} : {{method: "POST", headers: {{"Content-Type": "application/json"}},
                                            body: JSON.stringify(body)}};
  const r = await fetch(API + path, opts);
  if (!r.ok) throw new Error((await r.text()) || ("HTTP " + r.status));
  return r.json();
}}
function buildCriteria() {{
  const box = document.getElementById("criteria");
  criteria.forEach((c, i) => {{
    const row = document.createElement("div");
    row.className = "crit"; row.dataset.criterion = c.name;
    const name = document.createElement("div"); name.className = "name";
    name.textContent = c.name.charAt(0).toUpperCase() + c.name.slice(1);
    const def = document.createElement("div"); def.className = "def"; def.textContent = c.definition;
    const buttons = document.createElement("div"); buttons.className = "buttons";
    ["left", "tie", "right"].forEach(choice => {{
      const b = document.createElement("button");
      b.dataset.criterion = c.name; b.dataset.choice = choice;
      b.append(LABELS[choice] + " ");
      const k = document.createElement("kbd"); k.textContent = KEYCAP[choice]; b.append(k);
      b.addEventListener("click", e => {{ e.stopPropagation(); e.currentTarget.blur(); answer(i, choice); }});
      buttons.append(b);
    }});
    row.append(name, buttons, def);
    row.addEventListener("click", () => {{ active = i; paint(); }});
    box.append(row);
  }});
}}
function paint() {{
  document.querySelectorAll(".crit").forEach((row, i) => {{
    row.classList.toggle("active", i === active);
    row.querySelectorAll("button").forEach(b =>
      b.classList.toggle("chosen", choices[b.dataset.criterion] === b.dataset.choice));
  }});
}}
function updateProgress(done) {{
  document.getElementById("progress").textContent = done + " / " + total;
}}
async function show(pos) {{
  busy = true;
  if (pos > total) {{
    document.getElementById("work").style.display = "none";
    document.getElementById("done").style.display = "block";
    document.getElementById("position").textContent = "–";
    document.body.dataset.position = String(pos);
    busy = false; return;
  }}
  const it = await api("/item/" + pos);
  position = it.position; choices = it.choices || {{}};
  document.getElementById("work").style.display = "";
  document.getElementById("done").style.display = "none";
  document.getElementById("position").textContent = position + " of " + total;
  document.getElementById("query").textContent = it.query;
  document.getElementById("left").textContent = it.left || "(empty response)";
  document.getElementById("right").textContent = it.right || "(empty response)";
  updateProgress(it.done);
  const open = criteria.findIndex(c => !(c.name in choices));
  active = open < 0 ? 0 : open;
  paint();
  history.replaceState(null, "", "?item=" + position);
  document.body.dataset.position = String(position);
  busy = false;
}}
async function save(criterion, choice, pos) {{
  pending += 1; setStatus("saving…");
  for (let attempt = 0; ; attempt++) {{
    try {{
      const r = await api("/judge", {{position: pos, criterion: criterion, choice: choice}});
      pending -= 1; updateProgress(r.done);
      if (!pending) setStatus("saved");
      return;
    }} catch (err) {{
      setStatus("not saved (" + err.message + "); retrying — keep this tab open", true);
      await new Promise(res => setTimeout(res, Math.min(5000, 500 * (attempt + 1))));
    }}
  }}
}}
async function answer(i, choice) {{
  if (busy) return;
  const c = criteria[i].name, pos = position;
  const wasComplete = criteria.every(x => x.name in choices);
  choices[c] = choice;
  const saved = save(c, choice, pos);
  if (wasComplete) {{ active = Math.min(i + 1, criteria.length - 1); paint(); return; }}  // reviewing: stay
  const open = criteria.findIndex(x => !(x.name in choices));
  if (open >= 0) {{
    const after = criteria.findIndex((x, j) => j > i && !(x.name in choices));
    active = after >= 0 ? after : open; paint(); return;
  }}
  paint(); busy = true;
  await saved;
  while (pending) await new Promise(res => setTimeout(res, 50));
  await show(pos + 1);
}}
document.addEventListener("keydown", e => {{
  if (e.ctrlKey || e.metaKey || e.altKey || busy) return;
  if (e.key in KEYS) {{ e.preventDefault(); answer(active, KEYS[e.key]); }}
  else if (e.key === "ArrowUp" || e.key === "Backspace") {{ e.preventDefault(); active = Math.max(0, active - 1); paint(); }}
  else if (e.key === "p") {{ if (position > 1) show(position - 1); }}
  else if (e.key === "n") {{ if (criteria.every(x => x.name in choices)) show(position + 1); }}
}});
document.getElementById("prev").addEventListener("click", () => {{ if (position > 1 && !busy) show(position - 1); }});
document.getElementById("next").addEventListener("click", () => {{
  if (busy) return;
  if (criteria.every(x => x.name in choices)) show(position + 1);
  else setStatus("answer every criterion first", true);
}});
document.getElementById("review").addEventListener("click", () => show(1));
(async () => {{
  try {{
    const st = await api("/state");
    criteria = st.criteria; total = st.total;
    document.getElementById("total").textContent = total;
    buildCriteria();
    const asked = parseInt(new URLSearchParams(location.search).get("item") || "", 10);
    // a bookmarked ?item= is honoured only for review; otherwise resume at the first unjudged item
    await show(asked >= 1 && asked < st.resume ? asked : st.resume);
    document.body.dataset.ready = "1";
  }} catch (err) {{ setStatus("cannot load the study: " + err.message, true); }}
}})();
</script></body></html>
"""


def start_page(n_items: int, criteria, error: str = "") -> str:
    crit = "<br>".join(f"<b>{html.escape(name.capitalize())}</b>: {html.escape(d)}" for name, d in criteria)
    err = f'<p id="error" style="color:#c92a2a">{html.escape(error)}</p>' if error else ""
    return START.format(style=STYLE, n=n_items, criteria=crit, error=err)


def annotate_page(annotator: str) -> str:
    # JSON inside <script>: escape "<" so a name can never close the script element
    return ANNOTATE.format(style=STYLE, annotator=json.dumps(annotator).replace("<", "\\u003c"))
