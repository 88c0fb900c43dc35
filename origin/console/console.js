// flashgate's operator console: drops, a live view of one, and the invariant check. Plain
// JavaScript over the origin's admin API (see origin/src/http/console.rs).
'use strict';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'flashgate.admin-token';
const state = { token: null, drops: [], selected: null, editing: null, prev: null, timer: null };

function readToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(method, path, body) {
  const headers = { authorization: 'Bearer ' + state.token };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (_) {
    return { status: 0, data: { detail: 'the origin is unreachable' } };
  }
  let data = null;
  try { data = await res.json(); } catch (_) { /* no body */ }
  return { status: res.status, data };
}

function problemText(res) {
  const p = res.data || {};
  return (p.field ? `${p.field}: ` : '') + (p.detail || p.title || `HTTP ${res.status}`);
}

const fmt = (n) => (n === undefined || n === null ? '–' : Number(n).toLocaleString());
const rate = (now, before, dtMs) => (before === undefined || dtMs <= 0 ? 0 : Math.max(0, (now - before) * 1000 / dtMs));
const fmtRate = (r) => (r >= 100 ? Math.round(r).toLocaleString() : r.toFixed(1));
function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
}
const fromLocalInput = (v) => (v ? new Date(v).toISOString() : null);

// ---- drops ------------------------------------------------------------------------------

async function loadDrops() {
  const res = await api('GET', '/admin/drops');
  if (res.status === 401 || res.status === 403) return signOut(problemText(res));
  if (res.status !== 200) return;
  state.drops = res.data;
  const ul = $('drop-list');
  ul.textContent = '';
  for (const d of state.drops) {
    const li = document.createElement('li');
    li.dataset.id = d.productId;
    if (d.productId === state.selected) li.className = 'selected';
    const name = document.createElement('span');
    name.textContent = d.name;
    const st = document.createElement('span');
    st.className = 'st';
    st.textContent = `${d.remaining}/${d.stock} · ${d.status.replace('_', ' ').toLowerCase()}`;
    li.append(name, st);
    li.addEventListener('click', () => select(d.productId));
    ul.appendChild(li);
  }
  if (!state.selected && !state.editing) show('empty', true);
}

function show(id, on) { $(id).hidden = !on; }

function select(id) {
  state.selected = id;
  state.prev = null;
  show('empty', false);
  show('editor', false);
  show('check', false);
  show('live', true);
  for (const li of $('drop-list').children) li.className = li.dataset.id === id ? 'selected' : '';
  clearInterval(state.timer);
  poll();
  state.timer = setInterval(poll, 500);
}

// ---- live view --------------------------------------------------------------------------

async function poll() {
  const id = state.selected;
  const res = await api('GET', `/admin/products/${id}/live`);
  if (id !== state.selected || res.status !== 200) return;
  const v = res.data;
  const prev = state.prev;
  const dt = prev ? v.atMs - prev.atMs : 0;
  const p = v.product;
  $('live-name').textContent = p.name;
  $('live-status').textContent = p.status.replace('_', ' ').toLowerCase();
  $('live-opens').textContent = new Date(p.saleStartsAt).toLocaleString();
  $('t-remaining').textContent = fmt(p.remaining);
  $('t-stock').textContent = `of ${fmt(p.stock)}`;
  $('t-granted').textContent = fmt(v.granted);
  $('t-grant-rate').textContent = fmtRate(rate(v.granted, prev && prev.granted, dt));
  $('t-refused').textContent = fmt(v.refused);
  $('t-refuse-rate').textContent = fmtRate(rate(v.refused, prev && prev.refused, dt));
  if (v.edge) {
    const sum = (e, pred) => Object.entries(e || {}).filter(([k]) => pred(k)).reduce((a, [, n]) => a + n, 0);
    const fwd = sum(v.edge, (k) => k === 'forwarded' || k === 'queued');
    const refused = sum(v.edge, (k) => k !== 'forwarded' && k !== 'queued' && k !== 'page');
    const before = prev && prev.edge;
    $('t-edge-forwarded').textContent = `${fmtRate(rate(fwd, before && sum(before, (k) => k === 'forwarded' || k === 'queued'), dt))} / s`;
    $('t-edge-refused').textContent = `forwarded · ${fmtRate(rate(refused, before && sum(before, (k) => k !== 'forwarded' && k !== 'queued' && k !== 'page'), dt))} / s answered at the edge`;
  } else {
    $('t-edge-forwarded').textContent = '–';
    $('t-edge-refused').textContent = 'no edge metrics URL configured';
  }
  const slots = v.slots || {};
  $('t-holds').textContent = fmt(v.activeHolds);
  $('t-slots').textContent = `${fmt(slots.COMPLETED || 0)} paid · ${fmt(slots.EXPIRED || 0)} expired`;
  const pay = v.payments || {};
  $('t-paid').textContent = fmt(pay.COMPLETED || 0);
  $('t-payments').textContent = `completed · ${fmt(pay.PENDING || 0)} pending · ${fmt(pay.FAILED || 0)} failed`;
  const q = v.queue;
  if (q.mode === 'off') {
    $('t-waiting').textContent = 'off';
    $('t-queue').textContent = 'no waiting room';
  } else {
    $('t-waiting').textContent = fmt(q.waiting);
    const admitted = fmtRate(rate(q.admitted, prev && prev.queue.admitted, dt));
    $('t-queue').textContent = `${q.on ? 'on' : 'armed'} (${q.mode}) · admitting ${admitted}/s of ${q.admitPerSecond}/s · ${fmt(q.passesOut)} passes out`;
  }
  $('t-lag').textContent = `${v.outboxLagSeconds.toFixed(1)} s`;
  $('t-undelivered').textContent = `${fmt(v.outboxUndelivered)} events undelivered`;
  $('t-fair').textContent = fmt(v.refusedBeforeGrant - v.refusedBeforeGrantLate);
  $('t-window').textContent = `refusals stamped before a grant within W (${fmt(v.refusedBeforeGrantLate)} late) · W = ${v.fairnessWindowMs.toFixed(1)} ms`;
  state.prev = v;
  state.live = v;
}

async function runCheck() {
  const box = $('check');
  box.hidden = false;
  box.className = 'check';
  box.textContent = 'Checking every invariant…';
  const res = await api('POST', '/admin/check');
  if (res.status !== 200) {
    box.className = 'check bad';
    box.textContent = `The check could not run: ${problemText(res)}`;
    return;
  }
  const r = res.data;
  box.className = 'check ' + (r.ok ? 'ok' : 'bad');
  box.textContent = r.ok
    ? `All invariants hold: ${r.products} products, ${r.slotsInPostgres} slots, ${r.queueAdmissions} queue admissions in order, ${r.lateInversions} late inversions (the network's).`
    : `${r.violations.length} violations:`;
  if (!r.ok) {
    const ul = document.createElement('ul');
    for (const v of r.violations.slice(0, 50)) {
      const li = document.createElement('li');
      li.textContent = `invariant ${v.invariant} · ${v.productId} · ${v.detail}`;
      ul.appendChild(li);
    }
    box.appendChild(ul);
  }
}

// ---- create and edit --------------------------------------------------------------------

function edit(product) {
  state.editing = product ? product.productId : 'new';
  clearInterval(state.timer);
  show('live', false);
  show('empty', false);
  show('editor', true);
  $('form-message').textContent = '';
  const f = $('drop-form');
  f.reset();
  $('editor-title').textContent = product ? `Edit ${product.name}` : 'New drop';
  if (product) {
    f.name.value = product.name;
    f.amount.value = product.price.amount;
    f.currency.value = product.price.currency;
    f.stock.value = product.stock;
    f.starts.value = toLocalInput(product.saleStartsAt);
    f.ends.value = toLocalInput(product.saleEndsAt);
    const q = product.queue;
    f.queueMode.value = q ? q.mode : 'off';
    f.queueOrder.value = q ? q.order : 'fifo';
    f.admitPerSecond.value = q && q.admitPerSecondSet ? q.admitPerSecondSet : '';
    f.autoThreshold.value = q && q.mode === 'auto' ? q.autoThreshold : '';
  } else {
    f.starts.value = toLocalInput(new Date(Date.now() + 5 * 60000).toISOString());
  }
}

async function save(e) {
  e.preventDefault();
  const f = $('drop-form');
  const msg = $('form-message');
  const product = {
    name: f.name.value,
    price: { amount: Number(f.amount.value), currency: f.currency.value },
    stock: Number(f.stock.value),
    saleStartsAt: fromLocalInput(f.starts.value),
    saleEndsAt: fromLocalInput(f.ends.value),
  };
  const isNew = state.editing === 'new';
  const res = isNew
    ? await api('POST', '/products', product)
    : await api('PUT', `/products/${state.editing}`, product);
  if (res.status !== 200 && res.status !== 201) {
    msg.className = 'message bad';
    msg.textContent = problemText(res);
    return;
  }
  const id = res.data.productId;
  const queue = {
    mode: f.queueMode.value,
    order: f.queueOrder.value,
    admitPerSecond: f.admitPerSecond.value ? Number(f.admitPerSecond.value) : null,
    autoThreshold: f.autoThreshold.value ? Number(f.autoThreshold.value) : null,
  };
  if (!isNew || queue.mode !== 'off') {
    const q = await api('PUT', `/products/${id}/queue`, queue);
    if (q.status !== 200) {
      msg.className = 'message bad';
      msg.textContent = `Saved, but the waiting room was not: ${problemText(q)}`;
      return;
    }
  }
  state.editing = null;
  await loadDrops();
  select(id);
}

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  show('app', false);
  show('signin', true);
  if (why) $('token').placeholder = why;
}

function start() {
  state.token = readToken();
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token').value.trim();
    if (t) { sessionStorage.setItem(TOKEN_KEY, t); location.reload(); }
  });
  if (!state.token) return show('signin', true);
  show('app', true);
  $('new-drop').addEventListener('click', () => edit(null));
  $('edit-drop').addEventListener('click', () => state.live && edit(state.live.product));
  $('cancel-edit').addEventListener('click', () => { show('editor', false); state.editing = null; if (state.selected) select(state.selected); else show('empty', true); });
  $('drop-form').addEventListener('submit', save);
  $('run-check').addEventListener('click', runCheck);
  loadDrops();
  setInterval(loadDrops, 5000);
  const m = location.search.match(/drop=([0-9a-fA-F-]{36})/);
  if (m) select(m[1]);
}

document.addEventListener('DOMContentLoaded', start);
