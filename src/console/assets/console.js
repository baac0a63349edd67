// The console's only script. Every page works without it; it adds a confirmation before
// revoking, the copy button for a new token, and live rollout progress on the tokens page.
// Data from the server is only ever set as text (textContent, value), never as HTML.
'use strict';

(() => {
  const POLL_MS = 2000;

  for (const form of document.querySelectorAll('form[data-confirm]')) {
    form.addEventListener('submit', (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  for (const button of document.querySelectorAll('button[data-copy]')) {
    button.addEventListener('click', async () => {
      const input = document.getElementById(button.dataset.copy);
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
      } catch {
        document.execCommand('copy'); // no clipboard API (a page served over plain http to another host)
      }
      const note = button.parentElement.querySelector('.copied');
      if (note) note.hidden = false;
    });
  }

  const table = document.querySelector('table[data-progress]');
  if (table) follow(table);

  /** Ask for the tokens' progress every few seconds while the page is open and visible. */
  function follow(table) {
    const tick = async () => {
      if (!document.hidden) {
        try {
          const response = await fetch(table.dataset.progress, { credentials: 'same-origin', headers: { accept: 'application/json' } });
          if (response.status === 401) return signedOut();
          if (response.ok) update(table, await response.json());
        } catch {
          // the server is restarting or the network is down: ask again later
        }
      }
      setTimeout(tick, POLL_MS);
    };
    setTimeout(tick, POLL_MS);
  }

  function update(table, { tokens }) {
    for (const token of tokens) {
      const row = table.querySelector(`tr[data-token="${CSS.escape(token.id)}"]`);
      if (!row) continue;
      const bar = row.querySelector('progress');
      bar.max = token.max;
      bar.value = token.taken;
      row.querySelector('.taken').textContent = String(token.taken);
      const state = row.querySelector('.state');
      state.textContent = token.state;
      state.className = `state badge ${token.state === 'active' ? 'good' : 'bad'}`;
    }
  }

  function signedOut() {
    const note = document.createElement('p');
    note.className = 'error';
    note.textContent = 'Your session has ended: sign in again to follow the rollout.';
    table.before(note);
  }
})();
