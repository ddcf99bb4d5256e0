"""An emulator of the TeamViewer IoT Agent's local MQTT API (agent-api.md), for tests and demos.

Modules: `pki` (CA, certificates, CRL), `store` (SQLite), `core` (the API's semantics),
`broker` (the two mosquitto children and their configuration), `channel` (the core's MQTT thread), `server`
(``pibridge emulator serve``), `process` (`EmulatorProcess`: serve as a child process, from Python).
"""
