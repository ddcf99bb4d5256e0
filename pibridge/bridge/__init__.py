"""``pibridge run``: the bridge's data path, top to bottom.

driver → `scheduler` (each sensor on its own grid; the scheduler owns time) → `processing`
(calibration, filters) → `queue` (SQLite store-and-forward in the state directory) →
`delivery` (inventory reconciliation, pushes with their own timestamps) → `pibridge.agent`.
`service` ties them together for one profile. `model` holds the types they hand each other.

Each stage's helpers sit beside it: the scheduler's `grid` (slots on the wall clock), `timers`,
`exclusive` (one attempt per chip), `sensor_state` (one sensor: its driver, values and what a
reading makes), `timeline` (a sensor's timestamps), `health` (failing, recovered, rebuilt),
`calls` (the worker pool), `handover` (a slot's samples as one batch) and `outbox`; delivery's
`connection` (the client and the push gate), `backlog` (what to send next), `ledger` (where
each sample taken stands), `pushes` (what one push carries), `probe` (an agent that lost our
sensors), `rejection` (an agent that refuses this client) and `provisioning` (the child process
that provisions).
"""
