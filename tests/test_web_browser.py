"""The pages in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium):
the bridge's page shows every sensor of a running ``--simulate`` bridge with values in display
units, live (a new sample appears without a reload), a failing sensor turns visibly failing, the
page comes back by itself after the bridge restarts; the emulator's dashboard shows a drained
backlog at its original timestamps. No console errors (a missing favicon would be one).

Screenshots go to ``tests/artifacts/`` (``$PIBRIDGE_ARTIFACTS`` elsewhere; ignored by git)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_run_operations import Running, bridge_env, poll, run_command

from pibridge.emulator.process import EmulatorProcess, free_port
from pibridge.web.browser import PHONE_SIZE, console_errors, open_chromium

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("PIBRIDGE_ARTIFACTS") or ROOT / "tests" / "artifacts")
WAIT_S = 30.0
#: what each of the demo's metrics is shown in (°C, %, hPa, lx, open)
UNIT_OF = {"temperature": "°C", "humidity": "%", "pressure": "hPa", "illuminance": "lx", "voltage": "%",
           "co2": "ppm"}


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """``check()``'s first truthy result (the page lives in another process: no event to wait on)."""
    return poll(check, timeout, what)


def fast_demo_profile(tmp_path: Path, http: str) -> Path:
    """profiles/demo.toml's greenhouse with short intervals, no agent, its page on ``http``."""
    text = (ROOT / "profiles" / "demo.toml").read_text()
    text = re.sub(r'interval = "5s"', 'interval = "3s"', text)
    text = re.sub(r'interval = "10s"', 'interval = "5s"', text)   # the SCD41's 5 s: the shortest allowed
    text = re.sub(r"\[agent\].*?\n\n", f'[agent]\nhost = "127.0.0.1"\nport = {free_port()}\n'
                  'ca_file = "missing-ca.crt"\ncert_folder = "certs"\n\n', text, flags=re.S)
    text = re.sub(r'state_dir = ".*"', 'state_dir = "state"', text)
    text = re.sub(r'http = ".*"', f'http = "{http}"', text)
    path = tmp_path / "demo.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with open_chromium(PHONE_SIZE) as driver:
        yield driver


@pytest.fixture
def browser(chromium: Any) -> Any:
    """The module's Chromium on a blank page, its log emptied (the last test's page is gone)."""
    chromium.get("about:blank")
    console_errors(chromium)
    return chromium


def cards(driver: Any) -> dict[str, dict[str, Any]]:
    """Each sensor card in page order (a list from the browser: its objects come back key-sorted)."""
    return dict(driver.execute_script("""
        const out = [];
        for (const card of document.querySelectorAll('section.sensor')) {
          const values = {};
          for (const v of card.querySelectorAll('.value')) values[v.dataset.metric] = v.textContent;
          out.push([card.dataset.sensor, {state: card.dataset.state, taken: Number(card.dataset.taken),
              failing: card.classList.contains('failing'), badge: card.querySelector('.badge').textContent,
              border: getComputedStyle(card).borderTopColor, values}]);
        }
        return out;"""))


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


def test_the_bridge_page_is_live_and_comes_back_after_a_restart(tmp_path: Path, browser: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    profile = fast_demo_profile(tmp_path, f"127.0.0.1:{port}")
    sensors = re.findall(r'\[\[sensor\]\]\nname = "(.+)"', profile.read_text())
    assert len(sensors) == 9
    bridge = Running(run_command(profile), bridge_env(tmp_path / "run"))
    try:
        bridge.wait_line(lambda line: "web page at" in line)
        browser.get(url)
        def every_sensor_with_values() -> dict[str, dict[str, Any]] | None:
            shown = cards(browser)
            complete = all(shown.get(s, {}).get("values") and "–" not in "".join(shown[s]["values"].values())
                           for s in sensors)
            return shown if complete else None
        shown = wait_until(every_sensor_with_values, "every sensor with its values")
        assert list(shown) == sensors                       # every sensor, in the profile's order
        for sensor, card in shown.items():
            assert card["state"] == "ok" and not card["failing"], (sensor, card)
            for key, text in card["values"].items():
                if key == "state":                              # a door reads by its annotation
                    assert text in ("open", "closed"), (sensor, key, text)
                    continue
                unit = UNIT_OF[key]
                assert re.fullmatch(rf"-?[\d.]+ {re.escape(unit)}", text), (sensor, key, text)
        assert 900 < float(shown["Air"]["values"]["pressure"].split()[0]) < 1100   # hPa, not Pa
        before = shown["Canopy"]["taken"]
        marker = browser.execute_script("window.pbNoReload = Math.random(); return window.pbNoReload")
        wait_until(lambda: cards(browser)["Canopy"]["taken"] > before, "a new sample without a reload")
        points = browser.execute_script(
            "return document.querySelectorAll('section.sensor .chart canvas').length")
        assert points >= sum(len(c["values"]) for c in shown.values()) - 1  # a chart per drawable metric
        assert console_errors(browser) == []
        shot(browser, "bridge-phone.png")

        assert bridge.stop() == 0                              # the bridge restarts …
        wait_until(lambda: browser.execute_script(
            "return document.getElementById('banner').classList.contains('shown')"), "the lost banner")
        bridge = Running(run_command(profile), bridge_env(tmp_path / "run"))
        bridge.wait_line(lambda line: "web page at" in line)
        bridge.wait_samples("Canopy", 1)
        wait_until(lambda: not browser.execute_script(
            "return document.getElementById('banner').classList.contains('shown')")
            and cards(browser)["Canopy"]["taken"] < before + 50, "the page back by itself")
        assert browser.execute_script("return window.pbNoReload") == marker   # no reload happened
        taken = cards(browser)["Canopy"]["taken"]
        wait_until(lambda: cards(browser)["Canopy"]["taken"] > taken, "live again after the restart")
        errors = [e for e in console_errors(browser) if "api/events" not in e]  # the outage itself
        assert errors == []
    finally:
        if bridge.proc.poll() is None:
            bridge.stop()


FAILING_PROFILE = """\
[agent]
host = "127.0.0.1"
port = {port}
ca_file = "missing-ca.crt"
cert_folder = "certs"

[bridge]
state_dir = "state"
http = "127.0.0.1:{http}"

[[sensor]]
name = "Pi SoC"
driver = "cpu_temperature"
interval = 1
options = {{ sensor_file = "{zone}" }}
"""


def test_a_failing_sensor_turns_visibly_failing(tmp_path: Path, browser: Any) -> None:
    zone = tmp_path / "temp"
    zone.write_text("45000\n")
    http = free_port()
    profile = tmp_path / "p.toml"
    profile.write_text(FAILING_PROFILE.format(port=free_port(), http=http, zone=zone))
    command = [c for c in run_command(profile) if c != "--simulate"]   # the real driver on a file
    bridge = Running(command, bridge_env(tmp_path / "run"))
    try:
        bridge.wait_line(lambda line: "web page at" in line)
        browser.get(f"http://127.0.0.1:{http}/")
        ok = wait_until(lambda: (c := cards(browser).get("Pi SoC")) and c["values"] and c, "the sensor ok")
        assert ok["values"]["temperature"] == "45 °C" and not ok["failing"]
        zone.unlink()
        failing = wait_until(lambda: (c := cards(browser)["Pi SoC"])["failing"] and c, "the sensor failing")
        assert failing["state"] == "failing" and failing["badge"].startswith("failing since")
        assert failing["border"] != ok["border"]                       # visibly: a red frame
        assert "does not exist" in browser.find_element("css selector", "section.sensor .error").text
        shot(browser, "bridge-failing.png")
        zone.write_text("46000\n")
        wait_until(lambda: (c := cards(browser)["Pi SoC"])["state"] == "ok" and c["values"]["temperature"]
                   == "46 °C", "the sensor recovered")
        assert console_errors(browser) == []
    finally:
        bridge.stop()


DRAIN_PROFILE = """\
[agent]
host = "127.0.0.1"
port = {port}
provision_port = {provision_port}
ca_file = "{ca_file}"
cert_folder = "certs"
provisioning = "smart"

[bridge]
state_dir = "state"

[[sensor]]
name = "Pi SoC"
driver = "cpu_temperature"
interval = 1
"""


def test_the_dashboard_shows_a_drained_backlog_at_its_own_timestamps(tmp_path: Path, browser: Any) -> None:
    emulator = EmulatorProcess(tmp_path / "emulator", http="127.0.0.1:0")
    emulator.start()
    profile = tmp_path / "p.toml"
    profile.write_text(DRAIN_PROFILE.format(port=emulator.port, provision_port=emulator.provision_port,
                                            ca_file=emulator.ca_file))
    bridge = Running(run_command(profile), bridge_env(tmp_path / "run"))
    try:
        wait_until(lambda: _stored(emulator) >= 2, "the first pushes stored")
        emulator.stop()                                        # the agent goes away …
        down = time.time()
        while len(backlog := [ts for ts in bridge.samples("Pi SoC") if ts >= down * 1000]) < 3:
            bridge.wait_samples("Pi SoC", 1)                   # … samples wait on disk …
        emulator.start()                                       # … and drain when it is back
        wait_until(lambda: set(backlog) <= set(_timestamps(emulator)), "the backlog delivered")
        browser.set_window_size(1280, 1000)
        browser.get(emulator.dashboard_url)
        browser.find_element("css selector", '#ranges button[data-range="15m"]').click()
        row = wait_until(lambda: browser.execute_script(
            "const s = window.pbDashboard.series; return Object.keys(s).find((k) => s[k].ts.length) || null"),
            "a chart with values")
        wanted = {ts / 1000 for ts in backlog}
        series = wait_until(lambda: (s := browser.execute_script(f"return window.pbDashboard.series[{row}]"))
                            and wanted <= {round(t, 3) for t in s["ts"]} and s, "the backlog on the chart")
        assert series["ts"] == sorted(series["ts"])
        assert {round(t * 1000) for t in series["ts"]} <= set(_timestamps(emulator))  # stored values only
        assert "°C" in browser.find_element("css selector", "section.sensor .value").text
        assert console_errors(browser) == []
        shot(browser, "dashboard.png")
    finally:
        bridge.stop()
        browser.set_window_size(*PHONE_SIZE)
        emulator.stop()


def _timestamps(emulator: EmulatorProcess) -> list[int]:
    dump = emulator.dump()
    return [v["timestamp"] for c in dump["clients"] for s in c["sensors"] for m in s["metrics"]
            for v in m["values"]]


def _stored(emulator: EmulatorProcess) -> int:
    return len(_timestamps(emulator))


def test_with_a_token_the_page_asks_once_and_keeps_it(tmp_path: Path, browser: Any) -> None:
    token = "browser-token-0123456789"
    (tmp_path / "token").write_text(token + "\n")
    http = free_port()
    zone = tmp_path / "temp"
    zone.write_text("45000\n")
    profile = tmp_path / "p.toml"
    text = FAILING_PROFILE.format(port=free_port(), http=http, zone=zone)
    profile.write_text(text.replace("[bridge]\n", '[bridge]\nhttp_token_file = "token"\n'))
    bridge = Running(run_command(profile), bridge_env(tmp_path / "run"))
    try:
        bridge.wait_line(lambda line: "web page at" in line)
        browser.get(f"http://127.0.0.1:{http}/")
        form = wait_until(lambda: (f := browser.find_element("id", "login")).is_displayed() and f,
                          "the token form")
        assert cards(browser) == {}                                    # nothing shown without it
        browser.find_element("id", "token").send_keys(token)
        form.submit()
        wait_until(lambda: cards(browser).get("Pi SoC", {}).get("values"), "the page with the token")
        browser.refresh()                                              # kept: not asked again
        wait_until(lambda: cards(browser).get("Pi SoC", {}).get("values"), "the page after a reload")
        assert not browser.find_element("id", "login").is_displayed()
        errors = console_errors(browser)
        assert all("401" in error for error in errors), errors         # only the first, refused ask
    finally:
        bridge.stop()
