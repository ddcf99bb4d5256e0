"""An emulator of the TeamViewer IoT Agent's local MQTT API (agent-api.md), for tests and demos.

Modules: `pki` (CA, certificates, CRL), `store` (SQLite), `core` (the API's semantics),
`front` (the public ports: TLS and the client-id rule), `broker` (the two mosquitto children and their
configuration; the front as a child), `channel` (the core's MQTT thread), `server`
(``pibridge emulator serve``), `process` (`EmulatorProcess`: serve as a child process, from Python).
"""
