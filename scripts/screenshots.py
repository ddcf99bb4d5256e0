"""Refresh the README's two screenshots (run it when the pages change):

    .venv/bin/python scripts/screenshots.py [--seconds 60] [--out docs]

Starts the agent emulator with its dashboard and ``pibridge run --simulate`` on the demo's
greenhouse (profiles/demo.toml's sensors, intervals of a few seconds so the charts fill), lets it
run ``--seconds``, then photographs, in headless Chromium (``bash scripts/setup.sh --browser``):

* ``docs/bridge-page.png``: the bridge's page at a phone's width (412 CSS px), the whole page;
* ``docs/dashboard.png``: the emulator's dashboard at 1280 px, range "15 min".

Everything it writes besides the two files lives in a temporary directory, removed afterwards.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from pibridge.emulator.process import EmulatorProcess, free_port
from pibridge.web.browser import DESKTOP_SIZE, PHONE_SIZE, chromium_missing, console_errors, open_chromium

ROOT = Path(__file__).resolve().parent.parent
MAX_HEIGHT = 6000
SETTLE_S = 3.0     #: the page's first event and its charts' history requests


def profile_text(emulator: EmulatorProcess, http: str) -> str:
    text = (ROOT / "profiles" / "demo.toml").read_text()
    text = re.sub(r'interval = "10s"', 'interval = "3s"', text)
    text = re.sub(r'interval = "5s"', 'interval = "3s"', text)
    text = re.sub(r"\[agent\].*?\n\n", f'[agent]\nhost = "127.0.0.1"\nport = {emulator.port}\n'
                  f'provision_port = {emulator.provision_port}\nca_file = "{emulator.ca_file}"\n'
                  'cert_folder = "certs"\nclient_name = "greenhouse"\nprovisioning = "smart"\n\n', text,
                  flags=re.S)
    text = re.sub(r'state_dir = ".*"', 'state_dir = "state"', text)
    return re.sub(r'http = ".*"', f'http = "{http}"', text)


def photograph(url: str, size: tuple[int, int], out: Path, *, click: str | None = None) -> None:
    pause = threading.Event()
    with open_chromium(size) as driver:
        driver.get(url)
        if click:
            driver.find_element("css selector", click).click()
        pause.wait(SETTLE_S)
        height = min(MAX_HEIGHT, int(driver.execute_script("return document.body.scrollHeight")) + 40)
        driver.set_window_size(size[0], height)
        pause.wait(1.0)
        errors = console_errors(driver)
        if errors:
            raise SystemExit(f"{url}: the browser logged errors: {errors}")
        driver.save_screenshot(str(out))
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the bridge runs first")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go (default docs/)")
    args = parser.parse_args(argv)
    missing = chromium_missing()
    if missing:
        raise SystemExit(f"no browser: {missing} (bash scripts/setup.sh --browser)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pibridge-shots-") as work_text:
        work = Path(work_text)
        emulator = EmulatorProcess(work / "emulator", http="127.0.0.1:0")
        emulator.start()
        page = f"127.0.0.1:{free_port()}"
        profile = work / "greenhouse.toml"
        profile.write_text(profile_text(emulator, page))
        bridge = subprocess.Popen([sys.executable, "-m", "pibridge", "run", "--profile", str(profile),
                                   "--simulate", "--trust-clock"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            try:
                bridge.wait(args.seconds)
                raise SystemExit(f"the bridge exited early ({bridge.returncode})")
            except subprocess.TimeoutExpired:
                pass
            photograph(f"http://{page}/", PHONE_SIZE, args.out / "bridge-page.png")
            photograph(emulator.dashboard_url, DESKTOP_SIZE, args.out / "dashboard.png",
                       click='#ranges button[data-range="15m"]')
        finally:
            bridge.send_signal(signal.SIGTERM)
            bridge.wait(30)
            emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
