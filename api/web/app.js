// The Mini App: signs in with the initData Telegram gives it, shows the plans and the user's
// access, and pays through Telegram (a Stars invoice, openInvoice) or Stripe Checkout (openLink).
// Everything goes through the public API (/v1/plans, /v1/auth/telegram, /v1/me, /v1/billing).
'use strict';

const tg = window.Telegram && window.Telegram.WebApp;
const $ = (id) => document.getElementById(id);
// The user token, and when to sign in again: a minute before its 15 minutes are up.
let session = null;
let renewal = null;
let plans = [];
let shown = null;
// Counts the views shown: an action that awaited checks it still has the view it began on,
// and an access watcher that it is still the latest.
let view = 0;
let watcher = 0;

class Problem extends Error {
  constructor(problem, status) {
    super((problem && (problem.detail || problem.title)) || `The server answered ${status}.`);
    this.problem = problem;
    this.status = status;
  }
}

async function call(method, path, body, { auth = true } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth) headers.Authorization = `Bearer ${await token()}`;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Problem(data, res.status);
  return data;
}

// Signs in with Telegram's initData, and again before the token runs out, so that a page left
// open keeps working for as long as the API accepts that initData (TELEGRAM_INIT_DATA_MAX_AGE,
// an hour by default): Telegram signs it once, when it opens the app.
async function signIn() {
  let s;
  try {
    s = await call('POST', '/v1/auth/telegram', { init_data: tg.initData }, { auth: false });
  } catch (error) {
    if (session && error.status === 401) throw new Error('This session has ended. Close the app and open it again from the bot.');
    throw error;
  }
  session = { token: s.token, renewAt: Date.now() + Math.max(s.expires_in - 60, 5) * 1000, user: s.user };
  clearTimeout(renewal);
  renewal = setTimeout(() => signIn().catch(fail), session.renewAt - Date.now());
}

async function token() {
  if (!session || Date.now() >= session.renewAt) await signIn();
  return session.token;
}

function fail(error) {
  const box = $('error');
  box.textContent = error.message || String(error);
  box.classList.remove('hidden');
}

function clearError() {
  $('error').classList.add('hidden');
}

// Telegram's theme as CSS variables (telegram-web-app.js sets them too; a page opened another
// way gets them here), and the colour scheme for the defaults.
function applyTheme() {
  const style = document.documentElement.style;
  for (const [key, value] of Object.entries(tg.themeParams || {})) {
    style.setProperty(`--tg-theme-${key.replace(/_/g, '-')}`, value);
  }
  document.documentElement.dataset.scheme = tg.colorScheme === 'dark' ? 'dark' : 'light';
}

function el(tag, { dataset, ...props } = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  Object.assign(node.dataset, dataset);
  node.append(...children);
  return node;
}

function price(plan) {
  const parts = [];
  if (plan.stars_price) parts.push(`⭐ ${plan.stars_price}`);
  if (plan.card) parts.push('💳 card');
  return parts.join(' / ');
}

const day = (iso) => iso.slice(0, 10);
const planName = (code) => (plans.find((p) => p.code === code) || { name: code }).name;

async function renderHome() {
  const [{ entitlements }, catalogue] = await Promise.all([
    call('GET', '/v1/me/entitlements'),
    call('GET', '/v1/plans', undefined, { auth: false }),
  ]);
  plans = catalogue.plans;
  $('hello').textContent = `Hi, ${session.user.first_name}`;
  const access = $('access');
  access.replaceChildren();
  if (entitlements.length === 0) access.append(el('p', { className: 'hint', textContent: 'No active plan yet.' }));
  for (const e of entitlements) {
    const renews = e.renews ? `renews on ${day(e.expires_at)}` : `until ${day(e.expires_at)}, does not renew`;
    const chats = e.chats.length ? `${e.chats.length} private chat${e.chats.length > 1 ? 's' : ''}` : '';
    access.append(
      el('div', { className: 'card entitlement', dataset: { plan: e.plan } },
        el('strong', { textContent: planName(e.plan) }),
        el('div', { className: 'hint', textContent: [renews, chats].filter(Boolean).join(' · ') })));
  }
  $('manage').classList.toggle('hidden', !entitlements.some((e) => e.source.startsWith('stripe:')));
  const list = $('plans');
  list.replaceChildren();
  for (const plan of plans) {
    const open = el('button', { className: 'secondary', textContent: 'Choose' });
    open.addEventListener('click', () => showPlan(plan));
    list.append(
      el('div', { className: 'card row plan', dataset: { plan: plan.code } },
        el('div', { className: 'grow' },
          el('strong', { textContent: plan.name }),
          el('div', { className: 'hint', textContent: `${plan.period_days} days · ${price(plan)}` })),
        open));
  }
  show('home');
}

function show(which) {
  view += 1;
  $('status').classList.add('hidden');
  $('home').classList.toggle('hidden', which !== 'home');
  $('plan').classList.toggle('hidden', which !== 'plan');
  if (which === 'home') {
    shown = null;
    tg.BackButton.hide();
    tg.MainButton.hide();
  } else {
    tg.BackButton.show();
  }
}

// One plan and how to pay it; `null` for the billing page's link.
function showPlan(plan) {
  shown = plan;
  clearError();
  $('open-link').classList.add('hidden');
  if (!plan) {
    $('plan-name').textContent = 'Billing';
    for (const id of ['plan-terms', 'plan-chats']) $(id).textContent = '';
    for (const id of ['pay-stars', 'pay-card']) $(id).classList.add('hidden');
    tg.MainButton.hide();
    show('plan');
    return;
  }
  $('plan-name').textContent = plan.name;
  $('plan-terms').textContent = `${plan.period_days} days of access for ${price(plan)}.`;
  const n = plan.chat_count;
  $('plan-chats').textContent = n ? `Opens ${n} private chat${n > 1 ? 's' : ''}.` : '';
  $('paying').classList.add('hidden');
  $('pay-stars').classList.toggle('hidden', !plan.stars_price);
  $('pay-stars').textContent = `Pay ⭐ ${plan.stars_price}`;
  $('pay-card').classList.toggle('hidden', !plan.card);
  // Telegram's main button pays the way the chat does: with Stars where the plan takes them.
  if (plan.stars_price) tg.MainButton.setText(`Pay ⭐ ${plan.stars_price}`).show();
  else tg.MainButton.hide();
  show('plan');
}

// A billing link (Stars invoice, Checkout, Portal) made by a worker: created, then long-polled
// for up to a minute. No Idempotency-Key: without one the API makes a burst of taps one request.
async function billingLink(path, body) {
  let request = await call('POST', path, body);
  for (const until = Date.now() + 60000; request.status === 'pending' && Date.now() < until;) {
    request = await call('GET', `${request.status_url}?wait=10`);
  }
  if (request.status === 'pending') throw new Error('This is taking longer than it should. Please try again in a few minutes.');
  if (request.status === 'failed') throw new Error(request.failure || 'That did not work. Please try again.');
  return request.url;
}

// Runs `action` with the pay buttons disabled and Telegram's main button showing progress; a
// failure clears the progress line and shows why.
let running = false;

async function busy(action) {
  // A second tap (a button, or Telegram's main button) while one runs does nothing.
  if (running) return;
  running = true;
  const buttons = [$('pay-stars'), $('pay-card'), $('manage'), $('open-link')];
  for (const b of buttons) b.disabled = true;
  tg.MainButton.showProgress();
  try {
    await action();
  } catch (error) {
    $('paying').classList.add('hidden');
    throw error;
  } finally {
    running = false;
    for (const b of buttons) b.disabled = false;
    tg.MainButton.hideProgress();
  }
}

// Telegram opens a link only from a user's tap: once the URL is ready, a tap on this button.
function offerLink(url, label) {
  const open = $('open-link');
  open.textContent = label;
  open.onclick = () => tg.openLink(url);
  open.classList.remove('hidden');
}

function paying(text) {
  $('paying').textContent = text;
  $('paying').classList.remove('hidden');
}

// Polls the user's access until `plan` has an entitlement ending later than `before` had; a
// newer watcher ends this one.
async function awaitAccess(plan, before, seconds) {
  watcher += 1;
  const mine = watcher;
  for (let waited = 0; waited < seconds && mine === watcher; waited += 1) {
    const end = await latestEnd(plan);
    if (end && (!before || end > before)) return true;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  return false;
}

// The latest end of the user's active entitlements to `plan`, or null.
async function latestEnd(plan) {
  const { entitlements } = await call('GET', '/v1/me/entitlements');
  return entitlements.filter((e) => e.plan === plan).map((e) => e.expires_at).sort().pop() || null;
}

async function payStars() {
  const plan = shown;
  clearError();
  const before = await latestEnd(plan.code);
  paying('Opening the invoice…');
  const url = await billingLink('/v1/billing/stars-invoice', { plan: plan.code });
  tg.openInvoice(url, (status) => {
    if (status !== 'paid') {
      paying(status === 'cancelled' ? 'Payment cancelled.' : `Payment ${status}.`);
      return;
    }
    paying('Paid. Waiting for your access…');
    awaitAccess(plan.code, before, 30)
      .then((granted) => (granted ? renderHome() : paying('Paid. Your access will appear here shortly.')))
      .catch(fail);
  });
}

async function payCard() {
  const plan = shown;
  const here = view;
  clearError();
  $('open-link').classList.add('hidden');
  const before = await latestEnd(plan.code);
  paying('Preparing the card payment…');
  const url = await billingLink('/v1/billing/checkout', { plan: plan.code });
  // The user went elsewhere meanwhile: this link is not for what they see now.
  if (view !== here) return;
  offerLink(url, '💳 Open the payment page');
  paying('Pay on the page that opens; your access appears here.');
  // Watched without holding the buttons: the user still has to tap the link.
  awaitAccess(plan.code, before, 300)
    .then((granted) => granted && renderHome())
    .catch(fail);
}

async function manage() {
  clearError();
  showPlan(null);
  const here = view;
  paying('Preparing your billing page…');
  const url = await billingLink('/v1/billing/portal', {});
  if (view !== here) return;
  offerLink(url, 'Open the billing page');
  paying('Change your card, see invoices or cancel on the page that opens.');
}

const guarded = (action) => () => busy(action).catch(fail);

async function start() {
  if (!tg || !tg.initData) {
    $('status').textContent = 'Open this page from the bot in Telegram.';
    return;
  }
  tg.ready();
  tg.expand();
  applyTheme();
  tg.onEvent('themeChanged', applyTheme);
  $('pay-stars').addEventListener('click', guarded(payStars));
  $('pay-card').addEventListener('click', guarded(payCard));
  $('manage').addEventListener('click', guarded(manage));
  tg.MainButton.onClick(guarded(payStars));
  tg.BackButton.onClick(() => show('home'));
  await signIn();
  await renderHome();
}

start().catch(fail);
