(function () {
  var COUNTS = {{ counts|tojson }};
  function cell(row, text, cls) {
    var td = document.createElement('td');
    td.textContent = text == null ? '' : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }
  function badge(status) {
    var span = document.createElement('span');
    span.className = 'badge ' + String(status).replace(/[^a-z_]/g, '');
    span.textContent = status;
    return span;
  }
  function link(td, href, text, marker) {
    if (td.childNodes.length) td.appendChild(document.createTextNode(' '));
    var a = document.createElement('a');
    a.href = href;
    a.textContent = text;
    a.setAttribute(marker, '');
    td.appendChild(a);
  }
  function when(value) {
    return value ? String(value).replace('T', ' ').slice(0, 19) : '';
  }
  function drawRuns(runs) {
    var body = document.getElementById('runs-body');
    if (!body) return;
    body.textContent = '';
    runs.forEach(function (r) {
      var row = document.createElement('tr');
      row.setAttribute('data-run', r.id);
      cell(row, r.id); cell(row, r.source); cell(row, r.trigger);
      cell(row, '').appendChild(badge(r.status));
      cell(row, when(r.started_at)); cell(row, when(r.ended_at));
      var counts = r.counts || {};
      COUNTS.forEach(function (k) { cell(row, counts[k] == null ? '' : counts[k], 'n'); });
      cell(row, r.error || '', 'err');
      var links = cell(row, '');
      if (r.log_path) link(links, 'runs/' + r.id + '/log', 'log', 'data-log');
      if (r.report) link(links, 'runs/' + r.id + '/report', 'report', 'data-report');
      body.appendChild(row);
    });
    var empty = document.getElementById('runs-empty');
    if (empty) empty.hidden = runs.length > 0;
  }
  function drawRunning(running) {
    var box = document.getElementById('running');
    if (!box) return;
    box.textContent = '';
    if (!running.length) {
      var p = document.createElement('p');
      p.className = 'note';
      p.textContent = 'No crawl is running.';
      box.appendChild(p);
      return;
    }
    running.forEach(function (r) {
      var card = document.createElement('div');
      card.className = 'card';
      card.setAttribute('data-running', r.id);
      var head = document.createElement('div');
      head.textContent = r.source + ' (' + r.id + ') ';
      head.appendChild(badge(r.status));
      card.appendChild(head);
      var progress = r.progress || {};
      var keys = Object.keys(progress);
      var line = document.createElement('div');
      line.textContent = keys.length ? keys.map(function (k) {
        var v = progress[k];
        return k + ' ' + (typeof v === 'object' && v !== null ? JSON.stringify(v) : v);
      }).join(' \u00b7 ') : 'starting';
      card.appendChild(line);
      box.appendChild(card);
    });
  }
  function refresh() {
    fetch('api/summary', {cache: 'no-store', headers: {'Accept': 'application/json'}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) return;
        drawRuns(s.runs || []);
        drawRunning(s.running || []);
        var stamp = document.getElementById('stamp');
        if (stamp) stamp.textContent = 'updated ' + when(s.generated_at) + ' UTC';
      })
      .catch(function () {
        var stamp = document.getElementById('stamp');
        if (stamp) stamp.textContent = 'the service does not answer; retrying';
      });
  }
  setInterval(refresh, {{ refresh_ms }});

  // "run now": POST crawls with the token typed in, kept for this tab only
  var tokenBox = document.getElementById('token');
  var status = document.getElementById('run-now-status');
  var TOKEN_KEY = 'harvest-api-token';
  var RUN_NOW_TIMEOUT_MS = 15000;
  try { if (tokenBox) tokenBox.value = sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) {}
  function say(text, cls) {
    if (!status) return;
    status.textContent = text;
    status.className = cls;
  }
  var form = document.getElementById('run-now-form');
  if (form) form.addEventListener('submit', function (ev) { ev.preventDefault(); });
  document.addEventListener('click', function (ev) {
    var button = ev.target.closest ? ev.target.closest('[data-run-now]') : null;
    if (!button || !tokenBox) return;
    var source = button.getAttribute('data-run-now');
    var token = tokenBox.value.trim();
    if (!token) { say('type the API token ($HARVEST_API_TOKEN) first', 'err'); return; }
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) {}
    button.disabled = true;
    var abort = new AbortController();
    var timer = setTimeout(function () { abort.abort(); }, RUN_NOW_TIMEOUT_MS);
    fetch('crawls', {
      method: 'POST',
      cache: 'no-store',
      headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + token},
      body: JSON.stringify({source: source}),
      signal: abort.signal
    })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (b) {
          if (r.ok) say('run ' + b.id + ' of ' + source + ' queued', 'ok');
          else say(source + ': ' + (b.detail || ('answered ' + r.status)), 'err');
        });
      })
      .catch(function () { say(source + ': the service did not answer', 'err'); })
      .then(function () {
        clearTimeout(timer);
        button.disabled = false;
        refresh();
      });
  });
})();
