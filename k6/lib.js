// Shared by the scenarios: configuration from the environment, tokens minted up front.
//
//   BASE_URL   the edge (default http://127.0.0.1:3000)
//   TOKENS     a JSON array of buyer tokens (`flashgate tokens --count N > tokens.json`)
//   PRODUCTS   comma-separated product ids; the first is the hot one
//   RATE       requests per second (constant arrival rate), DURATION (e.g. 30s), VUS
import { SharedArray } from 'k6/data';

export const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:3000';
export const PRODUCTS = (__ENV.PRODUCTS || '').split(',').filter((p) => p.length > 0);
export const tokens = new SharedArray('tokens', () => JSON.parse(open(__ENV.TOKENS || 'tokens.json')));

if (PRODUCTS.length === 0) {
  throw new Error('set PRODUCTS to one or more product ids');
}

export function arrival(defaultRate) {
  const rate = Number(__ENV.RATE || defaultRate);
  return {
    executor: 'constant-arrival-rate',
    rate,
    timeUnit: '1s',
    duration: __ENV.DURATION || '30s',
    preAllocatedVUs: Number(__ENV.VUS || 64),
    maxVUs: Number(__ENV.MAX_VUS || 256),
  };
}

export function thresholds(p99ms) {
  return {
    http_req_failed: [`rate<${__ENV.MAX_ERROR_RATE || 0.01}`],
    http_req_duration: [`p(99)<${__ENV.P99_MS || p99ms}`],
  };
}

/// The token of iteration `i`: distinct buyers, cycling when the file runs out.
export function tokenFor(i) {
  return tokens[i % tokens.length];
}

export function acquire(token, product) {
  return {
    method: 'POST',
    url: `${BASE_URL}/slots/acquire`,
    body: JSON.stringify({ productId: product }),
    params: {
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      tags: { name: 'acquire' },
    },
  };
}
