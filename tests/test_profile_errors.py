"""Broken profiles: every problem at once, each exactly ``file:line: sensor "X" → key: message``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pibridge.drivers import registry, serialport
from pibridge.drivers.ds18b20 import DS18B20
from pibridge.profile import ProfileError, load_profile

#: the driver's own figure (its conversion time and bus time), not a copy of it
DS18B20_READ_MS = 1000 * DS18B20.timing_for(DS18B20.check_options({"device_id": "28-000005abb69d"})
                                             ).read_time_s

KNOWN_DRIVERS = ", ".join(registry.names())  # every driver found, sorted (derived: chips get added)
SENSOR_KEYS = "name, driver, interval, options, metrics, pressure_from"
METRIC_KEYS = ("name, enabled, offset, scale, points, median, valid_range, clamp, deadband, max_silence, "
               "unit, type, annotation")

#: a BME280 named Air: the pressure source of the pressure_from cases
AIR = '[[sensor]]\nname = "Air"\ndriver = "bme280"\n'

#: a valid sensor, appended where a case is about [agent] or [bridge] (a profile needs a sensor)
ONE_SENSOR = '[[sensor]]\nname = "SoC"\ndriver = "cpu_temperature"\n'


#: (id, profile text, expected lines after "<path>:")
CASES: list[tuple[str, str, list[str]]] = [
    ("syntax error", '[agent]\nhost = "h"\nport = = 3\n',
     ["3: TOML syntax error: Invalid value (column 8)"]),
    ("unknown top-level table", '[agnet]\nhost = "h"\n' + ONE_SENSOR,
     ["1: agnet: unknown table; did you mean [agent]? (a profile has [agent], [bridge], [[sensor]])"]),
    ("unknown top-level key", 'interval = 5\n' + ONE_SENSOR,
     ["1: interval: unknown key (a profile has [agent], [bridge], [[sensor]])"]),
    ("[sensor] instead of [[sensor]]", '[sensor]\nname = "Air"\n',
     ["1: sensor: [sensor] must be [[sensor]] (double brackets: one table per sensor)"]),
    ("unknown sensor key", '[[sensor]]\nname = "Air"\ndriver = "bme280"\nintervall = 5\n',
     [f'4: sensor "Air" → intervall: unknown key; did you mean interval? (known: {SENSOR_KEYS})']),
    ("missing name and driver", '[[sensor]]\ninterval = 5\n',
     ["1: sensor #1: name is missing (the sensor's name at the agent)",
      f"1: sensor #1: driver is missing (known drivers: {KNOWN_DRIVERS})"]),
    ("name too short", '[[sensor]]\nname = "A"\ndriver = "cpu_temperature"\n',
     ['2: sensor #1 → name: must be 2 to 64 printable characters, not "A"']),
    ("unknown driver", '[[sensor]]\nname = "Air"\ndriver = "bme2800"\n',
     [f'3: sensor "Air" → driver: unknown driver "bme2800"; did you mean bme280? (known: {KNOWN_DRIVERS})']),
    ("wrong interval type", '[[sensor]]\nname = "Air"\ndriver = "bme280"\ninterval = true\n',
     ['4: sensor "Air" → interval: must be seconds (30, 0.5) or a duration such as "500ms", "30s", '
      '"5m", "1h", "1d", not true']),
    ("interval in words", '[[sensor]]\nname = "Air"\ndriver = "bme280"\ninterval = "5 min"\n',
     ['4: sensor "Air" → interval: must be seconds (30, 0.5) or a duration such as "500ms", "30s", '
      '"5m", "1h", "1d", not "5 min"']),
    ("zero interval", '[[sensor]]\nname = "Air"\ndriver = "bme280"\ninterval = 0\n',
     ['4: sensor "Air" → interval: must be longer than zero, not 0']),
    ("nan interval", '[[sensor]]\nname = "Air"\ndriver = "bme280"\ninterval = nan\n',
     ['4: sensor "Air" → interval: must be seconds (30, 0.5) or a duration such as "500ms", "30s", '
      '"5m", "1h", "1d", not nan']),
    ("interval below the DHT22's spacing", '[[sensor]]\nname = "Canopy"\ndriver = "dht22"\ninterval = "1s"\n'
     'options = { pin = 17 }\n',
     ['4: sensor "Canopy" → interval: 1 s is below the 2.1 s a dht22 needs between two readings']),
    ("interval shorter than one reading", '[[sensor]]\nname = "Soil"\ndriver = "ds18b20"\n'
     'interval = "500ms"\noptions = { device_id = "28-000005abb69d" }\n',
     [f'4: sensor "Soil" → interval: 500 ms is shorter than one ds18b20 reading ({DS18B20_READ_MS:g} ms)']),
    ("unknown and invalid options", '[[sensor]]\nname = "Canopy"\ndriver = "dht22"\n[sensor.options]\n'
     'pn = 17\nread_twice = "maybe"\n',
     ['4: sensor "Canopy" → options.pin: option pin is required (data pin (BCM))',
      '5: sensor "Canopy" → options.pn: unknown option of dht22; did you mean pin? '
      '(known: pin, use_pulseio, read_twice)',
      "6: sensor \"Canopy\" → options.read_twice: 'maybe' is not a valid bool"]),
    ("options not a table", '[[sensor]]\nname = "Air"\ndriver = "bme280"\noptions = 5\n',
     ['4: sensor "Air" → options: must be a table of the driver\'s options, not 5']),
    ("driver's cross-option rule", '[[sensor]]\nname = "Air"\ndriver = "bme280"\n'
     'options = { osrs_h = 0, metrics = "humidity" }\n',
     ['4: sensor "Air" → options.osrs_h: osrs_h=0 skips humidity, which option metrics asks for']),
    ("metric skipped by oversampling 0", '[[sensor]]\nname = "Air"\ndriver = "bme280"\n[sensor.options]\n'
     'osrs_p = 0\n[sensor.metrics.temperature]\noffset = -0.4\n[sensor.metrics.pressure]\ndeadband = 20\n',
     ['8: sensor "Air" → metrics.pressure: this bme280 does not report pressure with these options (it '
      'reports temperature, humidity)']),
    ("metrics outside the metrics option", '[[sensor]]\nname = "Air"\ndriver = "bme280"\n'
     'options = { metrics = "temperature" }\nmetrics.humidity.median = 3\n'
     'metrics."pressure" = { name = "Air pressure" }\n',
     ['5: sensor "Air" → metrics.humidity: this bme280 does not report humidity with these options (it '
      'reports temperature)',
      '6: sensor "Air" → metrics.pressure: this bme280 does not report pressure with these options (it '
      'reports temperature)']),
    ("every reported metric disabled", '[[sensor]]\nname = "Air"\ndriver = "bme280"\n'
     'options.metrics = "temperature"\n[sensor.metrics.temperature]\nenabled = false\n',
     ['5: sensor "Air" → metrics: every metric is disabled (enabled = false): the sensor would send '
      'nothing']),
    ("invalid options: metrics checked against the driver only", '[[sensor]]\nname = "Air"\n'
     'driver = "bme280"\noptions = { osrs_p = 3 }\n[sensor.metrics.pressure]\nmedian = 0\n'
     '[sensor.metrics.pressur]\n',
     ['4: sensor "Air" → options.osrs_p: 3 is not one of 0, 1, 2, 4, 8, 16',
      '6: sensor "Air" → metrics.pressure.median: must be between 1 and 100, not 0',
      '7: sensor "Air" → metrics.pressur: unknown metric of bme280; did you mean pressure? (known: '
      'temperature, humidity, pressure)']),
    ("door annotation too long", '[[sensor]]\nname = "Door"\ndriver = "digital_input"\n'
     f'options = {{ pin = 27, annotation = "{"x" * 65}" }}\n',
     ['4: sensor "Door" → options.annotation: at most 64 characters, not 65']),
    ("unknown metric", '[[sensor]]\nname = "Light"\ndriver = "bh1750"\n[sensor.metrics.lux]\nname = "Lux"\n',
     ['4: sensor "Light" → metrics.lux: unknown metric of bh1750 (known: illuminance)']),
    ("unknown metric key", '[[sensor]]\nname = "Light"\ndriver = "bh1750"\n[sensor.metrics.illuminance]\n'
     'ofset = 3\n',
     [f'5: sensor "Light" → metrics.illuminance.ofset: unknown key; did you mean offset? '
      f'(known: {METRIC_KEYS})']),
    ("duplicate names", '[[sensor]]\nname = "Air"\ndriver = "bme280"\n\n[[sensor]]\nname = "Air"\n'
     'driver = "cpu_temperature"\n',
     ['6: sensor "Air" → name: sensor "Air" on line 1 has this name already (names must be unique)']),
    ("points not monotonic", '[[sensor]]\nname = "Soil"\ndriver = "mcp3008"\n[sensor.metrics.voltage]\n'
     'points = [\n  [2.8, 0],\n  [1.2, 100],\n  [2.0, 50],\n]\n',
     ['8: sensor "Soil" → metrics.voltage.points[2]: raw values must rise (or fall) strictly from pair to '
      'pair: 2 after 1.2']),
    ("points and offset", '[[sensor]]\nname = "Soil"\ndriver = "mcp3008"\n[sensor.metrics.voltage]\n'
     'offset = 1\npoints = [[1.2, 100], [2.8, 0]]\n',
     ['6: sensor "Soil" → metrics.voltage.points: give either points or offset/scale, not both']),
    ("one point", '[[sensor]]\nname = "Soil"\ndriver = "mcp3008"\n[sensor.metrics.voltage]\n'
     'points = [[1.2, 100]]\n',
     ['5: sensor "Soil" → metrics.voltage.points: must be at least two [raw, true] pairs, not [[1.2, 100]]']),
    ("scale zero and bad range", '[[sensor]]\nname = "Air"\ndriver = "bme280"\n[sensor.metrics.temperature]\n'
     'scale = 0\nvalid_range = [85, -40]\nmedian = 0\ndeadband = -1\n',
     ['5: sensor "Air" → metrics.temperature.scale: must not be 0 (every reading would become the offset)',
      '6: sensor "Air" → metrics.temperature.valid_range: the lowest value 85 must be below the highest -40',
      '7: sensor "Air" → metrics.temperature.median: must be between 1 and 100, not 0',
      '8: sensor "Air" → metrics.temperature.deadband: must be 0 or more, not -1']),
    ("unit not the agent's", '[[sensor]]\nname = "Soil"\ndriver = "mcp3008"\n[sensor.metrics.voltage]\n'
     'unit = "NoSI.Dimensionless.PERCENTS"\n',
     ['5: sensor "Soil" → metrics.voltage.unit: "NoSI.Dimensionless.PERCENTS" is not one of the agent\'s '
      'units nor a unit pibridge knows; did you mean NoSI.Dimensionless.PERCENT? (a unit such as "°C", "%", '
      '"hPa", "ppm", "lx", an agent unit name, or type = "double" with annotation = "…" for any other)']),
    ("unit and type, annotation alone", '[[sensor]]\nname = "Soil"\ndriver = "mcp3008"\n'
     '[sensor.metrics.voltage]\nunit = "SI.ElectricPotential.VOLT"\ntype = "boolean"\n'
     '[sensor.metrics.fraction]\nannotation = "%"\n',
     ['6: sensor "Soil" → metrics.voltage.type: must be "bool" or "string" or "double" or "integer", '
      'not "boolean"',
      '6: sensor "Soil" → metrics.voltage.type: give either unit or type (+ annotation), not both',
      '8: sensor "Soil" → metrics.fraction.annotation: goes with type (a custom type\'s annotation); with '
      'unit or the driver\'s own type, leave it out']),
    ("filters on a bool metric", '[[sensor]]\nname = "Door"\ndriver = "digital_input"\noptions = {pin = 27}\n'
     'metrics.state.offset = 1\nmetrics.state.clamp = [0, 1]\n',
     ['5: sensor "Door" → metrics.state.offset: state is a bool metric: offset applies to numbers',
      '6: sensor "Door" → metrics.state.clamp: state is a bool metric: clamp applies to numbers']),
    ("max_silence without deadband", '[[sensor]]\nname = "Light"\ndriver = "bh1750"\n'
     'metrics.illuminance.max_silence = "10m"\n',
     ['4: sensor "Light" → metrics.illuminance.max_silence: has no effect without deadband (without one '
      'every reading is sent)']),
    ("every metric disabled", '[[sensor]]\nname = "Light"\ndriver = "bh1750"\n'
     'metrics.illuminance.enabled = false\n',
     ['4: sensor "Light" → metrics: every metric is disabled (enabled = false): the sensor would send '
      'nothing']),
    ("two sensors on one GPIO", '[[sensor]]\nname = "Door"\ndriver = "digital_input"\noptions.pin = 27\n'
     '[[sensor]]\nname = "Window"\ndriver = "digital_input"\noptions.pin = "GPIO27"\n',
     ['8: sensor "Window" → options.pin: GPIO 27 is already used by sensor "Door"']),
    ("GPIO sensor on the 1-Wire pin", '[[sensor]]\nname = "Soil"\ndriver = "ds18b20"\n'
     'options.device_id = "28-000005abb69d"\n[[sensor]]\nname = "Canopy"\ndriver = "dht22"\n'
     'interval = "30s"\n[sensor.options]\npin = 4\n',
     ['10: sensor "Canopy" → options.pin: GPIO 4 is the 1-Wire pin']),
    ("1-Wire moved to another pin", '[bridge]\nw1_gpio = 22\n[[sensor]]\nname = "Soil"\ndriver = "ds18b20"\n'
     'options.device_id = "28-000005abb69d"\n[[sensor]]\nname = "Canopy"\ndriver = "dht22"\n'
     'options.pin = 22\n[[sensor]]\nname = "Door"\ndriver = "digital_input"\noptions.pin = 4\n',
     ['10: sensor "Canopy" → options.pin: GPIO 22 is the 1-Wire pin']),
    ("GPIO sensor on I2C and SPI pins", '[[sensor]]\nname = "Air"\ndriver = "bme280"\n[[sensor]]\n'
     'name = "Soil"\ndriver = "mcp3008"\n[[sensor]]\nname = "Door"\ndriver = "digital_input"\n'
     'options.pin = 3\n[[sensor]]\nname = "Window"\ndriver = "digital_input"\noptions.pin = 9\n',
     ['10: sensor "Door" → options.pin: GPIO 3 is a pin of I2C bus 1 (GPIO 2 and GPIO 3), which sensor '
      '"Air" uses',
      '14: sensor "Window" → options.pin: GPIO 9 is a pin of SPI0 (GPIO 7–11), which sensor "Soil" uses']),
    ("two I2C sensors on one address", '[[sensor]]\nname = "Air"\ndriver = "bme280"\n[[sensor]]\n'
     'name = "Air 2"\ndriver = "bme280"\noptions = { address = 0x76 }\n',
     ['7: sensor "Air 2" → options.address: I2C address 0x76 on bus 1 is already used by sensor "Air"']),
    ("one address on two buses is fine, one probe twice is not", '[[sensor]]\nname = "Air"\n'
     'driver = "bme280"\n[[sensor]]\nname = "Air 2"\ndriver = "bme280"\noptions = { i2c_bus = 3 }\n'
     '[[sensor]]\nname = "Soil 1"\ndriver = "ds18b20"\noptions.device_id = "28-000005abb69d"\n'
     '[[sensor]]\nname = "Soil 2"\ndriver = "ds18b20"\noptions.device_id = "28-000005ABB69D"\n',
     ['15: sensor "Soil 2" → options.device_id: 1-Wire probe 28-000005abb69d is already used by sensor '
      '"Soil 1"']),
    ("ADS1x15 options: a range, a rate of the other chip, channel and pair at once",
     '[[sensor]]\nname = "Soil"\ndriver = "ads1115"\n[sensor.options]\nfull_scale = 5\ndata_rate = 1600\n'
     '[[sensor]]\nname = "Bridge"\ndriver = "ads1015"\n'
     'options = { address = 0x49, channel = 1, differential = "0-1" }\n',
     ['5: sensor "Soil" → options.full_scale: 5 is not one of 6.144, 4.096, 2.048, 1.024, 0.512, 0.256',
      '6: sensor "Soil" → options.data_rate: 1600 is not one of 8, 16, 32, 64, 128, 250, 475, 860',
      '10: sensor "Bridge" → options.differential: give either channel (single-ended) or differential '
      '(a pair), not both']),
    ("one ADS1115 read by several sensors: each input once, no other chip at its address",
     '[[sensor]]\nname = "Soil 0"\ndriver = "ads1115"\n[[sensor]]\nname = "Soil 1"\ndriver = "ads1115"\n'
     'options.channel = 1\n[[sensor]]\nname = "Load cell"\ndriver = "ads1115"\n'
     'options.differential = "0-1"\n[[sensor]]\nname = "Pump"\ndriver = "ina219"\noptions.address = 0x48\n'
     '[[sensor]]\nname = "Other ADC"\ndriver = "ads1015"\noptions = { address = 0x48, channel = 3 }\n',
     ['11: sensor "Load cell" → options.differential: AIN0 of the chip at 0x48 on bus 1 is already read by '
      'sensor "Soil 0"',
      '11: sensor "Load cell" → options.differential: AIN1 of the chip at 0x48 on bus 1 is already read by '
      'sensor "Soil 1" (a pair\'s negative input is shared only with other pairs\' negative inputs)',
      '15: sensor "Pump" → options.address: I2C address 0x48 on bus 1 is already used by sensor "Soil 0"',
      '19: sensor "Other ADC" → options.address: I2C address 0x48 on bus 1 is already used by sensor '
      '"Soil 0"']),
    ("ADS1x15 pairs share their negative input (AIN3 of 0-3, 1-3, 2-3), nothing else",
     '[[sensor]]\nname = "Pair A"\ndriver = "ads1115"\noptions = { address = 0x49, differential = "0-3" }\n'
     '[[sensor]]\nname = "Pair B"\ndriver = "ads1115"\noptions = { address = 0x49, differential = "1-3" }\n'
     '[[sensor]]\nname = "Pair C"\ndriver = "ads1115"\noptions = { address = 0x49, differential = "2-3" }\n'
     '[[sensor]]\nname = "Probe 3"\ndriver = "ads1115"\noptions = { address = 0x49, channel = 3 }\n'
     '[[sensor]]\nname = "Bridge"\ndriver = "ads1015"\noptions = { address = 0x4a, differential = "0-1" }\n'
     '[[sensor]]\nname = "Tank"\ndriver = "ads1015"\noptions = { address = 0x4a, differential = "1-3" }\n'
     '[[sensor]]\nname = "Bridge 2"\ndriver = "ads1015"\noptions = { address = 0x4a, differential = "0-1" }\n'
     '[[sensor]]\nname = "Probe B3"\ndriver = "ads1115"\noptions = { address = 0x4b, channel = 3 }\n'
     '[[sensor]]\nname = "Late pair"\ndriver = "ads1115"\n'
     'options = { address = 0x4b, differential = "2-3" }\n',
     ['16: sensor "Probe 3" → options.channel: AIN3 of the chip at 0x49 on bus 1 is already read by sensor '
      '"Pair A" (a pair\'s negative input is shared only with other pairs\' negative inputs)',
      '24: sensor "Tank" → options.differential: AIN1 of the chip at 0x4a on bus 1 is already read by sensor '
      '"Bridge" (a pair\'s negative input is shared only with other pairs\' negative inputs)',
      '28: sensor "Bridge 2" → options.differential: AIN0 of the chip at 0x4a on bus 1 is already read by '
      'sensor "Bridge"',
      '36: sensor "Late pair" → options.differential: AIN3 of the chip at 0x4b on bus 1 is already read by '
      'sensor "Probe B3" (a pair\'s negative input is shared only with other pairs\' negative inputs)']),
    ("two sensors on one serial port", '[[sensor]]\nname = "CO2"\ndriver = "mhz19"\n[[sensor]]\n'
     'name = "Dust"\ndriver = "pms5003"\noptions.port = "/dev/serial0"\n[[sensor]]\nname = "Dust 2"\n'
     'driver = "pms5003"\noptions.port = "/dev/ttyUSB0"\n[[sensor]]\nname = "CO2 2"\ndriver = "mhz19"\n'
     'options.port = "/dev/./ttyUSB0"\n',
     ['7: sensor "Dust" → options.port: serial port /dev/serial0 is already used by sensor "CO2" '
      '(one sensor per port)',
      '15: sensor "CO2 2" → options.port: serial port /dev/./ttyUSB0 is already used by sensor "Dust 2" '
      '(one sensor per port)']),
    ("the header UART under its three names, checked off a Pi", '[[sensor]]\nname = "CO2"\ndriver = "mhz19"\n'
     '[[sensor]]\nname = "Dust"\ndriver = "pms5003"\noptions.port = "/dev/ttyS0"\n[[sensor]]\n'
     'name = "CO2 2"\ndriver = "mhz19"\noptions.port = "/dev/ttyAMA0"\n[[sensor]]\nname = "Dust 2"\n'
     'driver = "pms5003"\noptions.port = "/dev/ttyUSB0"\n',
     ['7: sensor "Dust" → options.port: serial port /dev/ttyS0 may be the same header UART (GPIO 14/15) as '
      '/dev/serial0, which sensor "CO2" uses (serial0 is ttyS0 or ttyAMA0, depending on the Pi; one sensor '
      'per port)',
      '11: sensor "CO2 2" → options.port: serial port /dev/ttyAMA0 may be the same header UART (GPIO 14/15) '
      'as /dev/serial0, which sensor "CO2" uses (serial0 is ttyS0 or ttyAMA0, depending on the Pi; one '
      'sensor per port)']),
    ("GPIO sensors on the pins of ttyS0 and ttyAMA0", '[[sensor]]\nname = "CO2"\ndriver = "mhz19"\n'
     'options.port = "/dev/ttyAMA0"\n[[sensor]]\nname = "Door"\ndriver = "digital_input"\noptions.pin = 14\n',
     ['8: sensor "Door" → options.pin: GPIO 14 is a pin of the serial port /dev/ttyAMA0 (GPIO 14 and 15), '
      'which sensor "CO2" uses']),
    ("GPIO sensor on the header UART's pins", '[[sensor]]\nname = "CO2"\ndriver = "mhz19"\n[[sensor]]\n'
     'name = "Door"\ndriver = "digital_input"\noptions.pin = 15\n',
     ['7: sensor "Door" → options.pin: GPIO 15 is a pin of the serial port /dev/serial0 (GPIO 14 and 15), '
      'which sensor "CO2" uses']),
    ("PMS5003 SET pin shared, passive interval below the fan's warm-up", '[[sensor]]\nname = "Dust"\n'
     'driver = "pms5003"\ninterval = "10s"\noptions = { mode = "passive", set_pin = 22 }\n[[sensor]]\n'
     'name = "Door"\ndriver = "digital_input"\noptions.pin = 22\n',
     ['4: sensor "Dust" → interval: 10 s is below the 30.1333 s a pms5003 needs between two readings',
      '9: sensor "Door" → options.pin: GPIO 22 is already used by sensor "Dust"']),
    ("serial option values", '[[sensor]]\nname = "CO2"\ndriver = "mhz19"\n[sensor.options]\n'
     'range = 3000\nself_calibration = "sometimes"\nport = 0\n[[sensor]]\nname = "Dust"\n'
     'driver = "pms5003"\noptions = { mode = "sleepy", counts = 1.5 }\n[[sensor]]\nname = "Dust 2"\n'
     'driver = "pms5003"\noptions.port = "ttyUSB0"\n',
     ['5: sensor "CO2" → options.range: 3000 is not one of 2000, 5000, 10000',
      "6: sensor \"CO2\" → options.self_calibration: 'sometimes' is not a valid bool",
      '7: sensor "CO2" → options.port: 0 is not a valid str',
      "11: sensor \"Dust\" → options.mode: 'sleepy' is not one of 'active', 'passive'",
      '11: sensor "Dust" → options.counts: 1.5 is not a valid bool',
      "15: sensor \"Dust 2\" → options.port: must be a device path such as /dev/serial0 or /dev/ttyUSB0, "
      "not 'ttyUSB0'"]),
    ("bridge values", '[bridge]\nstate_dir = ""\nqueue_max_samples = 0\nqueue_max_age = "-1d"\n'
     'durability = "disk"\ninventory_check = "1s"\nw1_gpio = 28\nlog_format = "xml"\nlog_level = 1\n'
     + ONE_SENSOR,
     ['2: bridge.state_dir: must be a non-empty string, not ""',
      '3: bridge.queue_max_samples: must be between 1 and 100000000, not 0',
      '4: bridge.queue_max_age: must be seconds (30, 0.5) or a duration such as "500ms", "30s", "5m", '
      '"1h", "1d", not "-1d"',
      '5: bridge.durability: must be "process" or "power", not "disk"',
      '6: bridge.inventory_check: must be at least 10 s, not "1s"',
      '7: bridge.w1_gpio: must be between 0 and 27, not 28',
      '8: bridge.log_format: must be "text" or "json", not "xml"',
      '9: bridge.log_level: unknown key (known: state_dir, queue_max_samples, queue_max_age, durability, '
      'inventory_check, w1_gpio, log_format, http, http_token_file)']),
    ("web page address not HOST:PORT", '[bridge]\nhttp = "8080"\n' + ONE_SENSOR,
     ['2: bridge.http: must be HOST:PORT such as "127.0.0.1:8080", not "8080"']),
    ("web page port out of range",
     '[bridge]\nhttp = "127.0.0.1:80800"\nhttp_token_file = 7\n' + ONE_SENSOR,
     ['2: bridge.http: the port must be a number 0..65535, not "127.0.0.1:80800"',
      '3: bridge.http_token_file: must be a non-empty string, not 7']),
    ("web page for other machines without a token",
     '[bridge]\nstate_dir = "s"\nhttp = "0.0.0.0:8080"\n' + ONE_SENSOR,
     ['3: bridge.http: 0.0.0.0:8080 is reachable from other machines: set [bridge] http_token_file (a file '
      'holding the token every client must show), or bind to 127.0.0.1']),
    ("web page address not text", '[bridge]\nhttp = 8080\n' + ONE_SENSOR,
     ['2: bridge.http: must be a non-empty string, not 8080']),
    ("agent values", '[agent]\nport = "18884"\nhots = "h"\nprovisioning = "override"\n' + ONE_SENSOR,
     ['2: agent.port: must be a port number (integer), not "18884"',
      '3: agent.hots: unknown key; did you mean host? (known: host, port, provision_port, ca_file, '
      'cert_folder, client_name, provisioning)',
      '4: agent.provisioning: "override" is not a profile setting (it is an action: run `pibridge provision '
      '--override`); use "keep" or "smart"']),
    # -- CO₂ sensors and pressure_from (a CO₂ sensor's pressure taken from another sensor) --
    ("pressure_from names no sensor", AIR + '[[sensor]]\nname = "CO2"\ndriver = "scd4x"\ninterval = 30\n'
     'pressure_from = "Ar"\n',
     ['8: sensor "CO2" → pressure_from: no sensor named "Ar" in this profile; did you mean "Air"? '
      '(sensors: "Air", "CO2")']),
    ("pressure_from itself", '[[sensor]]\nname = "CO2"\ndriver = "scd30"\npressure_from = "CO2"\n',
     ['4: sensor "CO2" → pressure_from: a sensor cannot take its pressure from itself']),
    ("pressure_from a sensor without pressure", AIR + 'options = { osrs_p = 0 }\n[[sensor]]\n'
     'name = "Canopy"\ndriver = "dht22"\noptions = { pin = 17 }\n[[sensor]]\nname = "CO2"\ndriver = "scd4x"\n'
     'interval = 30\n'
     'pressure_from = "Air"\n[[sensor]]\nname = "CO2 bench"\ndriver = "scd30"\npressure_from = "Canopy"\n',
     ['13: sensor "CO2" → pressure_from: sensor "Air" (bme280) does not report pressure in Pa with its '
      'options (it reports temperature, humidity)',
      '17: sensor "CO2 bench" → pressure_from: sensor "Canopy" (dht22) does not report pressure in Pa with '
      'its options (it reports temperature, humidity)']),
    ("pressure_from and ambient_pressure", AIR + '[[sensor]]\nname = "CO2"\ndriver = "scd4x"\ninterval = 30\n'
     'pressure_from = "Air"\noptions = { ambient_pressure = 98000 }\n',
     ['8: sensor "CO2" → pressure_from: give pressure_from or options.ambient_pressure, not both']),
    ("pressure_from on a driver that takes none", AIR + '[[sensor]]\nname = "Soil"\ndriver = "bme280"\n'
     'options = { address = 0x77 }\npressure_from = "Air"\n',
     ['8: sensor "Soil" → pressure_from: a bme280 takes no ambient pressure (pressure_from is for drivers '
      'that compensate with it: scd30, scd4x)']),
    ("pressure_from not a name", AIR + '[[sensor]]\nname = "CO2"\ndriver = "scd4x"\ninterval = 30\n'
     'pressure_from = ["Air"]\n',
     ['8: sensor "CO2" → pressure_from: must be the name of another sensor of this profile (one that '
      "reports pressure in Pa), not ['Air']"]),
    ("CO2 options: altitude with ambient pressure, interval range, mode", '[[sensor]]\nname = "CO2"\n'
     'driver = "scd4x"\ninterval = 30\noptions = { altitude = 300, ambient_pressure = 98000 }\n[[sensor]]\n'
     'name = "CO3"\ndriver = "scd30"\noptions = { measurement_interval = 1801, i2c_bus = 3 }\n[[sensor]]\n'
     'name = "CO4"\ndriver = "scd4x"\ninterval = 60\noptions = { mode = "single-shot", i2c_bus = 4 }\n',
     ['5: sensor "CO2" → options.ambient_pressure: give altitude or ambient_pressure, not both (the chip '
      'uses the last one set)',
      '9: sensor "CO3" → options.measurement_interval: 1801 is above the maximum 1800',
      "14: sensor \"CO4\" → options.mode: 'single-shot' is not one of 'periodic', 'low_power', "
      "'single_shot'"]),
    ("CO2 interval below the chip's period", '[[sensor]]\nname = "CO2"\ndriver = "scd4x"\ninterval = 2\n'
     '[[sensor]]\nname = "CO3"\ndriver = "scd30"\ninterval = 10\noptions = { measurement_interval = 30 }\n',
     ['4: sensor "CO2" → interval: 2 s is below the 5 s a scd4x needs between two readings',
      '8: sensor "CO3" → interval: 10 s is below the 30 s a scd30 needs between two readings']),
]


@pytest.fixture(autouse=True)
def _no_serial_console(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The console check reads this machine's cmdline.txt: point it at one without a serial
    console, so the table means the same on a Pi (`test_a_port_that_is_the_serial_console` sets
    its own)."""
    cmdline = tmp_path / "cmdline.txt"
    cmdline.write_text("console=tty1 root=PARTUUID=0-02 rootwait\n")
    monkeypatch.setattr(serialport, "CMDLINE_FILES", (cmdline,))
    real_exists = serialport.device_exists   # and checked "off a Pi": the header UART's names do not resolve
    monkeypatch.setattr(serialport, "device_exists",
                        lambda path: path not in serialport.HEADER_UART_PATHS and real_exists(path))


def _write(tmp_path: Path, text: str, name: str = "greenhouse.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "expected"), [(text, expected) for _, text, expected in CASES],
                         ids=[case_id for case_id, _, _ in CASES])
def test_broken_profile_reports_exactly(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert list(caught.value.lines) == [f"{path}:{line}" for line in expected]
    assert str(caught.value) == "\n".join(caught.value.lines)


SEVERAL = '''# a greenhouse with many mistakes
[agent]
host = "localhost"
port = 70000

[bridge]
w1_gpio = 4

[[sensor]]
name = "Air"
driver = "bme280"
interval = "30s"
[sensor.options]
address = 0x76
[sensor.metrics.temperature]
offset = -0.4

[[sensor]]
name = "Soil 1"
driver = "ds18b20"
interval = "2m"
[sensor.options]
device_id = "28-000005abb69d"

[[sensor]]
name = "Canopy"
driver = "dht22"
interval = 1
[sensor.options]
pin = 4

[[sensor]]
name = "Air"
driver = "bh1750"
[sensor.metrics.iluminance]
deadband = 10
'''


def test_several_problems_in_one_file_all_reported_in_line_order(tmp_path: Path) -> None:
    path = _write(tmp_path, SEVERAL)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert list(caught.value.lines) == [
        f"{path}:4: agent.port: must be a port number between 1 and 65535, not 70000",
        f'{path}:28: sensor "Canopy" → interval: 1 s is below the 2.1 s a dht22 needs between two readings',
        f'{path}:30: sensor "Canopy" → options.pin: GPIO 4 is the 1-Wire pin',
        f'{path}:33: sensor "Air" → name: sensor "Air" on line 9 has this name already '
        "(names must be unique)",
        f'{path}:35: sensor "Air" → metrics.iluminance: unknown metric of bh1750; did you mean illuminance? '
        "(known: illuminance)",
    ]
    first = caught.value
    assert (first.line, first.key, first.problem) == (4, "agent.port",
                                                      "must be a port number between 1 and 65535, not 70000")


def test_the_first_problem_of_a_sensor_does_not_hide_the_others(tmp_path: Path) -> None:
    """A sensor with an unknown option still has its interval and pins checked."""
    path = _write(tmp_path, '[[sensor]]\nname = "Soil"\ndriver = "ds18b20"\noptions.device_id = '
                            '"28-000005abb69d"\n[[sensor]]\nname = "Canopy"\ndriver = "dht22"\ninterval = 1\n'
                            'options = { pin = 4, pn = 3 }\n')
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert [p.key for p in caught.value.problems] == ["interval", "options.pn", "options.pin"]


def _profile_with(table: str, key: str, value: str) -> str:
    """A valid profile but for ``key = value`` in ``table`` ("agent", "bridge", "sensor" or
    "metric": the BME280's temperature)."""
    if table == "metric":
        return (f'[[sensor]]\nname = "Air"\ndriver = "bme280"\n[sensor.metrics.temperature]\n'
                f"{key} = {value}\n")
    if table == "sensor":
        fields = {"name": '"Air"', "driver": '"bme280"', key: value}
        return "[[sensor]]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items())
    return f"[{table}]\n{key} = {value}\n{ONE_SENSOR}"


DURATION_FORMS = 'must be seconds (30, 0.5) or a duration such as "500ms", "30s", "5m", "1h", "1d"'
TOO_LONG = '"' + "x" * 65 + '"'
M = 'sensor "Air" → metrics.temperature'

#: every key with bad values: (table, key, value as TOML, the one expected line after "<path>:")
BAD_VALUES: list[tuple[str, str, str, str]] = [
    ("agent", "host", "5", "2: agent.host: must be a non-empty string, not 5"),
    ("agent", "host", '""', '2: agent.host: must be a non-empty string, not ""'),
    ("agent", "port", "0", "2: agent.port: must be a port number between 1 and 65535, not 0"),
    ("agent", "port", "1.5", "2: agent.port: must be a port number (integer), not 1.5"),
    ("agent", "provision_port", "-1",
     "2: agent.provision_port: must be a port number between 1 and 65535, not -1"),
    ("agent", "provision_port", "true", "2: agent.provision_port: must be a port number (integer), not true"),
    ("agent", "ca_file", "[]", "2: agent.ca_file: must be a non-empty string, not []"),
    ("agent", "cert_folder", '""', '2: agent.cert_folder: must be a non-empty string, not ""'),
    ("agent", "client_name", "5", "2: agent.client_name: must be a non-empty string, not 5"),
    ("agent", "provisioning", "1", '2: agent.provisioning: must be "keep" or "smart", not 1'),
    ("bridge", "state_dir", "5", "2: bridge.state_dir: must be a non-empty string, not 5"),
    # issue 20 §5: what only failed later (every delivery step, a RecursionError, "idna codec failed")
    ("agent", "host", r'"local\u0000host"',
     "2: agent.host: must be a host name or address, not 'local\\x00host' (a NUL or control character)"),
    ("agent", "host", '"a..b"', "2: agent.host: must be a host name or address: 'a..b' is not a valid host "
                                "name (labels of 1–63 characters between dots)"),
    ("agent", "host", '"' + "x" * 64 + '.example"', "2: agent.host: must be a host name or address: '"
     + "x" * 64 + ".example' is not a valid host name (labels of 1–63 characters between dots)"),
    ("agent", "ca_file", r'"ca\u0000.crt"', "2: agent.ca_file: must not contain a NUL byte: 'ca\\x00.crt'"),
    ("agent", "cert_folder", r'"certs\u0000"',
     "2: agent.cert_folder: must not contain a NUL byte: 'certs\\x00'"),
    ("bridge", "state_dir", r'"state\u0000"',
     "2: bridge.state_dir: must not contain a NUL byte: 'state\\x00'"),
    ("bridge", "state_dir", '"' + "d/" * 2100 + '"',
     "2: bridge.state_dir: is 4200 bytes long; a path may have at most 4095: '" + "d/" * 39 + "d'…"),
    ("bridge", "state_dir", '"' + "n" * 256 + '"',
     "2: bridge.state_dir: has a name of 256 bytes; a file name may have at most 255: '" + "n" * 79 + "'…"),
    ("bridge", "queue_max_samples", "1e9",
     "2: bridge.queue_max_samples: must be a whole number, not 1000000000.0"),
    ("bridge", "queue_max_age", '"0s"', '2: bridge.queue_max_age: must be longer than zero, not "0s"'),
    ("bridge", "inventory_check", "true", f"2: bridge.inventory_check: {DURATION_FORMS}, not true"),
    ("bridge", "w1_gpio", '"4"', '2: bridge.w1_gpio: must be a whole number, not "4"'),
    ("bridge", "log_format", "1", '2: bridge.log_format: must be "text" or "json", not 1'),
    ("bridge", "durability", "true", '2: bridge.durability: must be "process" or "power", not true'),
    ("sensor", "name", "5", "2: sensor #1 → name: must be 2 to 64 printable characters, not 5"),
    ("sensor", "name", TOO_LONG,
     f'2: sensor #1 → name: must be 2 to 64 printable characters, not "{"x" * 38}…'),
    ("sensor", "name", '"  "', '2: sensor #1 → name: must be 2 to 64 printable characters, not "  "'),
    ("sensor", "name", r'"Canopy\u001b[2J\nfake.toml:1: ok"',
     r'2: sensor #1 → name: must be 2 to 64 printable characters, '
     r'not "Canopy\u001b[2J\u000afake.toml:1: ok"'),
    ("sensor", "driver", "5", '3: sensor "Air" → driver: must be a driver\'s name, not 5'),
    ("sensor", "driver", '""', f'3: sensor "Air" → driver: unknown driver "" (known: {KNOWN_DRIVERS})'),
    ("sensor", "interval", '"1x"', f'4: sensor "Air" → interval: {DURATION_FORMS}, not "1x"'),
    ("sensor", "interval", "1e12", '4: sensor "Air" → interval: 1000000000000.0 is longer than ten years'),
    ("sensor", "options", "[]",
     '4: sensor "Air" → options: must be a table of the driver\'s options, not []'),
    ("sensor", "metrics", "5",
     '4: sensor "Air" → metrics: must be a table of [sensor.metrics.KEY] tables, not 5'),
    ("sensor", "metrics.temperature", "5",
     '4: sensor "Air" → metrics.temperature: must be a table ([sensor.metrics.temperature]), not 5'),
    ("metric", "name", '""', f'5: {M}.name: must be 2 to 64 printable characters, '
                             'not ""'),
    ("metric", "name", r'"Air\ttemperature"',
     f'5: {M}.name: must be 2 to 64 printable characters, not "Air\\u0009temperature"'),
    ("metric", "enabled", '"yes"', f'5: {M}.enabled: must be true or false, not "yes"'),
    ("metric", "offset", '"1"', f'5: {M}.offset: must be a number, not "1"'),
    ("metric", "offset", "inf", f'5: {M}.offset: must be a number, not inf'),
    ("metric", "scale", "true", f'5: {M}.scale: must be a number, not true'),
    ("metric", "points", '"x"', f'5: {M}.points: must be at least two [raw, true] '
                                'pairs, not "x"'),
    ("metric", "points", "[[1, 2, 3], [4, 5]]", f'5: {M}.points[0]: must be a '
                                                "[raw, true] pair of numbers, not [1, 2, 3]"),
    ("metric", "points", "[[1, 2], [nan, 5]]", f'5: {M}.points[1]: must be a '
                                               "[raw, true] pair of numbers, not [nan, 5]"),
    ("metric", "median", "1.5", f'5: {M}.median: must be a whole number, not 1.5'),
    ("metric", "median", "true", f'5: {M}.median: must be a whole number, not true'),
    ("metric", "median", "101", f'5: {M}.median: must be between 1 and 100, not 101'),
    ("metric", "valid_range", "[1]", f'5: {M}.valid_range: must be [lowest, '
                                     "highest] (two numbers), not [1]"),
    ("metric", "valid_range", '"0..1"', f'5: {M}.valid_range: must be [lowest, '
                                        'highest] (two numbers), not "0..1"'),
    ("metric", "clamp", "[100, 0]", f'5: {M}.clamp: the lowest value 100 must be below the highest 0'),
    ("metric", "clamp", '"0..100"', f'5: {M}.clamp: must be [lowest, highest] (two numbers), not "0..100"'),
    ("metric", "deadband", '"1"', f'5: {M}.deadband: must be a number, not "1"'),
    ("metric", "max_silence", '"soon"', f'5: {M}.max_silence: {DURATION_FORMS}, '
                                        'not "soon"'),
    ("metric", "unit", "5", f'5: {M}.unit: 5 is not a unit (a unit such as "°C", "%", "hPa", "ppm", "lx", '
                            'an agent unit name, or type = "double" with annotation = "…" for any other)'),
    ("metric", "type", "5", f'5: {M}.type: must be "bool" or "string" or "double" '
                            'or "integer", not 5'),
]


@pytest.mark.parametrize(("table", "key", "value", "expected"), BAD_VALUES,
                         ids=[f"{t}.{k}={v[:12]}" for t, k, v, _ in BAD_VALUES])
def test_every_key_with_a_bad_value(tmp_path: Path, table: str, key: str, value: str, expected: str) -> None:
    path = _write(tmp_path, _profile_with(table, key, value))
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert list(caught.value.lines) == [f"{path}:{expected}"]


@pytest.mark.parametrize("value", ["5", TOO_LONG, r'"open\u001b[2J"'])
def test_annotation_must_be_short_text(tmp_path: Path, value: str) -> None:
    path = _write(tmp_path, '[[sensor]]\nname = "Air"\ndriver = "bme280"\n[sensor.metrics.temperature]\n'
                            f'type = "double"\nannotation = {value}\n')
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    (line,) = caught.value.lines
    assert line.startswith(f"{path}:6: {M}.annotation: must be at most 64 printable characters, not ")


def test_control_characters_in_keys_and_options_reach_the_terminal_escaped(tmp_path: Path) -> None:
    """No escape sequence and no forged line: whatever text the profile holds, each problem is one
    line with its non-printable characters spelled out."""
    path = _write(tmp_path, '[[sensor]]\nname = "Door"\ndriver = "digital_input"\n'
                            '"x\\u001b[2J\\nfake.toml:1: ok" = 1\n[sensor.options]\npin = 17\n'
                            'annotation = "open\\r"\n')
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    lines = caught.value.lines
    assert all(line.isprintable() for line in lines)
    assert lines[0].startswith(f'{path}:4: sensor "Door" → "x\\u001b[2J\\u000afake.toml:1: ok": unknown key')
    assert lines[1] == (f'{path}:7: sensor "Door" → options.annotation: '
                        "printable characters only, not 'open\\r'")


DOOR = '[[sensor]]\nname = "Door"\ndriver = "digital_input"\noptions.pin = 27\n[sensor.metrics.state]\n'
AIR = '[[sensor]]\nname = "Air"\ndriver = "bme280"\n[sensor.metrics.temperature]\n'
D = 'sensor "Door" → metrics.state'

#: a type or unit override against the values the driver reports: (profile, expected lines)
TYPE_OVERRIDES: list[tuple[str, list[str]]] = [
    (AIR + 'type = "bool"\noffset = 1\n',
     [f'5: {M}.type: temperature reports numbers: its type can be "double", not "bool"',
      f"6: {M}.offset: temperature is a bool metric: offset applies to numbers"]),
    (AIR + 'type = "string"\nannotation = "x"\ndeadband = 0.5\n',
     [f'5: {M}.type: temperature reports numbers: its type can be "double", not "string"',
      f"7: {M}.deadband: temperature is a string metric: deadband applies to numbers"]),
    (AIR + 'type = "integer"\n',
     [f'5: {M}.type: temperature reports fractional numbers: "integer" would round them (use "double")']),
    (DOOR + 'type = "double"\n',
     [f'6: {D}.type: state reports bool values: its type can only be "bool", not "double"']),
    (DOOR + 'type = "string"\n',
     [f'6: {D}.type: state reports bool values: its type can only be "bool", not "string"']),
    (DOOR + 'unit = "NoSI.Dimensionless.PERCENT"\n',
     [f"6: {D}.unit: state reports bool values: a unit applies to numbers"]),
]


@pytest.mark.parametrize(("text", "expected"), TYPE_OVERRIDES)
def test_a_type_override_must_fit_the_driver_s_values(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert list(caught.value.lines) == [f"{path}:{line}" for line in expected]


@pytest.mark.parametrize("text", [AIR + 'type = "double"\nannotation = "C"\ndeadband = 0.1\n',
                                  DOOR + 'type = "bool"\nannotation = "shut"\n'])
def test_a_fitting_type_override_passes(tmp_path: Path, text: str) -> None:
    load_profile(_write(tmp_path, text))


def test_four_soil_probes_on_one_ads1115_pass(tmp_path: Path) -> None:
    """A grower's four probes on one chip (each its own channel and rate), and the same chip
    family at another address read by a differential pair."""
    sensors = "".join(f'[[sensor]]\nname = "Soil {n}"\ndriver = "ads1115"\n'
                      f'options = {{ channel = {n}, data_rate = {8 << n} }}\n' for n in range(4))
    sensors += ('[[sensor]]\nname = "Load cell"\ndriver = "ads1115"\n'
                'options = { address = 0x49, differential = "0-1" }\n')
    sensors += '[[sensor]]\nname = "Pump"\ndriver = "ina219"\noptions.address = 0x40\n'
    profile = load_profile(_write(tmp_path, sensors))
    assert [s.options.get("channel") for s in profile.sensors] == [0, 1, 2, 3, None, None]


def test_differential_pairs_sharing_ain3_pass(tmp_path: Path) -> None:
    """0-3, 1-3 and 2-3 exist so AIN3 can be a common negative input (a reference voltage or a
    bridge's midpoint): three pairs on one chip, and single-ended AIN0 of another chip beside them."""
    sensors = "".join(f'[[sensor]]\nname = "Pair {n}-3"\ndriver = "ads1115"\n'
                      f'options.differential = "{n}-3"\n' for n in range(3))
    sensors += '[[sensor]]\nname = "Soil"\ndriver = "ads1115"\noptions = { address = 0x49, channel = 3 }\n'
    profile = load_profile(_write(tmp_path, sensors))
    assert [s.options["differential"] for s in profile.sensors] == ["0-3", "1-3", "2-3", None]


def test_the_soil_moisture_recipe_loads(tmp_path: Path) -> None:
    """Volts to percent through two calibration points (dry air, water), clamped to 0–100."""
    profile = load_profile(_write(tmp_path, (
        '[[sensor]]\nname = "Bed 1"\ndriver = "ads1115"\noptions.channel = 0\n[sensor.metrics.voltage]\n'
        'name = "Soil moisture"\npoints = [[2.80, 0], [1.30, 100]]\nvalid_range = [-30, 130]\n'
        'clamp = [0, 100]\nunit = "NoSI.Dimensionless.PERCENT"\n')))
    metric = profile.sensors[0].metrics["voltage"]
    assert metric.clamp == (0.0, 100.0) and metric.unit == "NoSI.Dimensionless.PERCENT"
    assert metric.calibration is not None and metric.calibration.points == ((1.3, 100.0), (2.8, 0.0))


SERIAL0_CONSOLE = ('1: sensor "CO2" → options.port: /dev/serial0 is the serial console (serial0 in {path}): '
                   'free it with sudo raspi-config nonint do_serial_cons 1, then reboot')
CONSOLE_PROFILE = ('[[sensor]]\nname = "CO2"\ndriver = "mhz19"\n[[sensor]]\nname = "Dust"\n'
                   'driver = "pms5003"\noptions.port = "{port}"\n')


@pytest.mark.parametrize(("cmdline", "port", "expected"), [
    ("console=serial0,115200 console=tty1 root=PARTUUID=1-02 rootfstype=ext4 fsck.repair=yes rootwait",
     "/dev/ttyUSB0",
     [SERIAL0_CONSOLE]),
    ("console=ttyAMA0,115200 console=tty1", "/dev/ttyAMA0",
     ['7: sensor "Dust" → options.port: /dev/ttyAMA0 is the serial console (ttyAMA0 in {path}): free it '
      'with sudo raspi-config nonint do_serial_cons 1, then reboot']),
    ("console=ttyS0,115200", "/dev/ttyS0",
     ['7: sensor "Dust" → options.port: /dev/ttyS0 is the serial console (ttyS0 in {path}): free it '
      'with sudo raspi-config nonint do_serial_cons 1, then reboot']),
    ("console=tty1 root=/dev/mmcblk0p2", "/dev/ttyAMA0", []),
    ("console=serial0,115200", "/dev/ttyUSB0", None),  # the fallback path (/boot/cmdline.txt)
    (None, "/dev/ttyAMA0", []),                          # no cmdline.txt visible (not a Pi)
], ids=["serial0", "ttyAMA0", "ttyS0", "screen only", "older release's path", "not a Pi"])
def test_a_port_that_is_the_serial_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           cmdline: str | None, port: str,
                                           expected: list[str] | None) -> None:
    firmware, boot = tmp_path / "firmware-cmdline.txt", tmp_path / "boot-cmdline.txt"
    if expected is None:  # only the older path exists
        boot.write_text(cmdline or "")
        expected = [SERIAL0_CONSOLE]
        shown = boot
    else:
        if cmdline is not None:
            firmware.write_text(cmdline + "\n")
        shown = firmware
    monkeypatch.setattr(serialport, "CMDLINE_FILES", (firmware, boot))
    # these rows are about the console; serial0 beside ttyS0/ttyAMA0 checked off a Pi (possibly
    # one header UART) is a row of `test_broken_profile_reports_exactly`
    monkeypatch.setattr(serialport, "may_be_one_header_uart", lambda a, b: False)
    path = _write(tmp_path, CONSOLE_PROFILE.format(port=port))
    if not expected:
        load_profile(path)
        return
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert list(caught.value.lines) == [f"{path}:{line.format(path=shown)}" for line in expected]


# -- [bridge] http_token_file: the file itself, read bounded (a FIFO must not hang `pibridge check`) --
GOOD_TOKEN = "0123456789abcdef-token"
TOKEN_TEXT = "must hold at least 16 printable ASCII characters without spaces"


def _token_file(tmp_path: Path, kind: str) -> str:
    """The ``http_token_file`` value for ``kind`` (made in ``tmp_path`` where it is a file)."""
    target = tmp_path / "web-token"
    if kind == "missing":
        return "web-token"                                   # relative: the profile's folder
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "directory":
        target.mkdir()
    elif kind == "unreadable":
        target.write_text(GOOD_TOKEN)
        target.chmod(0)
    elif kind == "short":
        target.write_text("  short-token \n")
    elif kind == "spaces":
        target.write_text("a token with spaces in it\n")
    elif kind == "binary":
        target.write_bytes(b"\xff\xfe" + b"\x00" * 40)
    elif kind == "empty":
        target.write_text("\n\n")
    elif kind == "huge":
        target.write_text("x" * 5000)
    else:
        return kind                                          # a device path as it is
    return "web-token"


@pytest.mark.parametrize(("kind", "expected"), [
    ("missing", "the token file {file} does not exist"),
    ("fifo", "cannot read the token file {file}: a FIFO, not a regular file"),
    ("directory", "cannot read the token file {file}: is a directory"),
    ("unreadable", "cannot read the token file {file}: Permission denied"),
    ("short", f"the token file {{file}} {TOKEN_TEXT}"),
    ("spaces", f"the token file {{file}} {TOKEN_TEXT}"),
    ("binary", f"the token file {{file}} {TOKEN_TEXT}"),
    ("empty", f"the token file {{file}} {TOKEN_TEXT}"),
    ("huge", "the token file {file} is larger than 4096 bytes: not a token file"),
    ("/dev/zero", "cannot read the token file {file}: a device, not a regular file"),
    ("/dev/null", "cannot read the token file {file}: a device, not a regular file"),
])
def test_an_unusable_token_file_is_one_line_naming_file_line_and_key(tmp_path: Path, kind: str,
                                                                      expected: str) -> None:
    if kind == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads a file of mode 000")
    value = _token_file(tmp_path, kind)
    path = _write(tmp_path, f'[bridge]\nhttp = "127.0.0.1:8080"\nhttp_token_file = "{value}"\n' + ONE_SENSOR)
    file = value if value.startswith("/") else tmp_path / value
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert list(caught.value.lines) == [f"{path}:3: bridge.http_token_file: {expected.format(file=file)}"]


def test_a_token_file_is_checked_without_http_too_and_a_good_one_passes(tmp_path: Path) -> None:
    """``--http`` may serve the page with the profile's token file: the file is checked whenever
    the key is set; a good one (whitespace around it) passes."""
    path = _write(tmp_path, '[bridge]\nhttp_token_file = "web-token"\n' + ONE_SENSOR)
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(path)
    (tmp_path / "web-token").write_text(f"\n  {GOOD_TOKEN}\n")
    assert load_profile(path).bridge.http_token_file == tmp_path / "web-token"


def test_status_locating_a_bridge_does_not_read_the_token_file(tmp_path: Path) -> None:
    """``pibridge status`` reads only ``[bridge]`` to find the status file; a token file it cannot
    read (it is the service's) does not stop it."""
    path = _write(tmp_path, '[bridge]\nstate_dir = "s"\nhttp_token_file = "web-token"\n' + ONE_SENSOR)
    assert load_profile(path, sections="bridge").bridge.state_dir == tmp_path / "s"
