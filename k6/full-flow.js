// Full flow: acquire, and when granted pay (Idempotency-Key) and read the payment.
//
//   k6 run -e PRODUCTS=<id>,... -e TOKENS=tokens.json -e RATE=200 k6/full-flow.js
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { BASE_URL, PRODUCTS, acquire, arrival, thresholds, tokenFor } from './lib.js';

http.setResponseCallback(http.expectedStatuses(200, 201, 202, 409));

export const options = {
  scenarios: { flow: arrival(200) },
  thresholds: thresholds(100),
};

export default function () {
  const i = exec.scenario.iterationInTest;
  const token = tokenFor(i);
  const r = acquire(token, PRODUCTS[i % PRODUCTS.length]);
  const got = http.request(r.method, r.url, r.body, r.params);
  if (!check(got, { 'acquired or refused': (x) => x.status === 201 || x.status === 409 })) {
    return;
  }
  if (got.status !== 201) {
    return;
  }
  const headers = {
    authorization: `Bearer ${token}`,
    'content-type': 'application/json',
    'idempotency-key': `k6-${i}`,
  };
  const body = JSON.stringify({ slotId: got.json('slotId'), method: 'card' });
  const paid = http.post(`${BASE_URL}/payments`, body, { headers, tags: { name: 'pay' } });
  check(paid, { 'payment accepted': (x) => x.status === 202 });
  const again = http.post(`${BASE_URL}/payments`, body, { headers, tags: { name: 'pay' } });
  check(again, { 'replay answers the same': (x) => x.status === 202 && x.body === paid.body });
  const read = http.get(`${BASE_URL}/payments/${paid.json('paymentId')}`, {
    headers: { authorization: `Bearer ${token}` },
    tags: { name: 'read payment' },
  });
  check(read, { 'payment readable': (x) => x.status === 200 });
}
