"""``pibridge run``: the bridge's data path, top to bottom.

driver → `scheduler` (each sensor on its own grid; the scheduler owns time) → `processing`
(calibration, filters) → `queue` (SQLite store-and-forward in the state directory) →
`delivery` (inventory reconciliation, pushes with their own timestamps) → `pibridge.agent`.
`service` ties them together for one profile. `model` holds the types they hand each other.
"""
