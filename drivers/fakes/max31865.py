"""A fake MAX31865 on gpiozero's mock SPI (mode 1), and the simulator that builds the driver on it.

The chip's side of the wire, written on its own (not with the driver's helpers)::

    write   MOSI  1AAAAAAA  D[A]  D[A+1] ...      address auto-increments (wraps after 0x07);
    read    MOSI  0AAAAAAA  xx    xx     ...      read-only registers ignore writes
            MISO  --------  R[A]  R[A+1] ...

What it models (hardware.md §17.7): the power-on register values; configuration actions taken
when CS goes high (the datasheet triggers a 1-shot there); D5 (1-shot) and D1 (fault clear)
self-clear; a 1-shot is refused (no conversion: the old result stays, counted in
``refused_one_shots``) unless V_BIAS has been on for `BIAS_SETTLE_TYPICAL_S` (the datasheet asks
for the bias to settle first, hardware.md §17.3); 1-shot results after the *typical* conversion
time (52 / 62.5 ms), automatic mode
results every 16.7 / 20 ms after the first full conversion, each filtered over the last 1-shot
time: a result whose window began before V_BIAS had been on for `BIAS_SETTLE_TYPICAL_S` reads
low (the input filter still charging) — a driver that does not let the bias settle gets wrong
values; with V_BIAS off a conversion reads 0. Each result is compared with the threshold
registers (D7 / D6) and the fault bit (bit 0 of the LSB) set when the status is non-zero.
Wiring faults are opt-in: ``wiring = "open" | "short" | "overvoltage"``, and
``fault_next(status)`` adds status bits to the next result only (a glitch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gpiozero.pins.mock import MockFactory, MockSPIDevice

from ..spi import SPI0_CHIP_SELECTS, SPI0_MISO, SPI0_MOSI, SPI0_SCLK
from .softspi import SoftwareSPIBus

if TYPE_CHECKING:
    from ..max31865 import MAX31865
    from ..simulation import SimulatedWorld

REGISTERS = 8
POWER_ON = [0x00, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00]
READ_ONLY = (0x01, 0x02, 0x07)
BYTE_BITS = 8
WRITE_FLAG = 0x80
ADDRESS_MASK = 0x07

CFG_BIAS, CFG_AUTO, CFG_ONE_SHOT, CFG_FAULT_CYCLE, CFG_CLEAR, CFG_50HZ = 0x80, 0x40, 0x20, 0x0C, 0x02, 0x01
ST_HIGH, ST_LOW, ST_VOLTAGE = 0x80, 0x40, 0x04

ONE_SHOT_TYPICAL_S = {True: 0.0625, False: 0.052}   #: by the 50 Hz bit
AUTO_PERIOD_TYPICAL_S = {True: 0.020, False: 0.01667}
BIAS_SETTLE_TYPICAL_S = 0.005  #: 10.5 τ of the input filter + 1 ms on a typical board
UNSETTLED_FACTOR = 0.5         #: how low a result reads when its window began before settling
FULL_SCALE = 1 << 15
CODE_MAX = FULL_SCALE - 1
OPEN_CODE = CODE_MAX           #: an open element: the input sits at full scale
SHORT_CODE = 3                 #: a short: near zero

#: IEC 60751, written here again (the fake does not import the driver's maths)
A, B, C = 3.9083e-3, -5.775e-7, -4.183e-12

Source = Callable[[], float]


def pt_resistance(celsius: float, r0: float) -> float:
    """R(T) of a platinum RTD (Callendar–Van Dusen; C only below 0 °C)."""
    r = r0 * (1 + A * celsius + B * celsius ** 2)
    if celsius < 0:
        r += r0 * C * (celsius - 100) * celsius ** 3
    return r


class FakeMAX31865(MockSPIDevice):
    """A MAX31865 whose RTD has ``ohms()`` (a callable) and whose board has ``reference_ohms``.

    ``clock``: monotonic seconds (a `VirtualClock` in tests). ``transactions`` counts CS cycles;
    ``bias_on_s`` adds up how long V_BIAS was on (self-heating); ``bias_on`` says whether it is."""

    def __init__(self, pin_factory: MockFactory, *, ohms: Source, reference_ohms: float = 430.0,
                 clock: Callable[[], float], select_pin: int = SPI0_CHIP_SELECTS[0]) -> None:
        super().__init__(SPI0_SCLK, SPI0_MOSI, SPI0_MISO, select_pin, clock_phase=True,
                         pin_factory=pin_factory)
        self.ohms = ohms
        self.reference_ohms = reference_ohms
        self.clock = clock
        self.select_gpio = select_pin
        self.registers = list(POWER_ON)
        self.wiring = "ok"
        self._glitch = 0
        self.transactions = 0
        self.bias_on_s = 0.0
        self.refused_one_shots = 0   #: 1-shots written with V_BIAS off or not yet settled
        self._bias_since: float | None = None
        self._auto_since: float | None = None
        self._one_shot_at: float | None = None
        self._address: int | None = None
        self.rx_buf: list[int] = []
        self._write = False
        self._pending_config: int | None = None

    @property
    def bias_on(self) -> bool:
        return self._bias_since is not None

    # -- faults ------------------------------------------------------------------------------
    def fault_next(self, status: int) -> None:
        """The next conversion result also sets these status bits (a one-off glitch)."""
        self._glitch |= status

    # -- the wire ------------------------------------------------------------------------------
    def on_select(self) -> None:
        super().on_select()
        if self.select_pin.state != self.select_high:  # CS back high: the transaction ends
            self._end_transaction()

    def on_start(self) -> None:
        super().on_start()
        self._address, self._write, self._pending_config = None, False, None

    def on_bit(self) -> None:
        if len(self.rx_buf) < BYTE_BITS:
            return
        byte = self.rx_word()
        self.rx_buf = []
        if self._address is None:
            self._write = bool(byte & WRITE_FLAG)
            self._address = byte & ADDRESS_MASK
            if not self._write:
                self._update(self.clock())
                self.tx_word(self.registers[self._address], BYTE_BITS)
            return
        if self._write:
            self._write_register(self._address, byte)
            self._address = (self._address + 1) & ADDRESS_MASK
        else:
            self._address = (self._address + 1) & ADDRESS_MASK
            self.tx_word(self.registers[self._address], BYTE_BITS)

    def _write_register(self, address: int, value: int) -> None:
        if address == 0:
            self._pending_config = value  # acted on when CS goes high
        elif address not in READ_ONLY:
            self.registers[address] = value

    def _end_transaction(self) -> None:
        self.transactions += 1
        if self._pending_config is None:
            return
        now = self.clock()
        self._update(now)
        value, self._pending_config = self._pending_config, None
        old = self.registers[0]
        if value & CFG_CLEAR:
            self.registers[7] = 0
            self.registers[2] &= 0xFE
        if value & CFG_BIAS and not old & CFG_BIAS:
            self._bias_since = now
        if not value & CFG_BIAS and self._bias_since is not None:
            self.bias_on_s += now - self._bias_since
            self._bias_since = None
        if value & CFG_AUTO and not old & CFG_AUTO:
            self._auto_since = now
        if not value & CFG_AUTO:
            self._auto_since = None
        if value & CFG_ONE_SHOT and not value & CFG_AUTO:
            if self._bias_since is not None and now >= self._bias_since + BIAS_SETTLE_TYPICAL_S:
                self._one_shot_at = now
            else:  # V_BIAS off or still settling: no conversion, the old result stays
                self.refused_one_shots += 1
        # D5 (1-shot), D1 (clear) self-clear; the fault cycle (D3:D2) reads back 00 (done)
        self.registers[0] = value & ~(CFG_ONE_SHOT | CFG_CLEAR | CFG_FAULT_CYCLE)

    # -- conversions ---------------------------------------------------------------------------
    def _update(self, now: float) -> None:
        """Bring the result registers to ``now``: the newest finished conversion, if any."""
        config = self.registers[0]
        fifty = bool(config & CFG_50HZ)
        window = ONE_SHOT_TYPICAL_S[fifty]
        if self._one_shot_at is not None and now >= self._one_shot_at + window:
            began, self._one_shot_at = self._one_shot_at, None
            self._convert(began)
        if self._auto_since is not None and now >= self._auto_since + window:
            period = AUTO_PERIOD_TYPICAL_S[fifty]
            done = int((now - self._auto_since - window) / period)
            self._convert(self._auto_since + done * period)

    def _convert(self, began: float) -> None:
        """One result whose filter window began at ``began``."""
        biased = self._bias_since is not None and self.registers[0] & CFG_BIAS
        status = self._glitch
        self._glitch = 0
        if self.wiring == "open":
            code = OPEN_CODE
        elif self.wiring == "short":
            code = SHORT_CODE
        elif not biased:
            code = 0
        else:
            code = round(self.ohms() / self.reference_ohms * FULL_SCALE)
            assert self._bias_since is not None
            if began < self._bias_since + BIAS_SETTLE_TYPICAL_S:
                code = round(code * UNSETTLED_FACTOR)
            code = max(0, min(CODE_MAX, code))
        if self.wiring == "overvoltage":
            status |= ST_VOLTAGE
        high = ((self.registers[3] << 8) | self.registers[4]) >> 1
        low = ((self.registers[5] << 8) | self.registers[6]) >> 1
        if code >= high:
            status |= ST_HIGH
        if code <= low:
            status |= ST_LOW
        self.registers[7] |= status
        word = (code << 1) | (1 if self.registers[7] else 0)
        self.registers[1], self.registers[2] = word >> 8, word & 0xFF


def spi_for(chip: FakeMAX31865, bus: SoftwareSPIBus) -> Any:
    """The SPI interface that reaches ``chip`` on ``bus`` (its chip select)."""
    return bus.device(chip.select_gpio)


def simulate(world: SimulatedWorld, cls: type[MAX31865], options: dict[str, Any]) -> MAX31865:
    """A MAX31865 on the world's mock SPI0 at the configured chip select, its probe in the
    nutrient tank: the air temperature 4 °C cooler, through the probe's own R0."""
    config = cls.check_options(options)
    device = config["spi_device"]
    rtd = config["rtd"]
    r0 = 1000.0 if rtd == "pt1000" else 100.0
    reference = config["reference_ohms"] or (4300.0 if rtd == "pt1000" else 430.0)
    env = world.environment
    factory = world.pin_factory()
    chip = world.shared(("max31865", device), lambda: FakeMAX31865(
        factory, ohms=lambda: pt_resistance(env.air_temperature(offset_c=-4.0), r0),
        reference_ohms=reference, clock=world.clock.monotonic, select_pin=SPI0_CHIP_SELECTS[device]))
    bus = world.shared("spi0", lambda: SoftwareSPIBus(factory))
    spi = world.shared(("spi0", device), lambda: spi_for(chip, bus))
    return cls(spi=spi, **options)
