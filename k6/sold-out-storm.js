// Sold-out storm: every request is for a product that is already sold out, from distinct
// buyers. The edge should answer all of them itself (409 sold-out) and fast.
//
//   k6 run -e PRODUCTS=<sold-out id> -e TOKENS=tokens.json -e RATE=2000 k6/sold-out-storm.js
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { PRODUCTS, acquire, arrival, thresholds, tokenFor } from './lib.js';

http.setResponseCallback(http.expectedStatuses(409));

export const options = {
  scenarios: { sold_out: arrival(2000) },
  thresholds: thresholds(20),
};

export default function () {
  const r = acquire(tokenFor(exec.scenario.iterationInTest), PRODUCTS[0]);
  const res = http.request(r.method, r.url, r.body, r.params);
  check(res, {
    'sold out': (x) => x.status === 409 && x.json('type') === '/problems/sold-out',
  });
}
