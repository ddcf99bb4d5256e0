"""The bridge's web page and the emulator's dashboard (standard-library HTTP server, vendored
uPlot charts). Imported only when an ``http`` address is configured: nothing here runs otherwise.

* `address`: ``HOST:PORT`` parsing and the loopback rule (the profile checker uses it).
* `server`: the bounded HTTP server (its bounds are in its docstring), static package files.
* `events`: one Server-Sent-Events broadcaster for any number of browsers.
* `history`: each metric's recent values in a bounded ring (the charts).
* `display`: the one place a value becomes what a person reads (unit, hPa).
* `metrics`: ``/metrics`` in the Prometheus text format.
* `token`: the token file (read bounded; the profile checker uses it too).
* `auth`: the token (header, cookie).
* `bridge_page`: the bridge's page and its API; `dashboard`: the emulator's.
"""
