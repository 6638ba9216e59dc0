/// The pages' stylesheet and script, served from memory (`/assets/…`): a handful of kilobytes
/// that ship inside the binary, so the dashboard needs no files beside it.
enum Assets {
    static let stylesheet = """
        :root { color-scheme: light dark; --line: #8884; --muted: #888; --accent: #3367d6; }
        body { font: 14px/1.4 system-ui, sans-serif; margin: 0; }
        header { display: flex; gap: 1.5em; align-items: center; padding: .6em 1.2em; border-bottom: 1px solid var(--line); }
        header nav { display: flex; gap: 1em; flex: 1; }
        header nav a, nav.tabs a { text-decoration: none; color: inherit; padding: .2em .4em; }
        a[aria-current=page] { border-bottom: 2px solid var(--accent); font-weight: 600; }
        #live { color: var(--muted); font-size: 12px; }
        #live.on { color: #2a8f3a; }
        main, section.add { padding: 0 1.2em; }
        section.add { padding-top: 1em; display: grid; gap: .3em; max-width: 60em; }
        section.add form { display: grid; gap: .3em; }
        section.add form button { justify-self: start; padding: .2em 1.5em; }
        nav.tabs { display: flex; gap: .5em; margin: 1em 0 0; }
        textarea { width: 100%; font: inherit; }
        h2 { font-size: 15px; margin: 1.2em 0 .4em; }
        table { border-collapse: collapse; width: 100%; }
        th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid var(--line); vertical-align: top; }
        td.empty { color: var(--muted); }
        td.actions { white-space: nowrap; }
        ul.counts { display: flex; gap: 2em; list-style: none; padding: 0; margin: 1em 0; }
        ul.counts b { font-size: 20px; }
        .warn { background: #f5c54233; padding: .5em 1em; }
        .outcome { padding: 0 .4em; border-radius: 3px; background: #8882; }
        .outcome.succeeded { background: #2a8f3a33; } .outcome.failed, .outcome.parked { background: #d6333333; }
        .outcome.retrying, .outcome.deferred { background: #f5c54244; }
        ol.timeline { margin: .3em 0; padding-left: 1.4em; color: var(--muted); }
        ol.timeline b { color: initial; font-weight: 500; }
        form.filters { display: flex; gap: .5em; margin: 1em 0; flex-wrap: wrap; }
        #add-result:empty { display: none; }
        #add-result { font-size: 13px; }
        .login { max-width: 22em; margin: 15vh auto; display: grid; gap: .6em; }
        """

    /// Live updates: the server-sent events of `/api/live` say when something changed, and the
    /// page fetches its `<main>` again (`?fragment=1`), keeping open timelines open. Actions are
    /// `POST`s with the session's CSRF token in `X-CSRF-Token`.
    static let script = """
        "use strict";
        const csrf = document.querySelector('meta[name=csrf-token]').content;
        const content = document.getElementById('content');
        const live = document.getElementById('live');

        async function post(path, body) {
          const response = await fetch(path, {
            method: 'POST', credentials: 'same-origin',
            headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
            body: JSON.stringify(body || {}) });
          let answer = {};
          try { answer = await response.json(); } catch (e) {}
          if (response.status === 401) { location.reload(); }
          return { ok: response.ok, answer };
        }

        let refreshing = false, again = false;
        async function refresh() {
          if (refreshing) { again = true; return; }
          refreshing = true;
          try {
            const url = new URL(location.href);
            url.searchParams.set('fragment', '1');
            const response = await fetch(url, { credentials: 'same-origin' });
            if (response.status === 401) { location.reload(); return; }
            if (response.ok) {
              const open = [...content.querySelectorAll('details[open]')].map(d => d.id);
              content.innerHTML = await response.text();
              for (const id of open) { const d = document.getElementById(id); if (d) d.open = true; }
              document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
            }
          } finally {
            refreshing = false;
            if (again) { again = false; refresh(); }
          }
        }

        function connect() {
          const source = new EventSource('/api/live');
          source.addEventListener('open', () => { live.textContent = 'live'; live.className = 'on'; });
          source.addEventListener('change', refresh);
          source.addEventListener('error', () => { live.textContent = 'reconnecting…'; live.className = ''; });
        }
        connect();
        setInterval(refresh, 30000);

        const actions = {
          'retry-now': url => post('/api/retries/now', { url }),
          'retry-cancel': url => post('/api/retries/cancel', { url }),
          'redownload': url => post('/api/redownload', { url }),
          'failed-requeue': url => post('/api/failed/requeue', { urls: [url] }),
          'failed-purge': url => post('/api/failed/purge', { urls: [url] }),
          'failed-requeue-all': () => post('/api/failed/requeue', { all: true }),
          'failed-purge-all': () => confirm('Delete every failed task?') ? post('/api/failed/purge', { all: true }) : null,
        };
        document.addEventListener('click', async event => {
          const button = event.target.closest('button[data-action]');
          if (!button) return;
          const result = await actions[button.dataset.action]?.(button.dataset.url);
          if (!result) return;
          button.title = result.ok ? 'done' : (result.answer.error || 'failed');
          button.classList.toggle('done', result.ok);
          refresh();
        });

        document.getElementById('logout').addEventListener('click', async () => {
          await post('/logout');
          location.href = '/';
        });

        const form = document.getElementById('add-form');
        if (form) form.addEventListener('submit', async event => {
          event.preventDefault();
          const urls = form.elements.urls.value.split('\\n').map(s => s.trim()).filter(s => s);
          const result = await post('/api/submit', { urls, force: form.elements.force.checked });
          const out = document.getElementById('add-result');
          out.replaceChildren();
          if (result.answer.error) out.append(result.answer.error);
          for (const line of result.answer.answers || []) {
            const row = document.createElement('div');
            row.className = 'answer ' + line.status;
            row.textContent = line.status + (line.list ? ' (a list: a worker queues its stories)' : '') + ': '
              + (line.url || line.input) + (line.reason ? ' (' + line.reason + ')' : '');
            out.append(row);
          }
          if (result.ok) form.elements.urls.value = '';
          refresh();
        });
        """

    /// The login page (also the body of a page's 401): posts the password, then loads the page.
    static let loginPage = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Log in · AutomatedFanfic</title>
        <link rel="stylesheet" href="/assets/dashboard.css"></head>
        <body><form class="login" id="login">
        <h1>AutomatedFanfic</h1>
        <label for="password">Password</label>
        <input type="password" id="password" name="password" autocomplete="current-password" autofocus required>
        <button type="submit">Log in</button>
        <div id="login-error" role="alert"></div></form>
        <script src="/assets/login.js"></script></body></html>
        """

    static let loginScript = """
        document.getElementById('login').addEventListener('submit', async event => {
          event.preventDefault();
          const body = new URLSearchParams({ password: document.getElementById('password').value });
          const response = await fetch('/login', { method: 'POST', body, credentials: 'same-origin' });
          if (response.ok) { location.href = location.pathname === '/login' ? '/' : location.href; return; }
          let message = 'login failed';
          try { message = (await response.json()).error || message; } catch (e) {}
          document.getElementById('login-error').textContent = message;
        });
        """
}
