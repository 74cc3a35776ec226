// Fixed-rate load on `nightrec api` with autocannon (bench/serve.py runs it): random known users, every
// response's snapshot header counted. Prints one JSON line: latency percentiles (ms), rates, non-2xx,
// errors, and responses per snapshot.
//
// usage: node bench/serve_load.js URL USERS RATE SECONDS CONNECTIONS
const autocannon = require("autocannon");

const [url, users, rate, seconds, connections] = process.argv.slice(2);
const nUsers = Number(users);
const snapshots = {};

function userPath() {
  const u = Math.floor(Math.random() * nUsers);
  return "/v1/recs/u" + String(u).padStart(7, "0");
}

autocannon(
  {
    url,
    connections: Number(connections),
    duration: Number(seconds),
    overallRate: Number(rate) > 0 ? Number(rate) : undefined,
    requests: [
      {
        method: "GET",
        setupRequest: (req) => ({ ...req, path: userPath() }),
        onResponse: (status, body, context, headers) => {
          const tag = headers["x-nightrec-snapshot"] || "(none)";
          snapshots[tag] = (snapshots[tag] || 0) + 1;
        },
      },
    ],
  },
  (err, result) => {
    if (err) {
      console.error(err);
      process.exit(1);
    }
    const l = result.latency;
    console.log(
      JSON.stringify({
        requests: result.requests.total,
        rps: result.requests.average,
        p50: l.p50,
        p90: l.p90,
        p99: l.p99,
        max: l.max,
        non2xx: result.non2xx,
        errors: result.errors,
        timeouts: result.timeouts,
        snapshots,
      }),
    );
  },
);
