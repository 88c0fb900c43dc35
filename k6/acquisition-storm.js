// Acquisition storm: distinct buyers plus a share of repeat clickers, one hot product and
// many cold ones. Every answer is a grant (201) or a clear refusal (409: sold-out,
// already-holding, in-progress); anything else is an error.
//
//   k6 run -e PRODUCTS=<hot>,<cold>,... -e TOKENS=tokens.json -e RATE=1000 k6/acquisition-storm.js
//   REPEAT_SHARE (0.2): share of requests from a small set of repeat clickers
//   HOT_SHARE (0.8): share of requests for the first (hot) product
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { PRODUCTS, acquire, arrival, thresholds, tokenFor, tokens } from './lib.js';

const REPEAT_SHARE = Number(__ENV.REPEAT_SHARE || 0.2);
const HOT_SHARE = Number(__ENV.HOT_SHARE || 0.8);
const REPEATERS = Math.max(1, Math.floor(tokens.length / 100));

http.setResponseCallback(http.expectedStatuses(201, 409));

export const options = {
  scenarios: { storm: arrival(1000) },
  thresholds: thresholds(50),
};

export default function () {
  const i = exec.scenario.iterationInTest;
  const token = Math.random() < REPEAT_SHARE ? tokens[i % REPEATERS] : tokenFor(REPEATERS + i);
  const cold = PRODUCTS.length > 1 ? PRODUCTS[1 + (i % (PRODUCTS.length - 1))] : PRODUCTS[0];
  const product = Math.random() < HOT_SHARE ? PRODUCTS[0] : cold;
  const r = acquire(token, product);
  const res = http.request(r.method, r.url, r.body, r.params);
  check(res, { 'granted or refused': (x) => x.status === 201 || x.status === 409 });
}
