"""A thread's inbox that it can wait on beside sockets: messages in a deque, and a socket pair
whose read end is readable while a message from another thread waits.

The delivery thread waits in one select for both its inbox and the agent connection it reads
itself (`AgentClient.drive`): a message from another thread (the queue committed a batch, a stop)
wakes it like an answer does. A message put by the owner thread itself (a push's answer, settled
while it reads the connection) costs no system call.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pibridge.wakeup import WakePair

Message = tuple[Any, ...]
#: Waits ``timeout`` s, returning early once the socket it is given is readable (or earlier).
Waiter = Callable[[float, socket.socket], None]


def wait_for_socket(timeout: float, wake: socket.socket) -> None:
    """The plain `Waiter`: nothing to do meanwhile."""
    select.select([wake], [], [], timeout)


class Inbox:
    """Messages for one owner thread (`bind`), put from any thread, in order."""

    def __init__(self) -> None:
        self._messages: deque[Message] = deque()
        self._wakeup = WakePair()
        self._owner = 0

    def bind(self) -> None:
        """The calling thread owns the inbox: its own puts send no wake-up."""
        self._owner = threading.get_ident()

    def put(self, message: Message) -> None:
        self._messages.append(message)
        if threading.get_ident() != self._owner:
            self._wakeup.wake()

    def waiting(self) -> int:
        """Messages waiting."""
        return len(self._messages)

    def get_nowait(self) -> Message | None:
        try:
            return self._messages.popleft()
        except IndexError:
            return None

    def wait(self, timeout: float, waiter: Waiter = wait_for_socket) -> Message | None:
        """The next message; else ``waiter(timeout, wake socket)`` runs (it returns early when a
        message comes from another thread) and the message that came meanwhile, or None."""
        message = self.get_nowait()
        if message is not None:
            return message
        self._wakeup.drain()  # before the last look: a put after it wakes the waiter
        message = self.get_nowait()
        if message is not None:
            return message
        waiter(timeout, self._wakeup.reader)
        return self.get_nowait()

    def get(self, timeout: float) -> Message | None:
        """The next message within ``timeout`` s (nothing else done meanwhile), or None."""
        deadline = time.monotonic() + timeout
        while (message := self.wait(max(0.0, deadline - time.monotonic()))) is None:
            if time.monotonic() >= deadline:
                return None
        return message

    def close(self) -> None:
        self._wakeup.close()
