"""The fake I2C bus and the fake BME280 register file behave like the wire and the chip
(BME280 datasheet §3–§5, SMBus transfers), independently of any driver."""

from __future__ import annotations

import errno

import pytest
from smbus2 import i2c_msg

from pibridge.drivers.bme280 import Calibration, compensate_temperature
from pibridge.drivers.fakes.bme280 import VECTOR_A_CALIBRATION, FakeBME280, pack_calibration
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.i2c import FakeSMBus

ADDR = 0x76
VECTOR_A_TP = bytes.fromhex("696D36643200E99802D6D00B231688FFF9FF8C3CF8C67017004B")
VECTOR_A_H = bytes.fromhex("780100112E031E")
VECTOR_B_TP = bytes.fromhex("706B436718FC7D8E43D6D00B270B8C00F9FF8C3CF8C67017")
VECTOR_B_CALIB = Calibration(T1=27504, T2=26435, T3=-1000, P1=36477, P2=-10685, P3=3024, P4=2855,
                             P5=140, P6=-7, P7=15500, P8=-14600, P9=6000)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def bus_chip(clock: VirtualClock) -> tuple[FakeSMBus, FakeBME280]:
    chip = FakeBME280(clock=clock)
    bus = FakeSMBus(1)
    bus.attach(ADDR, chip)
    clock.sleep(0.01)  # past the power-on NVM copy
    return bus, chip


def data(bus: FakeSMBus) -> list[int]:
    return bus.read_i2c_block_data(ADDR, 0xF7, 8)


# --- the bus ------------------------------------------------------------------------------------
def test_missing_address_is_errno_121() -> None:
    bus = FakeSMBus()
    with pytest.raises(OSError) as info:
        bus.read_byte_data(0x40, 0x00)
    assert info.value.errno == errno.EREMOTEIO == 121
    assert "Remote I/O error" in str(info.value)


def test_block_limit_32_bytes(bus_chip) -> None:
    bus, _ = bus_chip
    with pytest.raises(ValueError, match="32"):
        bus.read_i2c_block_data(ADDR, 0x88, 33)
    with pytest.raises(ValueError, match="32"):
        bus.write_i2c_block_data(ADDR, 0xF2, [0] * 33)
    assert len(bus.read_i2c_block_data(ADDR, 0x88, 32)) == 32


def test_word_read_is_little_endian(bus_chip) -> None:
    bus, _ = bus_chip
    assert bus.read_word_data(ADDR, 0x88) == 28009  # dig_T1


def test_reads_auto_increment(bus_chip) -> None:
    bus, _ = bus_chip
    assert bytes(bus.read_i2c_block_data(ADDR, 0x88, 26)) == VECTOR_A_TP
    bus.write_byte(ADDR, 0xE1)  # pointer only
    assert bytes(bus.read_byte(ADDR) for _ in range(7)) == VECTOR_A_H


def test_block_write_is_register_value_pairs(bus_chip, clock) -> None:
    bus, chip = bus_chip
    bus.write_i2c_block_data(ADDR, 0xF2, [0b101, 0xF4, 0b101_101_01])
    assert chip.osrs_codes == (0b101, 0b101, 0b101)  # 0xF2 = 5 latched by 0xF4 in the same write
    assert bus.read_byte_data(ADDR, 0xF3) & 0x08  # conversion running; 0xF3 was not written


def test_i2c_rdwr_with_real_messages(bus_chip) -> None:
    bus, _ = bus_chip
    write, read = i2c_msg.write(ADDR, [0xD0]), i2c_msg.read(ADDR, 1)
    bus.i2c_rdwr(write, read)
    assert list(read) == [0x60]


def test_close_and_context_manager(bus_chip) -> None:
    bus, _ = bus_chip
    with bus as same:
        assert same.read_byte_data(ADDR, 0xD0) == 0x60
    assert bus.closed
    with pytest.raises(OSError) as info:
        bus.read_byte_data(ADDR, 0xD0)
    assert info.value.errno == errno.EBADF


def test_nack_faults(bus_chip) -> None:
    bus, chip = bus_chip
    chip.fail_next(2)
    for _ in range(2):
        with pytest.raises(OSError):
            bus.read_byte_data(ADDR, 0xD0)
    assert bus.read_byte_data(ADDR, 0xD0) == 0x60
    chip.nack = True
    with pytest.raises(OSError):
        bus.write_byte_data(ADDR, 0xF4, 0)
    bus.detach(ADDR)
    with pytest.raises(OSError):
        bus.read_byte(ADDR)


# --- the BME280 register file ---------------------------------------------------------------------
def test_calibration_packing_matches_vectors() -> None:
    assert pack_calibration(VECTOR_A_CALIBRATION) == (VECTOR_A_TP, VECTOR_A_H)
    tp, _ = pack_calibration(VECTOR_B_CALIB, humidity=False)
    assert tp[:24] == VECTOR_B_TP and tp[24:] == b"\x00\x00"


def test_chip_ids_and_reset_register(clock) -> None:
    assert FakeBME280(clock=clock).i2c_read(0) == b""
    bus = FakeSMBus()
    bus.attach(0x76, FakeBME280(clock=clock))
    bus.attach(0x77, FakeBME280(variant="BMP280", calibration=VECTOR_B_CALIB, clock=clock))
    assert bus.read_byte_data(0x76, 0xD0) == 0x60
    assert bus.read_byte_data(0x77, 0xD0) == 0x58
    assert bus.read_byte_data(0x76, 0xE0) == 0x00


def test_read_only_registers_ignore_writes(bus_chip) -> None:
    bus, _ = bus_chip
    before = bus.read_i2c_block_data(ADDR, 0x88, 26)
    bus.write_byte_data(ADDR, 0xD0, 0x12)
    bus.write_byte_data(ADDR, 0x88, 0x00)
    bus.write_byte_data(ADDR, 0xF7, 0x00)
    bus.write_byte_data(ADDR, 0xF3, 0xFF)
    assert bus.read_byte_data(ADDR, 0xD0) == 0x60
    assert bus.read_i2c_block_data(ADDR, 0x88, 26) == before
    assert data(bus)[0] == 0x80
    assert bus.read_byte_data(ADDR, 0xF3) == 0


def test_forced_conversion_timing_and_mode_bits(bus_chip, clock) -> None:
    bus, chip = bus_chip
    assert data(bus) == [0x80, 0, 0, 0x80, 0, 0, 0x80, 0]  # reset values
    bus.write_byte_data(ADDR, 0xF2, 0b001)
    bus.write_byte_data(ADDR, 0xF4, 0b001_001_01)
    assert bus.read_byte_data(ADDR, 0xF4) & 0b11 == 0b01
    assert bus.read_byte_data(ADDR, 0xF3) & 0x08
    assert data(bus)[0] == 0x80  # still the old data mid-conversion
    clock.sleep(0.008)  # datasheet typical for all x1
    assert bus.read_byte_data(ADDR, 0xF3) & 0x08 == 0
    assert bus.read_byte_data(ADDR, 0xF4) == 0b001_001_00  # back to sleep
    assert data(bus) != [0x80, 0, 0, 0x80, 0, 0, 0x80, 0]
    assert chip.conversions == 1


def test_ctrl_hum_latches_only_on_ctrl_meas(bus_chip, clock) -> None:
    bus, chip = bus_chip
    # the wrong order: ctrl_meas first, ctrl_hum afterwards -> humidity not converted
    bus.write_byte_data(ADDR, 0xF4, 0b001_001_01)
    clock.sleep(0.02)
    bus.write_byte_data(ADDR, 0xF2, 0b001)
    assert chip.osrs_codes[2] == 0
    assert data(bus)[6:] == [0x80, 0x00]
    assert bus.read_byte_data(ADDR, 0xF2) == 0b001  # the register reads back, not yet in force
    # the right order
    bus.write_byte_data(ADDR, 0xF4, 0b001_001_01)
    clock.sleep(0.02)
    assert chip.osrs_codes[2] == 0b001
    assert data(bus)[6:] != [0x80, 0x00]


def test_writes_during_a_conversion(bus_chip, clock) -> None:
    bus, chip = bus_chip
    bus.write_byte_data(ADDR, 0xF4, 0b101_101_01)  # long x16 conversion
    bus.write_byte_data(ADDR, 0xF2, 0b011)          # ignored: measuring
    bus.write_byte_data(ADDR, 0xF4, 0b001_000_01)   # delayed to the end
    bus.write_byte_data(ADDR, 0xF4, 0b010_000_01)   # dropped
    clock.sleep(0.066)  # x16 T and P, H not latched: 65.5 ms typical
    assert bus.read_byte_data(ADDR, 0xF4) >> 5 == 0b001  # the delayed write took effect ...
    assert bus.read_byte_data(ADDR, 0xF3) & 0x08      # ... and started the next conversion
    assert chip.conversions == 1
    assert chip.ctrl_hum_pending == 0


def test_skipped_channels_read_reset_values(bus_chip, clock) -> None:
    bus, _ = bus_chip
    bus.write_byte_data(ADDR, 0xF2, 0)
    bus.write_byte_data(ADDR, 0xF4, 0b001_000_01)  # T only
    clock.sleep(0.01)
    regs = data(bus)
    assert regs[0:3] == [0x80, 0, 0] and regs[6:8] == [0x80, 0]
    assert regs[3:6] != [0x80, 0, 0]


def test_resolution_follows_oversampling(clock) -> None:
    chip = FakeBME280(clock=clock, raw=(529191, 326816, 30281))
    bus = FakeSMBus()
    bus.attach(ADDR, chip)
    bus.write_byte_data(ADDR, 0xF4, 0b001_001_01)  # x1: 16 bit
    clock.sleep(0.01)
    assert data(bus)[2] == 0 and data(bus)[5] == 0
    bus.write_byte_data(ADDR, 0xF4, 0b101_101_01)  # x16: 20 bit
    clock.sleep(0.1)
    regs = data(bus)
    assert (regs[3] << 12) | (regs[4] << 4) | (regs[5] >> 4) == 529191
    assert regs[5] & 0x0F == 0  # the low nibble of xlsb is always 0


def test_iir_filter_smooths_temperature(clock) -> None:
    celsius = [20.0]
    chip = FakeBME280(clock=clock, source=lambda: (celsius[0], 100_000.0, 50.0))
    bus = FakeSMBus()
    bus.attach(ADDR, chip)
    bus.write_byte_data(ADDR, 0xF5, 0b011 << 2)  # coefficient 8

    def convert() -> float:
        bus.write_byte_data(ADDR, 0xF4, 0b101_101_01)
        clock.sleep(0.1)
        regs = data(bus)
        adc_t = (regs[3] << 12) | (regs[4] << 4) | (regs[5] >> 4)
        return compensate_temperature(adc_t, chip.calibration)[1] / 100

    assert convert() == pytest.approx(20.0, abs=0.01)
    celsius[0] = 28.0
    stepped = convert()
    assert 20.5 < stepped < 21.5  # 1/8 of the step
    for _ in range(60):
        last = convert()
    assert last == pytest.approx(28.0, abs=0.01)


def test_normal_mode_keeps_refreshing(clock) -> None:
    celsius = [20.0]
    chip = FakeBME280(clock=clock, source=lambda: (celsius[0], 100_000.0, 50.0))
    bus = FakeSMBus()
    bus.attach(ADDR, chip)
    bus.write_byte_data(ADDR, 0xF5, 0b000 << 5)  # t_sb 0.5 ms
    bus.write_byte_data(ADDR, 0xF4, 0b001_001_11)
    clock.sleep(0.1)
    first = data(bus)
    celsius[0] = 30.0
    clock.sleep(0.1)
    assert data(bus)[3:6] != first[3:6]  # refreshed without another write
    assert chip.conversions == 2  # cycles nobody looked at are skipped, not computed
    assert bus.read_byte_data(ADDR, 0xF4) & 0b11 == 0b11
    bus.write_byte_data(ADDR, 0xF5, 0b100 << 2)  # ignored in normal mode
    assert bus.read_byte_data(ADDR, 0xF5) == 0


def test_soft_reset(bus_chip, clock) -> None:
    bus, chip = bus_chip
    bus.write_byte_data(ADDR, 0xF5, 0b100 << 2)
    bus.write_byte_data(ADDR, 0xF2, 0b001)
    bus.write_byte_data(ADDR, 0xF4, 0b001_001_01)
    clock.sleep(0.02)
    bus.write_byte_data(ADDR, 0xE0, 0x12)  # not the reset command: ignored
    assert bus.read_byte_data(ADDR, 0xF5) == 0b100 << 2
    bus.write_byte_data(ADDR, 0xE0, 0xB6)
    assert bus.read_byte_data(ADDR, 0xF3) & 0x01  # im_update while the NVM is copied
    assert [bus.read_byte_data(ADDR, r) for r in (0xF2, 0xF4, 0xF5)] == [0, 0, 0]
    assert data(bus) == [0x80, 0, 0, 0x80, 0, 0, 0x80, 0]
    clock.sleep(0.003)
    assert bus.read_byte_data(ADDR, 0xF3) == 0
    assert chip.osrs_h_latched == 0


def test_bmp280_has_no_humidity_registers(clock) -> None:
    chip = FakeBME280(variant="BMP280", calibration=VECTOR_B_CALIB, raw=(519888, 415148, 0), clock=clock)
    bus = FakeSMBus()
    bus.attach(ADDR, chip)
    assert bytes(bus.read_i2c_block_data(ADDR, 0x88, 24)) == VECTOR_B_TP
    assert bus.read_i2c_block_data(ADDR, 0xA0, 2) == [0, 0]
    assert bus.read_i2c_block_data(ADDR, 0xE1, 7) == [0] * 7
    bus.write_byte_data(ADDR, 0xF2, 0b101)
    assert bus.read_byte_data(ADDR, 0xF2) == 0
    bus.write_byte_data(ADDR, 0xF4, 0b101_101_01)
    clock.sleep(0.1)
    assert bytes(bus.read_i2c_block_data(ADDR, 0xF7, 6)) == bytes.fromhex("655AC07EED00")
    assert bus.read_i2c_block_data(ADDR, 0xFD, 2) == [0, 0]


def test_fault_flags(bus_chip, clock) -> None:
    bus, chip = bus_chip
    chip.blank_calibration = True
    assert set(bus.read_i2c_block_data(ADDR, 0x88, 26)) == {0xFF}
    assert set(bus.read_i2c_block_data(ADDR, 0xE1, 7)) == {0xFF}
    chip.stuck_measuring = True
    bus.write_byte_data(ADDR, 0xF4, 0b001_001_01)
    clock.sleep(10.0)
    assert bus.read_byte_data(ADDR, 0xF3) & 0x08
    assert chip.conversions == 0


def test_generic_bus_knows_no_chip() -> None:
    """The dependency runs one way: fake chip -> driver constants; the generic bus imports none."""
    import ast
    from pathlib import Path

    import pibridge.drivers.fakes.i2c as generic

    tree = ast.parse(Path(generic.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert not any(name and ("bme280" in name or "bh1750" in name) for name in imported)
    assert all(alias.name not in ("bme280", "bh1750") for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) for alias in node.names)



def test_the_transfer_log_is_bounded(bus_chip: tuple[FakeSMBus, FakeBME280]) -> None:
    """A simulated run lasts months: the log keeps only the newest `TRANSFER_LOG_MAX` calls."""
    from pibridge.drivers.fakes.i2c import TRANSFER_LOG_MAX

    bus, _chip = bus_chip
    for n in range(TRANSFER_LOG_MAX + 10):
        bus.write_byte_data(ADDR, 0xF5, n & 0xE0)
    assert len(bus.transfers) == TRANSFER_LOG_MAX
    assert bus.transfers[-1] == ("write_byte_data", ADDR, 0xF5, (TRANSFER_LOG_MAX + 9) & 0xE0)
