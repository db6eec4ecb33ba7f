// The ops console: queues, dead jobs and campaigns, through the /v1/ops API with the admin
// token the operator types in. The token lives in this tab's sessionStorage and goes out only
// in the Authorization header: never in a URL, never in a log.
'use strict';

const $ = (id) => document.getElementById(id);
const KEY = 'paygate.adminToken';
const QUEUES = ['entitlements', 'refunds', 'notifications', 'broadcasts', 'checkout', 'tracking'];
let timer = null;
let deadBefore = null;
let openJob = null;
let openCampaign = null;

async function call(method, path, body, extraHeaders = {}) {
  const headers = { Accept: 'application/json', Authorization: `Bearer ${sessionStorage.getItem(KEY)}`, ...extraHeaders };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    throw new Error(`HTTP ${res.status}: the answer is not JSON.`);
  }
  if (res.status === 401) {
    signOut();
    throw new Error('The token was refused. Sign in again.');
  }
  if (!res.ok) {
    // A problem (RFC 7807): its title, and its detail when it has one.
    throw new Error(data && data.title ? [data.title, data.detail].filter(Boolean).join(': ') : `HTTP ${res.status}`);
  }
  return data;
}

function fail(error) {
  $('error').textContent = error.message || String(error);
  $('error').classList.remove('hidden');
}

const guarded = (action) => (...args) => {
  $('error').classList.add('hidden');
  return action(...args).catch(fail);
};

function el(tag, { dataset, ...props } = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  Object.assign(node.dataset, dataset);
  node.append(...children.map((c) => (c instanceof Node ? c : String(c ?? ''))));
  return node;
}

function button(text, action, className = 'secondary') {
  const b = el('button', { className, textContent: text, type: 'button' });
  b.addEventListener('click', guarded(action));
  return b;
}

const ago = (iso) => {
  if (!iso) return '—';
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  return s < 90 ? `${Math.round(s)} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
};

// A question in the page's own dialog; resolves to whether the operator confirmed.
function confirmed(text) {
  const dialog = $('confirm');
  // One question at a time: a second one while it is open is a no.
  if (dialog.open) return Promise.resolve(false);
  $('confirm-text').textContent = text;
  return new Promise((resolve) => {
    let yes = false;
    $('confirm-yes').onclick = () => { yes = true; dialog.close(); };
    $('confirm-no').onclick = () => dialog.close();
    // However it closes (a button, Escape): answered once.
    dialog.addEventListener('close', () => resolve(yes), { once: true });
    dialog.showModal();
  });
}

// Queues

async function renderQueues() {
  const queues = await call('GET', '/v1/ops/queues');
  const body = $('queues').tBodies[0];
  body.replaceChildren(
    ...queues.map((q) => {
      const age = q.oldest_pending_age_seconds == null ? '—' : `${Math.round(q.oldest_pending_age_seconds)} s`;
      const toggle = q.paused
        ? button('Resume', async () => { await call('POST', `/v1/ops/queues/${q.queue}/resume`); await renderQueues(); })
        : button('Pause', async () => { await call('POST', `/v1/ops/queues/${q.queue}/pause`); await renderQueues(); });
      return el('tr', { dataset: { queue: q.queue } },
        el('td', {}, q.queue, q.paused ? ' (paused)' : ''), el('td', {}, q.pending), el('td', {}, q.running),
        el('td', {}, q.scheduled), el('td', { className: 'dead' }, q.dead), el('td', {}, age),
        el('td', {}, q.completed_last_minute), el('td', {}, toggle));
    }),
  );
}

// Dead jobs

function deadFilter() {
  const filter = {};
  if ($('dead-queue').value) filter.queue = $('dead-queue').value;
  const [side, seconds] = $('dead-age').value.split(':');
  if (side) filter[`${side}_than_seconds`] = Number(seconds);
  return filter;
}

function describe(filter) {
  const parts = [filter.queue ? `in ${filter.queue}` : 'in every queue'];
  if (filter.newer_than_seconds) parts.push(`dead in the last ${filter.newer_than_seconds / 3600} h`);
  if (filter.older_than_seconds) parts.push(`dead for over ${filter.older_than_seconds / 3600} h`);
  return parts.join(', ');
}

async function renderDead(more = false) {
  const params = new URLSearchParams({ limit: '50' });
  for (const [k, v] of Object.entries(deadFilter())) params.set(k, v);
  if (more && deadBefore) params.set('before', deadBefore);
  const page = await call('GET', `/v1/ops/jobs/dead?${params}`);
  const rows = page.jobs.map((j) => {
    const row = el('tr', { className: 'dead-job', dataset: { id: j.id } },
      el('td', {}, el('a', { href: `#dead/${j.id}`, textContent: j.id })), el('td', {}, j.queue),
      el('td', {}, j.logical_key), el('td', {}, ago(j.died_at)), el('td', {}, `${j.attempt}/${j.max_attempts}`),
      el('td', { className: 'hint' }, (j.last_error || '').slice(0, 120)));
    return row;
  });
  const body = $('dead-jobs').tBodies[0];
  if (more) body.append(...rows);
  else body.replaceChildren(...rows);
  deadBefore = page.next_before ?? null;
  $('dead-more').classList.toggle('hidden', deadBefore == null);
}

async function showJob(id) {
  const job = await call('GET', `/v1/ops/jobs/${id}`);
  openJob = job;
  $('job').classList.remove('hidden');
  $('job-title').textContent = `Job ${job.id} · ${job.queue}`;
  $('job-state').textContent = `${job.state}, attempt ${job.attempt} of ${job.max_attempts}, key ${job.logical_key}`;
  $('job-payload').textContent = JSON.stringify(job.payload, null, 2);
  // Each attempt's error, as the queue recorded it: {attempt, at, kind, error}.
  const line = (e) => (e && e.error ? `attempt ${e.attempt} at ${e.at} (${e.kind}): ${e.error}` : JSON.stringify(e));
  $('job-errors').textContent = (job.errors || []).map(line).join('\n') || 'none';
  const dead = job.state === 'dead';
  $('job-retry').disabled = !dead;
  $('job-discard').disabled = !(dead || job.state === 'pending');
}

async function changeJob(action) {
  const changed = await call('POST', `/v1/ops/jobs/${openJob.id}/${action}`);
  $('job-state').textContent = `${action === 'retry' ? 'Retried' : 'Discarded'}: now ${changed.state}.`;
  $('job-retry').disabled = true;
  $('job-discard').disabled = true;
  await renderDead();
}

async function bulk(action) {
  const filter = deadFilter();
  const narrowed = Object.keys(filter).length > 0;
  const body = { ...filter, all: !narrowed };
  const counted = await call('POST', `/v1/ops/jobs/dead/${action}`, { ...body, dry_run: true });
  const { count } = counted;
  const kept = counted.skipped_past_key_memory
    ? ` (${counted.skipped_past_key_memory} more stay dead: checkout or refunds jobs older than Stripe's key memory)`
    : '';
  if (count === 0) throw new Error(`No dead jobs to ${action} ${describe(filter)}${kept}.`);
  const verb = action === 'retry' ? 'Retry' : 'Discard';
  if (!(await confirmed(`${verb} ${count} dead job${count === 1 ? '' : 's'} ${describe(filter)}?${kept}`))) return;
  // Bounded by the count's time: no job that died after it is changed.
  const done = await call('POST', `/v1/ops/jobs/dead/${action}`, { ...body, died_at_most: counted.as_of });
  const skipped = done.skipped_past_key_memory ? ` (${done.skipped_past_key_memory} left dead: older than Stripe's key memory)` : '';
  $('error').classList.add('hidden');
  $('job').classList.add('hidden');
  await renderDead();
  $('job-state').textContent = '';
  announce(`${verb === 'Retry' ? 'Retried' : 'Discarded'} ${done.count}${skipped}.`);
}

function announce(text) {
  let note = $('note');
  if (!note) {
    note = el('p', { id: 'note', className: 'hint', role: 'status' });
    $('dead-filter').after(note);
  }
  note.textContent = text;
}

// Campaigns

async function renderCampaigns() {
  const campaigns = await call('GET', '/v1/ops/campaigns');
  $('campaigns').tBodies[0].replaceChildren(
    ...campaigns.map((c) => {
      const schedule = c.cron || (c.every_hours ? `every ${c.every_hours} h` : 'on demand');
      const toggle = c.paused
        ? button('Resume', async () => { await call('POST', `/v1/ops/campaigns/${c.name}/resume`); await renderCampaigns(); })
        : button('Pause', async () => { await call('POST', `/v1/ops/campaigns/${c.name}/pause`); await renderCampaigns(); });
      return el('tr', { dataset: { campaign: c.name } },
        el('td', {}, el('a', { href: `#campaigns/${c.name}`, textContent: c.name })), el('td', {}, c.audience),
        el('td', {}, schedule), el('td', {}, c.next_promo), el('td', {}, c.next_slot ? c.next_slot.replace('T', ' ').slice(0, 16) : '—'),
        el('td', { className: 'state' }, c.paused ? 'paused' : 'running'),
        el('td', { className: 'row' }, toggle, button('Send now', () => sendNow(c.name))));
    }),
  );
}

async function showCampaign(name) {
  openCampaign = name;
  $('campaign').classList.remove('hidden');
  $('campaign-title').textContent = name;
  const [preview, stats] = await Promise.all([
    call('GET', `/v1/ops/campaigns/${name}/next-promo`),
    call('GET', `/v1/ops/campaigns/${name}/stats`),
  ]);
  // Its text, then its rows of buttons: [label → where it leads].
  const rows = (preview.buttons || []).map((row) => row.map((b) => `[${b.text} → ${b.url || b.callback_data}]`).join(' '));
  $('preview').textContent = [`${preview.promo}: ${preview.text}`, ...rows].join('\n');
  const pct = (x) => `${(100 * x).toFixed(1)}%`;
  const revenue = (r) => r.map((x) => `${x.amount} ${x.currency}`).join(', ') || '—';
  $('stats').tBodies[0].replaceChildren(
    ...stats.promos.map((p) => el('tr', {}, el('td', {}, p.promo), el('td', {}, p.sends), el('td', {}, p.unique_clickers),
      el('td', {}, pct(p.click_through_rate)), el('td', {}, p.conversions), el('td', {}, revenue(p.revenue)))),
  );
  $('chart').replaceChildren(chart(stats.promos));
}

// A bar chart of sends, clickers and conversions per promo, as SVG (no script, no library).
function chart(promos) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  const series = [['sends', 'var(--hint)'], ['unique_clickers', 'var(--link)'], ['conversions', 'var(--button)']];
  const max = Math.max(1, ...promos.flatMap((p) => series.map(([k]) => p[k])));
  const group = 16 * series.length + 24;
  svg.setAttribute('viewBox', `0 0 ${Math.max(group * promos.length, 240)} 140`);
  svg.setAttribute('preserveAspectRatio', 'xMinYMax meet');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'sends, clickers and conversions per promo');
  promos.forEach((p, i) => {
    series.forEach(([key, colour], j) => {
      const h = (110 * p[key]) / max;
      const bar = document.createElementNS(ns, 'rect');
      for (const [a, v] of Object.entries({ x: i * group + j * 16, y: 120 - h, width: 12, height: h })) bar.setAttribute(a, v);
      bar.setAttribute('fill', colour);
      bar.appendChild(document.createElementNS(ns, 'title')).textContent = `${p.promo} ${key}: ${p[key]}`;
      svg.append(bar);
    });
    const label = document.createElementNS(ns, 'text');
    label.setAttribute('x', i * group);
    label.setAttribute('y', 136);
    label.setAttribute('fill', 'currentColor');
    label.setAttribute('font-size', '11');
    label.textContent = p.promo;
    svg.append(label);
  });
  svg.classList.add('chart');
  return svg;
}

async function sendNow(name) {
  if (!(await confirmed(`Send the next promo of ${name} to its audience now?`))) return;
  const started = await call('POST', `/v1/ops/campaigns/${name}/send`);
  location.hash = `#campaigns/${name}`;
  await showCampaign(name);
  await watch(started.broadcast_id);
  await showCampaign(name);
}

// Moves the bar until every recipient is sent, unreachable or failed (or 10 minutes pass: the
// campaign's page shows where it stands when opened again).
async function watch(id) {
  $('broadcast').classList.remove('hidden');
  for (const until = Date.now() + 600000; Date.now() < until;) {
    const b = await call('GET', `/v1/ops/broadcasts/${id}`);
    const settled = b.sent + b.unreachable + b.failed;
    const share = b.total ? Math.round((100 * settled) / b.total) : b.fanned_out ? 100 : 0;
    $('broadcast-bar').style.width = `${share}%`;
    $('broadcast-bar').parentElement.setAttribute('aria-valuenow', share);
    $('broadcast-text').textContent = `Broadcast ${b.id} (${b.promo}): ${settled} of ${b.total} settled — ${b.sent} sent, ${b.unreachable} unreachable, ${b.failed} failed`;
    if (b.fanned_out && settled >= b.total) return;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

// Subscribers

async function showUser(id) {
  $('user-id').value = id;
  const user = await call('GET', `/v1/ops/users/${encodeURIComponent(id)}`);
  $('user').classList.remove('hidden');
  const who = [user.first_name, user.username ? `@${user.username}` : null].filter(Boolean).join(' ');
  $('user-title').textContent = `User ${user.user_id}${who ? ` · ${who}` : ''}${user.banned ? ' · banned' : ''}`;
  const day = (iso) => (iso ? iso.slice(0, 10) : '—');
  $('user-entitlements').tBodies[0].replaceChildren(
    ...user.entitlements.map((e) => el('tr', {}, el('td', {}, e.plan), el('td', {}, e.source), el('td', {}, e.status),
      el('td', {}, day(e.expires_at)), el('td', {}, e.renews ? 'yes' : 'no'),
      el('td', { className: 'hint' }, e.history.map((c) => `${day(c.recorded_at)} ${c.status} (${c.cause})`).join('\n')))),
  );
  $('user-payments').tBodies[0].replaceChildren(
    ...user.payments.map((p) => {
      const amount = p.amount == null ? '—' : `${p.amount} ${p.currency}`;
      const action = p.refunded ? 'refunded' : button('Refund', () => refund(user.user_id, p), 'danger');
      return el('tr', { dataset: { payment: p.payment } }, el('td', {}, p.provider), el('td', {}, p.payment),
        el('td', {}, p.plan ?? '—'), el('td', {}, amount), el('td', {}, ago(p.paid_at)), el('td', {}, action));
    }),
  );
  $('user-deliveries').tBodies[0].replaceChildren(
    ...user.deliveries.map((d) => el('tr', {}, el('td', {}, d.logical_key), el('td', {}, d.status), el('td', {}, ago(d.at)))),
  );
}

// A refund of the whole payment. Its Idempotency-Key is made once per payment for as long as
// the page is open, so asking again (after a lost answer, a second click) gives back the same
// refund instead of making another.
const refundKeys = new Map();

async function refund(userId, payment) {
  if (!(await confirmed(`Refund ${payment.payment} (${payment.provider}) in full? This also ends what it paid for.`))) return;
  const id = `${payment.provider}:${payment.payment}`;
  if (!refundKeys.has(id)) refundKeys.set(id, crypto.randomUUID());
  const body = { provider: payment.provider, payment: payment.payment, reason: 'requested_by_customer' };
  let state = await call('POST', '/v1/ops/refunds', body, { 'Idempotency-Key': refundKeys.get(id) });
  for (const until = Date.now() + 60000; state.status === 'pending' && Date.now() < until;) {
    $('refund-state').textContent = `Refund ${state.id}: pending…`;
    await new Promise((resolve) => setTimeout(resolve, 500));
    state = await call('GET', `/v1/ops/refunds/${state.id}`);
  }
  // A failed refund may be tried again: with a new key (the same one gives back the failure).
  if (state.status === 'failed') refundKeys.delete(id);
  const after = state.status === 'pending' ? ' (still: see its job in Dead jobs if it does not settle)' : '';
  $('refund-state').textContent = `Refund ${state.id}: ${state.status}${state.failure ? ` (${state.failure})` : ''}${after}.`;
  await showUser(userId);
}

// Navigation: #queues, #dead, #dead/<id>, #campaigns, #campaigns/<name>, #users, #users/<id>

async function route() {
  clearInterval(timer);
  const [tab, item] = (location.hash.slice(1) || 'queues').split('/');
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.tab === tab);
  for (const t of document.querySelectorAll('.tab')) t.classList.toggle('hidden', t.id !== `tab-${tab}`);
  if (tab === 'queues') {
    await renderQueues();
    timer = setInterval(guarded(renderQueues), 2000);
  } else if (tab === 'dead') {
    await renderDead();
    if (item) await showJob(item);
    else $('job').classList.add('hidden');
  } else if (tab === 'campaigns') {
    await renderCampaigns();
    if (item) await showCampaign(decodeURIComponent(item));
    else $('campaign').classList.add('hidden');
  } else if (tab === 'users') {
    if (item) await showUser(item);
    else $('user').classList.add('hidden');
  }
}

function signOut() {
  sessionStorage.removeItem(KEY);
  clearInterval(timer);
  $('console').classList.add('hidden');
  $('sign-in').classList.remove('hidden');
}

async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY, $('token').value.trim());
  $('token').value = '';
  await enter();
}

async function enter() {
  // Checked with a call that needs the token, before the console shows.
  await call('GET', '/v1/ops/queues');
  $('sign-in').classList.add('hidden');
  $('console').classList.remove('hidden');
  await route();
}

function start() {
  for (const q of QUEUES) $('dead-queue').append(el('option', { value: q, textContent: q }));
  $('sign-in-form').addEventListener('submit', (e) => signIn(e).catch((error) => {
    signOut();
    $('sign-in').append(el('p', { className: 'error', textContent: error.message }));
  }));
  $('sign-out').addEventListener('click', signOut);
  $('dead-filter').addEventListener('submit', (e) => { e.preventDefault(); guarded(renderDead)(); });
  $('dead-more').addEventListener('click', guarded(() => renderDead(true)));
  $('user-form').addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = `#users/${$('user-id').value.trim()}`;
  });
  $('retry-all').addEventListener('click', guarded(() => bulk('retry')));
  $('discard-all').addEventListener('click', guarded(() => bulk('discard')));
  $('job-retry').addEventListener('click', guarded(() => changeJob('retry')));
  $('job-discard').addEventListener('click', guarded(() => changeJob('discard')));
  window.addEventListener('hashchange', guarded(route));
  if (sessionStorage.getItem(KEY)) enter().catch((error) => { signOut(); fail(error); });
  else signOut();
}

start();
