//! The browser's style and script, inlined into every page (no network, no CDN).

pub const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1180px;margin:1.2em auto;padding:0 1em;color:#1d1d1f;line-height:1.35}
a{color:#0b57d0;text-decoration:none}a:hover{text-decoration:underline}
h1{font-size:1.45em;margin:.2em 0}h2{font-size:1.12em;margin:1.2em 0 .4em;border-bottom:1px solid #e5e5e5;padding-bottom:.2em}
.muted{color:#6b6b6b}.small{font-size:12px}
nav{font-size:13px;margin-bottom:.6em}nav a{margin-right:1em}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:0 2em}
@media (max-width:900px){.grid{grid-template-columns:1fr}}
.ctx{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;margin:2px 0 6px;padding:3px 4px;border-left:3px solid #eee;word-break:break-word}
.tok{white-space:pre;padding:1px 0;border-radius:2px}
.tok.sel{outline:2px solid #111;outline-offset:0}
.tok.after{opacity:.35}
.val{display:inline-block;min-width:4.2em;color:#555;font-size:11px;text-align:right;margin-right:.6em;font-family:ui-monospace,monospace}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#f6f6f6;cursor:pointer;user-select:none;position:sticky;top:0}
th.num,td.num{text-align:right;font-variant-numeric:tabular-nums}
.lens td{font-family:ui-monospace,monospace;font-size:12px;padding:1px 8px}
.pill{display:inline-block;background:#f1f3f4;border-radius:9px;padding:0 7px;margin:1px;font-family:ui-monospace,monospace;font-size:12px;white-space:pre}
input[type=search]{font-size:14px;padding:4px 8px;width:22em;margin:.3em 0 .6em}
.legend span{display:inline-block;width:14px;height:10px;margin:0 3px 0 10px;vertical-align:middle}
.across{background:#f8f9fb;border:1px solid #e8eaef;padding:6px 10px;border-radius:6px;font-size:13px}
svg text{font-family:system-ui,sans-serif;font-size:11px;fill:#444}
"#;

/// Records script errors and readiness on <body> (checked by the headless-browser test),
/// sorts any table with class `sortable` by a clicked header, and filters rows of the
/// table `#features` by the search box `#filter`.
pub const SCRIPT: &str = r#"
window.addEventListener('error', function (e) { document.body.setAttribute('data-error', String(e.message)); });
(function () {
  function key(td) { var v = td.getAttribute('data-v'); return v === null ? td.textContent.trim().toLowerCase() : parseFloat(v); }
  document.querySelectorAll('table.sortable th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = th.closest('table').tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute('data-asc') !== '1';
      th.closest('tr').querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-asc'); });
      th.setAttribute('data-asc', asc ? '1' : '0');
      rows.sort(function (a, b) {
        var x = key(a.cells[col]), y = key(b.cells[col]);
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  var filter = document.getElementById('filter');
  if (filter) {
    filter.addEventListener('input', function () {
      var q = filter.value.toLowerCase();
      document.querySelectorAll('#features tbody tr').forEach(function (r) {
        r.style.display = r.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
      });
    });
  }
  document.body.setAttribute('data-ready', '1');
})();
"#;
