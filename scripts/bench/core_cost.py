"""CPU cost of the emulator's core per push: `Core.process` on batches of pushes, in this process.

No MQTT, no broker: the core's own work per request (parse, validate, store, answer) on a real
SQLite database, measured as CPU time (``time.process_time``), which a machine shared with other
work disturbs far less than wall-clock rates. Use it to compare two versions of the core:

    .venv/bin/python scripts/bench/core_cost.py                       # this tree
    PYTHONPATH=/path/to/other/checkout .venv/bin/python scripts/bench/core_cost.py

One sensor, 5 double metrics (the push benchmark's payload), batches of 2000 pushes (the core's
`BATCH_MAX`); prints the median and the minimum over the batches, in microseconds per push.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pibridge
from pibridge import protocol as p
from pibridge.emulator.core import Core
from pibridge.emulator.pki import Authority, certificate_cn, make_client_key_and_csr
from pibridge.emulator.store import DB_NAME, Store

METRICS = 5
BATCH = 2000
DEFAULT_BATCHES = 15
UPDATED = b"Sensor was updated."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=DEFAULT_BATCHES, help="batches of 2000 pushes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pibridge-core-cost-") as tmp:
        state = Path(tmp)
        store = Store(state / DB_NAME)
        published: list[tuple[str, bytes]] = []
        core = Core(store, Authority(state), publish=lambda topic, body, qos: published.append((topic, body)))

        def request(topic: str, payload: bytes) -> bytes:
            published.clear()
            core.process([(topic, payload)])
            return published[0][1]

        cid = certificate_cn(request(p.PROVISION_TOPIC, make_client_key_and_csr()[1]))
        created_sensor = request(p.topic(p.OPERATIONS[p.Op.CREATE_SENSOR].request, cid), b'{"name":"Bench"}')
        sid = json.loads(created_sensor)["sensorId"]
        definitions = [{"matchingId": str(k), "name": f"Metric {k}", "valueType": "double",
                        "valueAnnotation": "x"} for k in range(METRICS)]
        created = request(p.topic(p.OPERATIONS[p.Op.CREATE_METRICS].request, cid, sid),
                          json.dumps({"metrics": definitions}).encode())
        metric_ids = [answer["metricId"] for answer in json.loads(created)]
        push = p.topic(p.OPERATIONS[p.Op.PUSH].request, cid, sid)
        timestamp = int(time.time() * 1000) - args.batches * BATCH - 1000
        costs = []
        for _ in range(args.batches):
            batch = []
            for i in range(BATCH):
                timestamp += 1
                values = [{"metricId": mid, "value": 20.0 + (i % 100) / 10 + k}
                          for k, mid in enumerate(metric_ids)]
                batch.append((push, json.dumps({"metrics": values, "timestamp": timestamp},
                                               separators=(",", ":")).encode()))
            published.clear()
            started = time.process_time()
            core.process(batch)
            costs.append((time.process_time() - started) / BATCH * 1e6)
            if sum(1 for _, body in published if body == UPDATED) != BATCH:
                raise SystemExit("not every push was acknowledged")
        store.close()
    print(f"machine: {platform.machine()} {platform.processor() or ''} Python {platform.python_version()}; "
          f"core from {Path(pibridge.__file__).parent.parent}")
    print(f"Core.process CPU per push: median {statistics.median(costs):.1f} us, min {min(costs):.1f} us "
          f"({args.batches} batches of {BATCH} pushes, {METRICS} metrics each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
