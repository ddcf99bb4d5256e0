"""A fake MCP3008 answering whole SPI frames, as ``/dev/spidev``'s ``transfer`` hands them over.

The MCP3008 driver clocks out (MCP3008 datasheet §5, Figure 6-1; the frame gpiozero's
``MCP3xxx._send`` uses too)::

    byte   0         1         2
    Tx     00000001  MCCCxxxx  xxxxxxxx     start bit, M = 1 single-ended / 0 differential,
    Rx     xxxxxxxx  xxxxx0RR  RRRRRRRR     CCC = channel; reply: null bit 0, then 10 bits MSB first

The chip waits for the start bit, reads M and the 3 channel bits, then shifts out a 12-bit word:
one sample bit and the null bit (both 0) followed by the 10-bit code. Code = int(V / Vref × 1023)
(1.65 V at 3.3 V → 511). Differential: IN+ = channel, IN− = channel ^ 1, negative → 0.

`MCP3008Chip.transfer` walks the frame's bits in clock order with the chip's own state machine
(any frame, not only the driver's: leading zeros, a second conversion after the first reply,
a frame cut short) and answers on MISO what the chip would; it is the SPI interface the driver
gets in ``--simulate`` (no pins, no gpiozero). `FakeMCP3008` (`.mockspi`, imports gpiozero) is
the same chip answering bit by bit on a mock factory's pins through a `SoftwareSPIBus`; the tests
check the two answer every frame alike.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..spi import SPI0_CHIP_SELECTS

if TYPE_CHECKING:
    from ..mcp3008 import MCP3008
    from ..simulation import SimulatedWorld

CHANNELS = 8
CHANNEL_BITS = 3
ADC_BITS = 10
ADC_MAX = (1 << ADC_BITS) - 1
REPLY_BITS = ADC_BITS + 2  # sample + null bit, then the code
WORD_BITS = 8
WORD_MAX = (1 << WORD_BITS) - 1
DEFAULT_VREF = 3.3

Voltage = float | Callable[[], float]


class AnalogInputs:
    """The chip's analogue side: eight inputs (volts, or callables giving volts at each
    conversion), VREF, and the conversion itself."""

    def __init__(self, vref: float = DEFAULT_VREF) -> None:
        self.vref = vref
        self.voltages: list[Voltage] = [0.0] * CHANNELS
        self.conversions = 0

    def set_voltage(self, channel: int, volts: Voltage) -> None:
        self.voltages[channel] = volts

    def _volts(self, channel: int) -> float:
        v = self.voltages[channel]
        return float(v() if callable(v) else v)

    def code_for(self, differential: bool, channel: int) -> int:
        """The 10-bit conversion result for the current inputs."""
        volts = self._volts(channel) - (self._volts(channel ^ 1) if differential else 0.0)
        volts = min(max(volts, 0.0), self.vref)
        return int(volts / self.vref * ADC_MAX)


class _State(enum.Enum):
    IDLE = "leading zeros until the start bit"
    MODE = "the single/differential bit"
    CHANNEL = "three channel bits, MSB first"
    RESULT = "shifting out the 12-bit reply; MOSI ignored"


class MCP3008Chip(AnalogInputs):
    """An MCP3008 on one chip select, with the SPI interface API (``transfer``, ``close``): each
    ``transfer`` is one transaction (select held low throughout, mode 0, MSB first)."""

    def __init__(self, vref: float = DEFAULT_VREF, select_pin: int = SPI0_CHIP_SELECTS[0]) -> None:
        super().__init__(vref)
        self.select_gpio = select_pin
        self.closed = False
        self._lock = threading.Lock()  # one transaction at a time, as the select line allows

    def transfer(self, data: Sequence[int]) -> list[int]:
        """The bytes clocked in on MISO while ``data`` (8-bit words) goes out on MOSI.

        Clock by clock, as the chip sees a rising edge: the pending reply bit goes out on MISO,
        then the MOSI bit is taken in (the reply computed on the last channel bit starts on the
        next clock). Past the reply, MISO reads 0 and the chip waits for a start bit again."""
        if self.closed:
            raise OSError("MCP3008 fake: the SPI interface is closed")
        words = list(data)
        for word in words:
            if not 0 <= word <= WORD_MAX:
                raise ValueError(f"SPI word {word!r} is not 8 bits")
        received = []
        with self._lock:
            state, single, channel, channel_bits = _State.IDLE, True, 0, 0
            reply, reply_bits = 0, 0
            for word in words:
                read = 0
                for bit in range(WORD_BITS - 1, -1, -1):
                    if reply_bits:
                        reply_bits -= 1
                        read |= (reply >> reply_bits & 1) << bit
                    mosi = word >> bit & 1
                    if state is _State.IDLE:
                        if mosi:
                            state = _State.MODE
                    elif state is _State.MODE:
                        single, channel, channel_bits = bool(mosi), 0, 0
                        state = _State.CHANNEL
                    elif state is _State.CHANNEL:
                        channel, channel_bits = channel << 1 | mosi, channel_bits + 1
                        if channel_bits == CHANNEL_BITS:
                            self.conversions += 1
                            reply, reply_bits = self.code_for(not single, channel), REPLY_BITS
                            state = _State.RESULT
                    elif not reply_bits:  # RESULT: the last reply bit went out on this clock
                        state = _State.IDLE
                received.append(read)
        return received

    def close(self) -> None:
        self.closed = True


def simulate(world: SimulatedWorld, cls: type[MCP3008], options: dict[str, Any]) -> MCP3008:
    """An MCP3008 channel on the world's SPI0: one `MCP3008Chip` per chip select (every channel
    driver of it shares the chip, and the chip is its SPI interface), the configured channel fed
    by ``soil_volts()``."""
    config = cls.check_options(options)
    device = config["spi_device"]
    chip = world.shared(("mcp3008", device), lambda: MCP3008Chip(
        vref=config["max_voltage"], select_pin=SPI0_CHIP_SELECTS[device]))
    if chip.vref != config["max_voltage"]:
        raise ConfigurationError(f"mcp3008: the simulated chip on CE{device} has VREF {chip.vref} V; "
                                 f"max_voltage={config['max_voltage']} differs")
    chip.set_voltage(config["channel"], world.environment.soil_volts)
    return cls(spi=chip, **options)


def __getattr__(name: str) -> Any:
    """`FakeMCP3008` and `spi_for` (the pin-level fake) from `.mockspi`, which imports gpiozero:
    loaded on first use only."""
    if name in ("FakeMCP3008", "spi_for"):
        from . import mockspi

        return getattr(mockspi, name)
    raise AttributeError(name)
