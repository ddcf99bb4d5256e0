"""pulse_counter: hardware.md §18.4 vectors through edges on a mock pin, debounce on the edges'
own timestamps, the atomic read-and-reset, rates over the actual time, gusts, resume, the option
table, the simulated weather, and the queue's resume table with ``pibridge reset-total``."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from pibridge.bridge.model import TakenSample
from pibridge.bridge.queue import SampleQueue, read_resume_values, reset_resume
from pibridge.drivers.base import check_sample
from pibridge.drivers.errors import ConfigurationError
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.pulse import PulsePin, PulseTimer, PulseTrain
from pibridge.drivers.pulse_counter import PulseCounter
from pibridge.drivers.simulation import Environment, SimulatedWorld
from pibridge.profile import ProfileError, load_profile

PIN = 17
RAIN = {"pin": PIN, "per_pulse": 0.2794, "unit": "mm", "debounce": "50ms"}
RAIN_NO_DEBOUNCE = {**RAIN, "debounce": "0ms"}   #: every edge counts (a second train's too)
WIND = {"pin": PIN, "rate_factor": 2.4, "rate_unit": "km/h", "debounce": "5ms"}
FLOW = {"pin": PIN, "per_pulse": 1 / 450, "unit": "L", "rate_factor": 1 / 7.5, "rate_unit": "L/min"}


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def pin(mock_factory) -> PulsePin:
    return mock_factory.pin(PIN, pin_class=PulsePin)


def counter(mock_factory, clock, **options) -> PulseCounter:
    return PulseCounter(pin_factory=mock_factory, clock=clock, **options)


def pulses(pin: PulsePin, times: list[float], *, bounces: int = 0, active_low: bool = True) -> None:
    """Press at each time (with bounce edge pairs 0.2 ms apart), release 10 ms later."""
    active = not active_low
    for t in times:
        pin.drive_at(active, t)
        for k in range(1, bounces + 1):
            pin.drive_at(not active, t + (2 * k - 1) * 0.0002)
            pin.drive_at(active, t + 2 * k * 0.0002)
        pin.drive_at(not active, t + 0.01)


# -- hardware.md §18.4 --------------------------------------------------------------------------------
def test_rain_vector(mock_factory, clock, pin) -> None:
    driver = counter(mock_factory, clock, **RAIN)
    pulses(pin, [clock.now + 10 + 50 * i for i in range(17)])
    clock.sleep(900.0)  # 15 min
    sample = check_sample(driver, driver.collect())
    assert sample["count"] == 17
    assert sample["total"] == pytest.approx(4.7498, abs=1e-12)
    assert sample["rate"] == pytest.approx(19.0, abs=0.001)  # 18.9992 mm/h


@pytest.mark.parametrize(("factor", "kmh"), [(2.4, 5.76), (1.2, 2.88)])
def test_wind_vector(mock_factory, clock, pin, factor, kmh) -> None:
    driver = counter(mock_factory, clock, **{**WIND, "rate_factor": factor})
    pulses(pin, [clock.now + 0.4 * i for i in range(12)], bounces=3)
    clock.sleep(5.0)
    sample = driver.collect()
    assert sample["count"] == 12
    assert sample["rate"] == pytest.approx(kmh, abs=1e-12)
    assert "total" not in sample


def test_flow_vector(mock_factory, clock, pin) -> None:
    driver = counter(mock_factory, clock, **FLOW)
    pulses(pin, [clock.now + i * 60 / 225 for i in range(225)])
    clock.sleep(60.0)
    sample = driver.collect()
    assert sample == {"rate": pytest.approx(0.5, abs=1e-12), "count": 225,
                      "total": pytest.approx(0.5, abs=1e-12)}


# -- counting --------------------------------------------------------------------------------------------
def test_debounce_uses_the_edges_own_timestamps(mock_factory, clock, pin) -> None:
    bouncy = counter(mock_factory, clock, **{**RAIN, "debounce": 0})
    pulses(pin, [1.0, 2.0, 3.0], bounces=3)
    assert bouncy.collect()["count"] == 12, "without debounce every bounce is a pulse"
    bouncy.close()
    debounced = counter(mock_factory, clock, **{**RAIN, "debounce": "5ms"})
    pulses(pin, [11.0, 12.0, 13.0, 13.004, 13.0051], bounces=3)  # 13.004 is 4 ms after 13.0: ignored
    assert debounced.collect()["count"] == 4
    assert PulseCounter.check_options({**RAIN, "debounce": "5ms"})["debounce"] == pytest.approx(0.005)
    assert PulseCounter.check_options({**RAIN, "debounce": 0.25})["debounce"] == 0.25


def test_rising_edge_with_pull_down(mock_factory, clock, pin) -> None:
    driver = counter(mock_factory, clock, **{**RAIN, "edge": "rising", "pull": "down"})
    pulses(pin, [1.0, 2.0], active_low=False)
    assert driver.collect()["count"] == 2
    pulses(pin, [3.0], active_low=True)  # a high-idle pulse: its rising edge is the release
    assert driver.collect()["count"] == 1


def test_rate_is_over_the_actual_time_between_samples(mock_factory, clock, pin) -> None:
    driver = counter(mock_factory, clock, **WIND)
    clock.sleep(10.0)
    driver.collect()
    pulses(pin, [clock.now + i * 0.1 for i in range(30)])
    clock.sleep(7.5)  # a late sample: 30 pulses in 7.5 s, not in a nominal 5 s
    assert driver.collect()["rate"] == pytest.approx(30 / 7.5 * 2.4)
    clock.sleep(2.0)
    assert driver.collect() == {"rate": 0.0, "count": 0}


def test_the_read_and_reset_is_atomic_under_concurrent_edges(mock_factory, pin) -> None:
    """An edge thread drives 20 000 pulses while samples are taken: each pulse is counted once."""
    driver = PulseCounter(pin_factory=mock_factory, pin=PIN, per_pulse=1.0, unit="tips")
    counts: list[int] = []
    done = threading.Event()

    def edges() -> None:
        pulses(pin, [i * 0.001 for i in range(20_000)])
        done.set()

    thread = threading.Thread(target=edges)
    thread.start()
    while not done.is_set():
        counts.append(int(driver.collect()["count"]))
    thread.join()
    counts.append(int(driver.collect()["count"]))
    assert sum(counts) == 20_000
    assert driver.collect()["total"] == 20_000.0
    assert len([c for c in counts if c]) > 1, "samples were taken while edges arrived"


def test_resume_continues_the_total(mock_factory, clock, pin) -> None:
    driver = counter(mock_factory, clock, **RAIN)
    driver.resume({"total": 12.5})
    pulses(pin, [1.0, 2.0])
    assert driver.collect()["total"] == 12.5 + 2 * 0.2794
    pulses(pin, [3.0])
    assert driver.collect()["total"] == 12.5 + 3 * 0.2794
    other = counter(mock_factory, clock, **{**RAIN, "pin": 18})
    other.resume({"total": "garbage"})  # not a number: starts at 0
    assert other.collect()["total"] == 0.0
    assert PulseCounter.resumable_metrics == ("total",)


def test_gust_is_the_highest_3_s_rate(mock_factory, clock, pin) -> None:
    driver = counter(mock_factory, clock, **{**WIND, "gust_window": "3s"})
    start = 1200.0  # on a 0.25 s bucket boundary
    steady = [start + i for i in range(60)]                    # 1 Hz: 2.4 km/h
    burst = [start + 30.05 + i * 0.1 for i in range(30)]        # 10 Hz for 3 s: 24 km/h
    pulses(pin, sorted(steady + burst))
    clock.sleep(60.0)
    sample = driver.collect()
    assert sample["gust"] == pytest.approx((30 + 3) / 3 * 2.4)  # the burst plus 3 steady pulses
    assert sample["rate"] == pytest.approx(90 / 60 * 2.4)
    pulses(pin, [start + 61.0])
    clock.sleep(60.0)  # the window ending at 61 s reaches back into the last interval's 59 s pulse
    assert driver.collect()["gust"] == pytest.approx(2 / 3 * 2.4)
    clock.sleep(60.0)
    assert driver.collect()["gust"] == 0.0


class WrappingTicksFactory(MockFactory):
    """Ticks as pigpio gives them: integer microseconds that wrap at 2^32; ``ticks_diff`` is
    modular, as gpiozero's pigpio factory's."""

    @staticmethod
    def ticks_diff(later: int, earlier: int) -> float:
        return ((later - earlier) % (1 << 32)) / 1e6


def test_gust_buckets_on_the_factorys_ticks_across_a_wrap(clock) -> None:
    """Buckets are time since a reference through ``ticks_diff``, never raw ticks / seconds: with
    µs ticks wrapping during a 10 Hz burst the gust is the same as with seconds."""
    factory = WrappingTicksFactory()
    try:
        pin = factory.pin(PIN, pin_class=PulsePin)
        driver = counter(factory, clock, **{**WIND, "gust_window": "3s"})
        start = (1 << 32) - 31_000_000                              # 31 s before the wrap
        seconds = sorted([float(i) for i in range(60)] + [30.05 + i * 0.1 for i in range(30)])
        for t in seconds:
            at = (start + round(t * 1e6)) % (1 << 32)
            pin.drive_at(False, at)
            pin.drive_at(True, (at + 10_000) % (1 << 32))
        clock.sleep(60.0)
        sample = driver.collect()
        assert sample["gust"] == pytest.approx((30 + 3) / 3 * 2.4)
        assert sample["count"] == 90
    finally:
        factory.close()


# -- declarations -----------------------------------------------------------------------------------------
def test_metrics_follow_the_options() -> None:
    rain = PulseCounter.metrics_for(PulseCounter.check_options(RAIN))
    assert [(m.key, m.unit or m.annotation) for m in rain] == [("rate", "mm/h"), ("count", "pulses"),
                                                               ("total", "mm")]
    wind = PulseCounter.metrics_for(PulseCounter.check_options(
        {**WIND, "rate_factor": 0.6666667, "rate_unit": "m/s", "gust_window": 3}))
    assert [(m.key, m.unit) for m in wind] == [("rate", "SI.Velocity.METERS_PER_SECOND"), ("count", None),
                                               ("gust", "SI.Velocity.METERS_PER_SECOND")]
    assert PulseCounter.resources(PulseCounter.check_options(RAIN)).gpio == (PIN,)


BAD_OPTIONS = [
    ({"pin": PIN}, "what one pulse means"),
    ({"pin": PIN, "per_pulse": 0.2794}, "option unit: required"),
    ({"pin": PIN, "rate_factor": 2.4}, "option rate_unit: required"),
    ({**RAIN, "gust_window": "3s"}, "needs rate_factor"),
    ({**RAIN, "debounce": "5 parsecs"}, "debounce"),
    ({**RAIN, "debounce": "-5ms"}, "debounce"),
    ({**RAIN, "debounce": "11s"}, "above the maximum"),
    ({**RAIN, "per_pulse": -1}, "below the minimum"),
    ({**RAIN, "per_pulse": "much"}, "per_pulse"),
    ({**RAIN, "edge": "both"}, "not one of"),
    ({**RAIN, "pull": "sideways"}, "not one of"),
    ({**RAIN, "pin": 2, "pull": "down"}, "fixed 1.8 kΩ pull-up"),
    ({**RAIN, "pin": 40}, "does not exist"),
    ({**RAIN, "unit": "m\x1bm"}, "printable"),
    ({**RAIN, "unit": "x" * 200}, "at most"),
    ({**RAIN, "colour": "red"}, "unknown option colour"),
]


@pytest.mark.parametrize(("options", "text"), BAD_OPTIONS)
def test_bad_options_are_one_clear_line(options, text) -> None:
    with pytest.raises(ConfigurationError, match=text) as info:
        PulseCounter.check_options(options)
    assert "\n" not in str(info.value)


# -- the simulated weather -------------------------------------------------------------------------------
def test_steady_simulated_train_is_exact_and_timer_driven() -> None:
    now = [1_700_000_000.0]
    env = Environment(seed=5, clock=lambda: now[0], steady_pulse_hz=2.0)
    clock = VirtualClock()
    with SimulatedWorld(env, clock=clock, door_timer=False) as world:
        driver = world.build("pulse_counter", RAIN)
        timer = world.shared("pulse-timer", lambda: None)
        assert isinstance(timer, PulseTimer)
        now[0] += 10.0
        timer.advance()
        assert driver.collect()["count"] == 20  # pulses at .25 and .75 s of each second


def test_a_rebuilt_driver_on_the_same_pin_gets_one_train_not_two() -> None:
    """The scheduler rebuilds a failed sensor in the same world: the closed driver's train stops
    with it and the new one counts 20 pulses per 10 s at 2 Hz, not 40."""
    now = [1_700_000_000.0]
    env = Environment(seed=5, clock=lambda: now[0], steady_pulse_hz=2.0)
    with SimulatedWorld(env, clock=VirtualClock(), door_timer=False) as world:
        first = world.build("pulse_counter", RAIN_NO_DEBOUNCE)
        timer = world.shared("pulse-timer", lambda: None)
        assert isinstance(timer, PulseTimer)
        first.close()
        rebuilt = world.build("pulse_counter", RAIN_NO_DEBOUNCE)
        now[0] += 10.0
        timer.advance()
        assert rebuilt.collect()["count"] == 20
        assert len(timer.pins) == 1
        rebuilt.close()
        assert timer.pins == []                                            # released with its driver
        rebuilt = world.build("pulse_counter", RAIN_NO_DEBOUNCE)
        pin = timer.pins[0]
        timer.add(pin, PulseTrain(lambda t: 2.0, seed="x", steady_hz=2.0))   # a second add replaces
        assert timer.pins == [pin]


def test_a_rain_shower_an_anemometer_and_an_irrigation_run() -> None:
    now = [1_700_000_000.0]
    env = Environment(seed=9, clock=lambda: now[0], shower_probability=1.0, shower_period_s=600,
                      shower_s=600, irrigation_period_s=600, irrigation_s=600)
    with SimulatedWorld(env, clock=VirtualClock(), door_timer=False) as world:
        rain = world.build("pulse_counter", RAIN)
        wind = world.build("pulse_counter", {**WIND, "pin": 27, "gust_window": "3s"})
        flow = world.build("pulse_counter", {**FLOW, "pin": 22})
        timer = world.shared("pulse-timer", lambda: None)
        expected_mm = 0.0
        for _ in range(120):
            expected_mm += env.rain_rate_mm_h(now[0] + 0.5) / 3600
            now[0] += 1.0
            timer.advance()
        r, w, f = rain.collect(), wind.collect(), flow.collect()
        assert r["total"] == pytest.approx(expected_mm, abs=3 * 0.2794)
        assert w["count"] > 0 and w["gust"] >= w["rate"] * 0  # wind blows
        assert f["total"] == pytest.approx(2 * env.irrigation_l_min, rel=0.1)


def test_pulse_train_bounces_and_jitter_stay_per_pulse() -> None:
    train = PulseTrain(lambda t: 40.0, seed=1, bounces=3)
    edges = train.edges(100.0, 101.0)
    presses = [t for t, level in edges if level is False]
    assert len(train.pulse_times(100.0, 101.0)) == 40
    assert len(presses) == 40 * 4
    assert train.pulse_times(100.0, 101.0) == train.pulse_times(100.0, 101.0), "a pure function of time"


# -- the queue keeps the newest total; reset-total forgets it ----------------------------------------------
def sample(total: float, ts: int) -> TakenSample:
    return TakenSample("Rain", {"rate": 0.0, "count": 1, "total": total}, ts, 1.0, "boot",
                       resume={"total": total})


def test_resume_table_survives_acknowledgement_and_reopening(tmp_path: Path) -> None:
    with SampleQueue(tmp_path, boot_id="boot") as queue:
        queue.put_many([sample(1.0, 1000), sample(2.0, 2000)])
        queue.put(sample(3.5, 3000))
        queue.ack([row.id for row in queue.fetch(0, 10)])
        queue.put(TakenSample("Air", {"t": 1.0}, 4000, 1.0, "boot"))
        assert queue.resume_values() == {"Rain": {"total": 3.5}}
    assert read_resume_values(tmp_path) == {"Rain": {"total": 3.5}}
    with SampleQueue(tmp_path, boot_id="boot") as queue:
        assert queue.depth == 1 and queue.resume_values() == {"Rain": {"total": 3.5}}
    assert reset_resume(tmp_path, "Rain") == {"total": 3.5}
    assert read_resume_values(tmp_path) == {}


PROFILE = """\
[bridge]
state_dir = "{state}"

[[sensor]]
name = "Rain"
driver = "pulse_counter"
[sensor.options]
pin = 6
per_pulse = 0.2794
unit = "mm"
debounce = "50ms"

[[sensor]]
name = "Air"
driver = "cpu_temperature"
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pibridge", *args], capture_output=True, text=True,
                          timeout=60)


def test_reset_total_command(tmp_path: Path) -> None:
    state = tmp_path / "state"
    profile = tmp_path / "p.toml"
    profile.write_text(PROFILE.format(state=state))
    assert load_profile(profile).sensors[0].options["debounce"] == pytest.approx(0.05)
    done = run_cli("reset-total", "Rain", "--profile", str(profile))
    assert done.returncode == 0 and "no state directory" in done.stdout
    with SampleQueue(state, boot_id="boot") as queue:
        queue.put(sample(7.0, 1000))
    from pibridge.bridge.service import StateDirLock

    lock = StateDirLock(state)
    lock.acquire()  # a running bridge
    try:
        refused = run_cli("reset-total", "Rain", "--profile", str(profile))
    finally:
        lock.release()
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "not resetting while the bridge runs" in refused.stderr
    assert read_resume_values(state) == {"Rain": {"total": 7.0}}
    for args, text in ((("Nope",), "no sensor 'Nope'"), (("Air",), "keeps no running total")):
        bad = run_cli("reset-total", *args, "--profile", str(profile))
        assert bad.returncode == 1 and text in bad.stderr and "Traceback" not in bad.stderr
    done = run_cli("reset-total", "Rain", "--profile", str(profile))
    assert done.returncode == 0 and "forgot total 7.0" in done.stdout
    assert read_resume_values(state) == {}


def test_profile_pin_clash_and_bad_duration(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(PROFILE.format(state=tmp_path)
                       + '\n[[sensor]]\nname = "Door"\ndriver = "digital_input"\n[sensor.options]\npin = 6\n')
    with pytest.raises(ProfileError, match="GPIO 6 is already used"):
        load_profile(profile)
    profile.write_text(PROFILE.format(state=tmp_path).replace('"50ms"', '"50 furlongs"'))
    with pytest.raises(ProfileError, match=r"p.toml:11: sensor \"Rain\" → options.debounce: "
                                           r"'50 furlongs' is not a valid duration"):
        load_profile(profile)


# -- the scheduler hands the stored total back before the first read, and keeps the newest ------------
class Sink:
    def __init__(self) -> None:
        self.samples: list[TakenSample] = []
        self.cond = threading.Condition()

    def put(self, sample: TakenSample) -> None:
        with self.cond:
            self.samples.append(sample)
            self.cond.notify_all()

    def wait_for(self, count: int) -> list[TakenSample]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.samples) >= count, timeout=15.0)
            return list(self.samples)


def test_scheduler_resumes_from_the_stored_total_and_a_rebuilt_driver_continues(mock_factory) -> None:
    from pibridge.bridge.scheduler import Scheduler, SensorPlan
    from pibridge.profile import Calibration, MetricConfig

    pin = mock_factory.pin(PIN, pin_class=PulsePin)
    built: list[PulseCounter] = []

    def build() -> PulseCounter:
        if built:
            built[-1].close()
        built.append(PulseCounter(pin_factory=mock_factory, **RAIN))
        return built[-1]

    # a calibration on the total (mm → inches) changes what is sent, not what is resumed from
    configs = {"total": MetricConfig("total", calibration=Calibration(scale=1 / 25.4))}
    sink = Sink()
    scheduler = Scheduler([SensorPlan("Rain", 0.05, build, configs)], sink,
                          resume={"Rain": {"total": 100.0}, "Gone": {"total": 1.0}})
    scheduler.start()
    try:
        first = sink.wait_for(1)[0]
        assert first.resume is not None and first.resume["total"] >= 100.0
        assert first.values["total"] == pytest.approx(first.resume["total"] / 25.4)
        pulses(pin, [5.0, 6.0, 7.0])
        later = sink.wait_for(len(sink.samples) + 2)[-1]
        assert later.resume == {"total": 100.0 + 3 * 0.2794}
        scheduler.replace(SensorPlan("Rain", 0.05, build, configs))  # a reload: a new driver
        count = len(sink.samples)
        resumed = sink.wait_for(count + 3)[-1]
        assert len(built) == 2 and resumed.resume == {"total": 100.0 + 3 * 0.2794}
    finally:
        scheduler.stop()


def test_weather_profile_passes_check() -> None:
    from pibridge.cli import main

    assert main(["check", "--profile", str(Path(__file__).resolve().parent.parent / "profiles"
                                             / "weather.toml")]) == 0


def test_a_damaged_resume_row_starts_that_metric_afresh(tmp_path: Path) -> None:
    import sqlite3

    with SampleQueue(tmp_path, boot_id="boot") as queue:
        queue.put(sample(3.5, 1000))
        queue.put(TakenSample("Flow", {"total": 2.0}, 1000, 1.0, "boot", resume={"total": 2.0}))
    db = sqlite3.connect(tmp_path / "queue.sqlite3")
    with db:
        db.execute("UPDATE resume SET value = 'not json{' WHERE sensor = 'Rain'")
    db.close()
    with SampleQueue(tmp_path, boot_id="boot") as queue:
        assert queue.resume_values() == {"Flow": {"total": 2.0}}


def test_a_sample_without_values_keeps_its_total_and_stores_no_row(tmp_path: Path) -> None:
    """Every value held back by processing (a deadband): the total still travels to the queue."""
    with SampleQueue(tmp_path, boot_id="boot") as queue:
        queue.put(sample(1.0, 1000))
        queue.put(TakenSample("Rain", {}, None, 2.0, "boot", resume={"total": 7.5}))
        assert queue.depth == 1 and queue.resume_values() == {"Rain": {"total": 7.5}}
    assert read_resume_values(tmp_path) == {"Rain": {"total": 7.5}}


def test_the_total_is_kept_while_a_deadband_holds_every_value_back(mock_factory) -> None:
    from pibridge.bridge.scheduler import Scheduler, SensorPlan
    from pibridge.profile import MetricConfig

    pin = mock_factory.pin(PIN, pin_class=PulsePin)
    counter = PulseCounter(pin_factory=mock_factory, **RAIN)
    held = {key: MetricConfig(key, deadband=1e9) for key in ("rate", "count", "total")}
    sink = Sink()
    scheduler = Scheduler([SensorPlan("Rain", 0.05, lambda: counter, held)], sink,
                          resume={"Rain": {"total": 10.0}})
    scheduler.start()
    try:
        first = sink.wait_for(1)[0]
        assert first.values and first.resume == {"total": 10.0}       # the first one is sent
        pulses(pin, [5.0, 6.0])
        with sink.cond:
            assert sink.cond.wait_for(lambda: any(s.resume == {"total": 10.0 + 2 * 0.2794}
                                                  for s in sink.samples), timeout=15.0)
            kept = next(s for s in sink.samples if s.resume == {"total": 10.0 + 2 * 0.2794})
        assert kept.values == {}                                       # held back, total kept
    finally:
        scheduler.stop()


def test_a_counter_removed_and_added_again_continues_its_total(mock_factory) -> None:
    """A reload that drops a pulse counter and a later one that brings it back: it continues from
    what it counted, not from the total stored when the bridge started."""
    from pibridge.bridge.scheduler import Scheduler, SensorPlan

    pin = mock_factory.pin(PIN, pin_class=PulsePin)
    built: list[PulseCounter] = []

    def build() -> PulseCounter:
        if built:
            built[-1].close()
        built.append(PulseCounter(pin_factory=mock_factory, **RAIN))
        return built[-1]

    sink = Sink()
    scheduler = Scheduler([SensorPlan("Rain", 0.05, build)], sink, resume={"Rain": {"total": 100.0}})
    scheduler.start()
    try:
        sink.wait_for(1)
        pulses(pin, [5.0, 6.0, 7.0])
        counted = 100.0 + 3 * 0.2794
        with sink.cond:
            assert sink.cond.wait_for(lambda: any(s.resume == {"total": counted} for s in sink.samples),
                                      timeout=15.0)
        scheduler.remove("Rain")
        scheduler.add(SensorPlan("Rain", 0.05, build))
        count = len(sink.samples)
        again = sink.wait_for(count + 1)[-1]
        assert again.resume == {"total": counted}
    finally:
        scheduler.stop()
