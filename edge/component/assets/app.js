// flashgate's buyer page: the drops on sale, one drop's countdown, its waiting room, one
// click to acquire, the hold's remaining time and payment. Plain JavaScript against the buyer
// API served by the same edge (see edge/component/src/page.rs).
'use strict';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'flashgate.buyer-token';
const state = { token: null, product: null, queued: false, pass: null, passExpiresMs: 0, slot: null, payment: null };
const timers = {};

function every(name, ms, fn) {
  clearInterval(timers[name]);
  fn();
  timers[name] = setInterval(fn, ms);
}
function stop(name) { clearInterval(timers[name]); clearTimeout(timers[name]); }
function later(name, ms, fn) { clearTimeout(timers[name]); timers[name] = setTimeout(fn, ms); }

function readToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function claims(token) {
  try {
    return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  } catch (_) {
    return null;
  }
}

async function api(method, path, body, headers = {}) {
  const h = { authorization: 'Bearer ' + state.token, ...headers };
  if (body !== undefined) h['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (_) {
    return { status: 0, data: { type: '/problems/unavailable' }, retryAfter: 2 };
  }
  let data = null;
  try { data = await res.json(); } catch (_) { /* no body */ }
  return { status: res.status, data, retryAfter: Number(res.headers.get('retry-after')) || null };
}

function fmtTime(iso) { return new Date(iso).toLocaleString(); }
function fmtMoney(price) {
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency: price.currency }).format(price.amount / 100);
  } catch (_) {
    return `${(price.amount / 100).toFixed(2)} ${price.currency}`;
  }
}
function fmtLeft(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const two = (n) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
}

// What went wrong, in plain words, from a problem+json answer.
const WORDS = {
  'sold-out': () => 'Sold out: every unit is taken. Units come back if a buyer does not pay in time.',
  'not-on-sale': (p) => `Not on sale yet: it opens at ${fmtTime(p.saleStartsAt)}.`,
  'sale-ended': () => 'This sale has ended.',
  'already-holding': () => 'You already hold one of these: pay for it below.',
  'in-progress': () => 'We are still working on your last try. One moment.',
  'rate-limited': (p, r) => `Too many tries. Please wait ${r || 1} s and try again.`,
  unauthorized: () => 'Your sign-in is not valid any more. Sign in again.',
  unavailable: (p, r) => `We are very busy right now. Try again in ${r || 1} s.`,
  'queue-full': (p, r) => `The queue is full. Try again in ${r || 30} s.`,
  'not-in-queue': () => 'You are not in the queue yet.',
  'slot-expired': () => 'Your hold ran out before payment; the unit went back on sale.',
  'slot-not-active': () => 'This one is already paid, or its payment is on its way.',
  'not-found': () => 'We could not find that drop.',
  validation: (p) => `Something in the request is wrong: ${p.detail}`,
};
function slugOf(res) { return ((res.data && res.data.type) || '').split('/').pop(); }
function explain(res) {
  const p = res.data || {};
  const words = WORDS[slugOf(res)];
  return words ? words(p, res.retryAfter) : (p.detail || `Something went wrong (HTTP ${res.status}).`);
}
function say(text, kind = '') {
  const m = $('message');
  m.textContent = text;
  m.className = 'message ' + kind;
}

function show(id, on) { $(id).hidden = !on; }

// ---- list of drops ----------------------------------------------------------------------

async function showList() {
  show('list', true);
  const res = await api('GET', '/products?size=50');
  const ul = $('drops');
  ul.textContent = '';
  if (res.status !== 200) {
    const li = document.createElement('li');
    li.textContent = explain(res);
    ul.appendChild(li);
    return;
  }
  for (const p of res.data.items) {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = `/drops/${p.productId}`;
    const name = document.createElement('span');
    name.textContent = `${p.name} · ${fmtMoney(p.price)}`;
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = p.status.replace('_', ' ').toLowerCase();
    a.append(name, badge);
    li.appendChild(a);
    ul.appendChild(li);
  }
}

// ---- one drop ---------------------------------------------------------------------------

async function showDrop(id) {
  show('drop', true);
  const res = await api('GET', `/products/${id}`);
  if (res.status !== 200) {
    $('buy').disabled = true;
    return say(explain(res), 'bad');
  }
  const p = (state.product = res.data);
  document.title = `${p.name} — flashgate`;
  $('name').textContent = p.name;
  $('price').textContent = fmtMoney(p.price);
  $('pay-amount').textContent = fmtMoney(p.price);
  renderStock(p);
  state.queued = !!(p.queue && p.queue.on);
  const opens = Date.parse(p.saleStartsAt);
  every('opens', 250, () => {
    const left = opens - Date.now();
    show('countdown', left > 0);
    $('opens-in').textContent = fmtLeft(left);
    if (left <= 0) stop('opens');
    renderButton();
  });
  if (await resumeHold()) return;
  if (p.status === 'SOLD_OUT') say(WORDS['sold-out'](), 'bad');
  else if (state.queued) await look();
  renderButton();
}

function renderStock(p) {
  $('remaining').textContent = p.status === 'SOLD_OUT' ? 'Sold out' : `${p.remaining} of ${p.stock} left`;
}

function renderButton() {
  const b = $('buy');
  const p = state.product;
  if (!p || state.slot || state.payment || p.status === 'SOLD_OUT') { b.hidden = true; return; }
  b.hidden = false;
  // A pass means the sale is open, whatever start this page read: nobody is admitted
  // before the opening, and an operator may have moved it since the page loaded.
  const open = !!state.pass || Date.parse(p.saleStartsAt) <= Date.now();
  if (state.queued && !state.pass) {
    b.textContent = $('queue').hidden ? 'Join the queue' : 'Waiting for your turn…';
    b.disabled = !$('queue').hidden;
  } else {
    b.textContent = 'Buy now';
    b.disabled = !open;
  }
}

// A buyer who already holds a slot of this product (a reload, another tab) sees it.
async function resumeHold() {
  const res = await api('GET', '/slots/my-slots?status=ACTIVE&size=100');
  if (res.status !== 200) return false;
  const slot = res.data.items.find((s) => s.productId === state.product.productId);
  if (slot) showHold(slot);
  return !!slot;
}

async function buy() {
  $('buy').disabled = true;
  say('');
  if (state.queued && !state.pass) return join();
  const headers = state.pass ? { 'x-queue-pass': state.pass } : {};
  const res = await api('POST', '/slots/acquire', { productId: state.product.productId }, headers);
  // The origin's decision is in the drop's public log: check this buyer's entry there.
  if (res.data && res.data.receipt) checkReceipt(state.product.productId, res.data.receipt.index);
  if (res.status === 201) return showHold(res.data);
  if (res.status === 202) {
    // The waiting room turned on: this click put us in line.
    state.queued = true;
    return onQueue(res);
  }
  if (slugOf(res) === 'already-holding' && res.data.slotId) {
    const slot = await api('GET', `/slots/${res.data.slotId}`);
    if (slot.status === 200) return showHold(slot.data);
  }
  if (slugOf(res) === 'sold-out') soldOut();
  say(explain(res), 'bad');
  if (slugOf(res) !== 'sold-out') later('retry', 1000 * (res.retryAfter || 1), renderButton);
}

// ---- the waiting room -------------------------------------------------------------------

async function join() {
  onQueue(await api('POST', `/queue/${state.product.productId}`));
}

async function look() {
  const res = await api('GET', `/queue/${state.product.productId}`);
  if (slugOf(res) === 'not-in-queue') return;
  onQueue(res);
}

function onQueue(res) {
  const q = res.data || {};
  if (res.status === 200 || res.status === 202) {
    switch (q.status) {
      case 'OPEN':
        state.queued = false;
        show('queue', false);
        return renderButton();
      case 'WAITING':
        show('queue', true);
        $('position').textContent = q.position;
        $('queue-length').textContent = q.queueLength;
        // Nobody is let in before the sale opens: the wait starts there.
        $('wait').textContent = fmtLeft(Math.max(0, Date.parse(state.product.saleStartsAt) - Date.now()) + q.estimatedWaitSeconds * 1000);
        $('rate').textContent = q.admitPerSecond;
        renderButton();
        return later('poll', 1000 * (q.pollAfterSeconds || 2), look);
      case 'ADMITTED':
        state.pass = q.pass;
        state.passExpiresMs = Date.parse(q.passExpiresAt);
        stop('opens');
        show('countdown', false);
        show('queue', false);
        show('admitted', true);
        every('pass', 500, () => {
          const left = state.passExpiresMs - Date.now();
          $('pass-left').textContent = fmtLeft(left);
          if (left <= 0) { stop('pass'); state.pass = null; show('admitted', false); say('Your turn passed. Join the queue again.', 'bad'); renderButton(); }
        });
        say('You are in. Buy now while your pass is valid.', 'ok');
        return renderButton();
      case 'HOLDING':
        return api('GET', `/slots/${q.slotId}`).then((s) => s.status === 200 && showHold(s.data));
      default:
        break;
    }
  }
  if (slugOf(res) === 'sold-out' || slugOf(res) === 'sale-ended') {
    show('queue', false);
    soldOut();
    return say(explain(res), 'bad');
  }
  say(explain(res), 'bad');
  later('poll', 1000 * (res.retryAfter || 2), state.queued ? look : renderButton);
}

function soldOut() {
  stop('poll');
  state.product.status = 'SOLD_OUT';
  renderStock(state.product);
  $('buy').hidden = true;
}

// ---- the buyer's receipt, verified here ----------------------------------------------------
// The drop's public log (docs/transparency.md): this buyer's entry, its inclusion proof
// (RFC 9162) against the newest checkpoint, the checkpoint's Ed25519 signature (a C2SP
// signed note) by a key the drop's metadata names, and the pseudonym recomputed from the
// buyer's id. WebCrypto only: nothing is loaded from anywhere else.

const enc = new TextEncoder();
const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const hexBytes = (h) => Uint8Array.from(h.match(/../g).map((x) => parseInt(x, 16)));
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
const cat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// The checkpoint's body if one of `vkeys` (`name+id+base64(0x01 || key)`) signed it.
async function openNote(note, vkeys) {
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw new Error('the checkpoint is not a signed note');
  const text = note.slice(0, split + 1);
  for (const line of note.slice(split + 2).split('\n').filter(Boolean)) {
    const m = line.match(/^\u2014 (\S+) (\S+)$/);
    if (!m) continue;
    const sig = b64(m[2]);
    for (const vkey of vkeys) {
      // `name+id+base64`: the base64 may hold '+' too.
      const a = vkey.indexOf('+'), b = vkey.indexOf('+', a + 1);
      const [name, id, key] = [vkey.slice(0, a), vkey.slice(a + 1, b), vkey.slice(b + 1)];
      const raw = b64(key);
      if (name !== m[1] || raw[0] !== 1 || hex(sig.slice(0, 4)) !== id) continue;
      const pub = await crypto.subtle.importKey('raw', raw.slice(1), { name: 'Ed25519' }, false, ['verify']);
      if (await crypto.subtle.verify({ name: 'Ed25519' }, pub, sig.slice(4), enc.encode(text))) {
        const [origin, size, root] = text.split('\n');
        return { origin, size: Number(size), root: b64(root) };
      }
    }
  }
  throw new Error('the checkpoint is not signed by the drop\'s key');
}

// RFC 9162, 2.1.3.2: the root that `proof` gives entry `index` of a tree of `size`.
async function rootFrom(entry, index, size, proof) {
  let fn = index, sn = size - 1;
  let r = await sha256(cat(new Uint8Array([0]), enc.encode(entry)));
  for (const p of proof.map(b64)) {
    if (sn === 0) throw new Error('the inclusion proof is too long');
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(cat(new Uint8Array([1]), p, r));
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await sha256(cat(new Uint8Array([1]), r, p));
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error('the inclusion proof is too short');
  return r;
}

async function pseudonymOf(keyHex, buyer) {
  const key = await crypto.subtle.importKey('raw', hexBytes(keyHex), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return hex(new Uint8Array(await crypto.subtle.sign('HMAC', key, enc.encode(buyer))).slice(0, 16));
}

async function checkReceipt(productId, index, tries = 0) {
  const out = $('receipt');
  out.hidden = false;
  out.className = 'receipt';
  out.textContent = 'Checking your place in the drop\'s public log…';
  // Not in a signed checkpoint yet (404): ask again; the log signs within a second.
  const r = await api('GET', `/receipts/${productId}?index=${index}`);
  if (r.status === 404 && tries < 20) return later('receipt', 1000, () => checkReceipt(productId, index, tries + 1));
  try {
    if (r.status !== 200) throw new Error(explain(r));
    const meta = await (await fetch(`/transparency/${productId}/metadata.json`)).json();
    const cp = await openNote(r.data.checkpoint, meta.keys);
    if (cp.origin !== meta.origin) throw new Error('the checkpoint is another log\'s');
    const root = await rootFrom(r.data.entry, r.data.index, cp.size, r.data.proof);
    if (!same(root, cp.root)) throw new Error('your entry is not in the signed log');
    const entry = JSON.parse(r.data.entry);
    const who = (claims(state.token) || {}).sub;
    if (entry.buyer !== await pseudonymOf(r.data.pseudonymKey, who)) throw new Error('the entry is not yours');
    const n = (x) => x.toLocaleString('en');
    out.className = 'receipt ok';
    const what = entry.outcome ? ` (${entry.outcome.replace('_', ' ')})` : '';
    out.textContent = `Request #${n(r.data.index + 1)} of ${n(cp.size)} decided${what}; verified against the drop's signed log.`;
  } catch (e) {
    out.className = 'receipt bad';
    out.textContent = `Your receipt did not verify: ${e.message}`;
  }
}

// ---- the hold and payment ---------------------------------------------------------------

function showHold(slot) {
  state.slot = slot;
  api('GET', `/products/${slot.productId}`).then((r) => r.status === 200 && renderStock((state.product = r.data)));
  stop('poll');
  stop('pass');
  show('queue', false);
  show('admitted', false);
  show('hold', true);
  renderButton();
  say('');
  const expires = Date.parse(slot.expiresAt);
  every('hold', 250, () => {
    const left = expires - Date.now();
    $('hold-left').textContent = fmtLeft(left);
    if (left <= 0 && !state.payment) {
      stop('hold');
      $('pay').disabled = true;
      say(WORDS['slot-expired'](), 'bad');
    }
  });
}

async function pay() {
  $('pay').disabled = true;
  const slotId = state.slot.slotId;
  // One key per slot: a double click or a retry after a lost answer pays once.
  const keyName = `flashgate.pay.${slotId}`;
  const key = sessionStorage.getItem(keyName) || crypto.randomUUID();
  sessionStorage.setItem(keyName, key);
  const res = await api('POST', '/payments', { slotId, method: 'card' }, { 'idempotency-key': key });
  if (res.status !== 202 && res.status !== 200) {
    $('pay').disabled = false;
    return say(explain(res), 'bad');
  }
  state.payment = res.data;
  say('Payment sent. Waiting for the processor…');
  every('payment', 1000, async () => {
    const p = await api('GET', `/payments/${state.payment.paymentId}`);
    if (p.status !== 200) return;
    if (p.data.status === 'COMPLETED') {
      stop('payment');
      stop('hold');
      show('hold', false);
      show('paid', true);
      $('paid').textContent = `Paid. ${state.product.name} is yours.`;
      say('');
    } else if (p.data.status !== 'PENDING') {
      stop('payment');
      state.payment = null;
      sessionStorage.removeItem(keyName);
      $('pay').disabled = false;
      say(p.data.status === 'FAILED'
        ? 'The payment was declined. You still hold it: try again before the time runs out.'
        : `The payment ended as ${p.data.status.toLowerCase().replace('_', ' ')}.`, 'bad');
    }
  });
}

// ---- start ------------------------------------------------------------------------------

function start() {
  state.token = readToken();
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token').value.trim();
    if (t) { sessionStorage.setItem(TOKEN_KEY, t); location.reload(); }
  });
  $('buy').addEventListener('click', buy);
  $('pay').addEventListener('click', pay);
  if (!state.token) return show('signin', true);
  const c = claims(state.token);
  $('who').textContent = c && c.sub ? `buyer ${c.sub.slice(0, 8)}…` : '';
  const m = location.pathname.match(/^\/drops\/([0-9a-fA-F-]{36})$/);
  if (m) showDrop(m[1]); else showList();
}

document.addEventListener('DOMContentLoaded', start);
