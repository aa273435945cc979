"""proxy/deadline.py: one timer per connection, moved by a float store, never late."""

from __future__ import annotations

from authproxy.proxy.deadline import Deadline


class Handle:
    def __init__(self, loop: FakeLoop, at: float, callback):
        self.loop, self.at, self.callback, self.cancelled = loop, at, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The two calls a Deadline makes, with a clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0
        self.handles: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, at: float, callback) -> Handle:
        handle = Handle(self, at, callback)
        self.handles.append(handle)
        return handle

    def run_until(self, moment: float) -> None:
        """Fire every live timer due by ``moment``, in order, as the loop would."""
        while True:
            due = sorted((h for h in self.handles if not h.cancelled and h.at <= moment), key=lambda h: h.at)
            if not due:
                self.now = moment
                return
            handle = due[0]
            self.handles.remove(handle)
            self.now = max(self.now, handle.at)
            handle.callback()

    @property
    def armed(self) -> int:
        return sum(not handle.cancelled for handle in self.handles)


def deadline(loop: FakeLoop) -> tuple[Deadline, list[float]]:
    fired: list[float] = []
    return Deadline(loop, lambda: fired.append(loop.now)), fired  # type: ignore[arg-type]


def test_it_fires_once_at_the_deadline_and_not_before():
    loop = FakeLoop()
    timer, fired = deadline(loop)
    timer.set_in(5)
    loop.run_until(104.9)
    assert fired == []
    loop.run_until(200)
    assert fired == [105.0]


def test_moving_it_later_costs_no_timer_and_fires_at_the_new_deadline():
    loop = FakeLoop()
    timer, fired = deadline(loop)
    timer.set(105)
    for later in (106, 107, 108):  # one request after another on a keep-alive connection
        timer.set(later)
    assert loop.armed == 1
    loop.run_until(107.5)
    assert fired == [] and loop.armed == 1  # woke at 105, looked, sleeps until 108
    loop.run_until(200)
    assert fired == [108]


def test_moving_it_earlier_re_arms_so_it_is_never_late():
    loop = FakeLoop()
    timer, fired = deadline(loop)
    timer.set(160)
    timer.set(102)  # a route with a shorter read timeout on the same connection
    loop.run_until(200)
    assert fired == [102]


def test_a_cleared_deadline_does_not_fire_and_its_timer_stops():
    loop = FakeLoop()
    timer, fired = deadline(loop)
    timer.set(105)
    timer.clear()  # the answer came
    loop.run_until(200)
    assert fired == [] and loop.armed == 0
    timer.set(210)  # the next wait arms anew
    loop.run_until(300)
    assert fired == [210]


def test_cancel_drops_the_timer():
    loop = FakeLoop()
    timer, fired = deadline(loop)
    timer.set(105)
    timer.cancel()
    assert loop.armed == 0
    loop.run_until(200)
    assert fired == []
