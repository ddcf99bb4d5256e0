"""Per-metric processing (`pibridge.bridge.processing`): calibration, range, median, deadband,
enabled, and the agent's view of a sensor after the profile's overrides."""

from __future__ import annotations

import pytest

from pibridge.bridge.model import MetricSpec
from pibridge.bridge.processing import SampleProcessor, calibrate, metric_spec, sensor_spec
from pibridge.drivers.base import Metric
from pibridge.profile import Calibration, MetricConfig
from pibridge.protocol import ValueType

TEMP = Metric("temperature", "Temperature", unit="SI.Temperature.CELSIUS")
HUM = Metric("humidity", "Humidity", unit="NoSI.Dimensionless.PERCENT")
COUNT = Metric("count", "Count", value_type=ValueType.INTEGER, annotation="pulses")
DOOR = Metric("state", "State", value_type=ValueType.BOOL, annotation="open")


def processor(*metrics: Metric, **configs: MetricConfig) -> SampleProcessor:
    return SampleProcessor(sensor_spec("s", metrics, configs), configs)


@pytest.mark.parametrize(("calibration", "raw", "expected"), [
    (Calibration(offset=-0.5), 20.0, 19.5),
    (Calibration(scale=2.0, offset=1.0), 3.0, 7.0),
    (Calibration(points=((0.0, 0.0), (10.0, 20.0), (20.0, 30.0))), 5.0, 10.0),
    (Calibration(points=((0.0, 0.0), (10.0, 20.0), (20.0, 30.0))), 15.0, 25.0),
    (Calibration(points=((0.0, 0.0), (10.0, 20.0), (20.0, 30.0))), 10.0, 20.0),
    (Calibration(points=((0.0, 0.0), (10.0, 20.0), (20.0, 30.0))), -5.0, -10.0),   # first segment extended
    (Calibration(points=((0.0, 0.0), (10.0, 20.0), (20.0, 30.0))), 30.0, 40.0),    # last segment extended
    (Calibration(points=((1.0, 1.5),)), 4.0, 4.5),                                 # one point: an offset
])
def test_calibration(calibration: Calibration, raw: float, expected: float) -> None:
    assert calibrate(raw, calibration) == pytest.approx(expected)


def test_valid_range_is_checked_on_the_calibrated_value_and_counted() -> None:
    p = processor(TEMP, HUM, temperature=MetricConfig("temperature", calibration=Calibration(offset=10.0),
                                                     valid_range=(-40.0, 60.0)))
    assert p.process({"temperature": 45.0, "humidity": 50.0}, 0.0) == {"temperature": 55.0, "humidity": 50.0}
    assert p.process({"temperature": 55.0, "humidity": 51.0}, 1.0) == {"humidity": 51.0}
    assert p.counters.out_of_range == 1


VOLT = Metric("voltage", "Voltage", unit="SI.ElectricPotential.VOLT")
#: hardware.md §10.7: a capacitive probe reads 2.80 V in dry air (0 %) and 1.30 V in water (100 %)
SOIL = MetricConfig("voltage", calibration=Calibration(points=((1.30, 100.0), (2.80, 0.0))),
                    valid_range=(-50.0, 150.0), clamp=(0.0, 100.0), unit="NoSI.Dimensionless.PERCENT")


@pytest.mark.parametrize(("volts", "percent"), [
    (2.05, 50.0),     # hardware.md §10.7's vector
    (2.80, 0.0), (1.30, 100.0),
    (2.95, 0.0),      # drier than the dry-air point: -10 % clamped, not left out
    (1.20, 100.0),    # wetter than the water point: 106.7 % clamped
])
def test_soil_moisture_recipe_points_and_clamp(volts: float, percent: float) -> None:
    p = processor(VOLT, voltage=SOIL)
    assert p.process({"voltage": volts}, 0.0) == {"voltage": pytest.approx(percent)}
    assert p.counters.out_of_range == 0


def test_clamp_comes_after_valid_range_and_before_the_median() -> None:
    p = processor(VOLT, voltage=MetricConfig("voltage", calibration=SOIL.calibration,
                                             valid_range=(-50.0, 150.0), clamp=(0.0, 100.0), median=3))
    # 0.05 V (a broken wire): 183 % is beyond valid_range: left out, counted, not clamped to 100
    assert p.process({"voltage": 0.05}, 0.0) == {}
    assert p.counters.out_of_range == 1
    outputs = [p.process({"voltage": v}, float(i))["voltage"] for i, v in enumerate([2.95, 2.05, 1.0])]
    # clamped values enter the median: 0 | median(0, 50) = 25 | median(0, 50, 100) = 50
    assert outputs == [0.0, pytest.approx(25.0), pytest.approx(50.0)]
    rounded = processor(COUNT, count=MetricConfig("count", clamp=(0.0, 10.0)))
    assert rounded.process({"count": 12}, 0.0) == {"count": 10}


def test_median_of_the_last_n_valid_values() -> None:
    p = processor(TEMP, temperature=MetricConfig("temperature", median=3, valid_range=(0.0, 100.0)))
    outputs = [p.process({"temperature": v}, float(i)).get("temperature")
               for i, v in enumerate([10.0, 30.0, 500.0, 20.0, 90.0, 21.0])]
    # 10 | median(10,30)=20 | 500 left out | median(10,30,20)=20 | median(30,20,90)=30 | median(20,90,21)=21
    assert outputs == [10.0, 20.0, None, 20.0, 30.0, 21.0]


def test_integer_metrics_stay_whole() -> None:
    p = processor(COUNT, count=MetricConfig("count", median=2, calibration=Calibration(scale=1.5)))
    assert p.process({"count": 3}, 0.0) == {"count": 4}       # 4.5 rounds to even
    out = p.process({"count": 5}, 1.0)["count"]               # window 4.5, 7.5 → low median 4.5 → 4
    assert isinstance(out, int)


def test_deadband_with_max_silence() -> None:
    p = processor(TEMP, temperature=MetricConfig("temperature", deadband=0.5, max_silence_s=60.0))
    assert p.process({"temperature": 20.0}, 0.0) == {"temperature": 20.0}
    assert p.process({"temperature": 20.4}, 10.0) == {}         # moved 0.4 < 0.5
    assert p.process({"temperature": 19.6}, 20.0) == {}         # 0.4 from the last *sent* 20.0
    assert p.process({"temperature": 20.5}, 30.0) == {"temperature": 20.5}
    assert p.process({"temperature": 20.6}, 90.5) == {"temperature": 20.6}  # silent 60 s: sent anyway
    assert p.counters.deadband == 2


def test_deadband_on_a_boolean_means_unchanged_and_an_event_always_passes() -> None:
    p = processor(DOOR, state=MetricConfig("state", deadband=0.0))
    assert p.process({"state": False}, 0.0) == {"state": False}
    assert p.process({"state": False}, 1.0) == {}
    assert p.process({"state": False}, 2.0, always=True) == {"state": False}
    assert p.process({"state": True}, 3.0) == {"state": True}


def test_disabled_metric_is_neither_sent_nor_registered_and_an_all_left_out_sample_is_empty() -> None:
    configs = {"humidity": MetricConfig("humidity", enabled=False),
               "temperature": MetricConfig("temperature", valid_range=(0.0, 50.0))}
    spec = sensor_spec("Air", (TEMP, HUM), configs)
    assert [m.key for m in spec.metrics] == ["temperature"]
    p = SampleProcessor(spec, configs)
    assert p.process({"temperature": 20.0, "humidity": 50.0}, 0.0) == {"temperature": 20.0}
    assert p.process({"temperature": 99.0, "humidity": 50.0}, 1.0) == {}


def test_metric_spec_overrides() -> None:
    assert metric_spec(TEMP, None) == MetricSpec("temperature", "Temperature", unit="SI.Temperature.CELSIUS")
    assert metric_spec(TEMP, MetricConfig("temperature", name="Air temp", unit="SI.Pressure.PASCAL")) \
        == MetricSpec("temperature", "Air temp", unit="SI.Pressure.PASCAL")
    assert metric_spec(HUM, MetricConfig("humidity", value_type="double", annotation="%")) \
        == MetricSpec("humidity", "Humidity", value_type="double", annotation="%")
    assert metric_spec(DOOR, MetricConfig("state", annotation="ajar")) \
        == MetricSpec("state", "State", value_type="bool", annotation="ajar")


def test_median_is_the_statistics_modules() -> None:
    import random
    import statistics

    from pibridge.bridge.processing import median

    rng = random.Random(3)
    for n in range(1, 12):
        for _ in range(50):
            values = [rng.choice([rng.uniform(-100, 100), float(rng.randrange(-5, 5))]) for _ in range(n)]
            assert median(values) == statistics.median(values)
            assert median(values, low=True) == statistics.median_low(values)
