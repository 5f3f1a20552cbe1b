"""The contracts of the test kit's own tools."""

from zope.interface import Attribute
from zope.interface import Interface

__all__ = ['ITCPProxy', 'ILinkOwner', 'WaitTimeout']


class WaitTimeout(AssertionError):
    """The state a test waited for did not come in time (see
    canonical.testing.waiting.wait_for)."""


class ITCPProxy(Interface):
    """An in-process TCP proxy between a client and PostgreSQL that tests,
    the chaos soak and the benchmarks steer.

    Each accepted connection gets its own upstream connection (a link).
    The client's side is parsed into protocol messages, which are counted
    and forwarded whole; the server's side is forwarded as it comes.
    Requests for an encrypted stream are declined by the proxy itself, so
    the stream stays readable.
    """

    host = Attribute('The address the proxy listens on (127.0.0.1).')
    port = Attribute('The port the proxy listens on.')
    upstream = Attribute('(host, port) of the server.')

    # -- figures ---------------------------------------------------------
    accepted = Attribute('Connections accepted since the start.')
    refused = Attribute('Connections closed at once while refusing.')
    cuts = Attribute('Links cut by cut() since the start.')
    sprung = Attribute('Traps sprung since the start.')
    open_links = Attribute('Links open now.')
    messages = Attribute('Client messages by kind ("Q", "P", "S", '
                         '"startup" ...) since reset_counts().')
    statements = Attribute('The first word of each Query, upper case, in '
                           'order, since reset_counts().')
    round_trips = Attribute('Queries plus Syncs since reset_counts(): the '
                            'messages after which a client waits.')
    stalled = Attribute('True between stall() and resume().')
    refusing = Attribute('True between refuse() and admit().')
    delay_up = Attribute('Seconds each client chunk is held back.')
    delay_down = Attribute('Seconds each server chunk is held back.')
    changed = Attribute('A threading.Condition notified whenever a figure '
                        'or a setting changes.')

    def cut(hard=False):
        """Cut every open link, both sides at once: a FIN, or a reset
        (RST) with ``hard``.  Returns how many links were open."""

    def refuse():
        """Close new connections as soon as they are accepted."""

    def admit():
        """Undo refuse()."""

    def stall():
        """Become a black hole: nothing is forwarded either way and new
        connections are held without an upstream, until resume()."""

    def resume():
        """Forward again; held connections go upstream."""

    def set_delay(down=0.0, up=0.0):
        """Hold every chunk back by a fixed time in each direction
        (seconds): latency added per message, without limiting
        throughput."""

    def trap(statements=('COMMIT', 'PREPARE TRANSACTION'), forward=True,
             then_refuse=False):
        """Arm one trap: the next Query that starts with one of
        ``statements`` (a string or a tuple of them) cuts its link.  With
        ``forward`` the statement reaches the server and its answer is
        withheld (the client cannot know the outcome); otherwise it is
        dropped.  With ``then_refuse`` the proxy refuses new connections
        from that moment.  Traps spring in the order they were armed."""

    def disarm():
        """Remove the traps not sprung yet; returns how many."""

    def reset_counts():
        """Start counting messages and statements afresh."""

    def snapshot():
        """Every figure at one moment, as a dict."""

    def wait(predicate, timeout=10.0, what='the proxy'):
        """Wait until ``predicate(proxy)`` is true (checked whenever
        ``changed`` is notified); raise an AssertionError naming ``what``
        after ``timeout`` seconds."""

    def close():
        """Stop listening and cut every link."""


class ILinkOwner(Interface):
    """What the test proxy offers each of its links (canonical.testing.
    tcplinks.Link), so that the links need not import the proxy.  Private
    to the pair: tests steer the proxy through ITCPProxy."""

    upstream = Attribute('(host, port) of the server.')
    delay_up = Attribute('Seconds each client chunk is held back.')
    delay_down = Attribute('Seconds each server chunk is held back.')

    def refuse():
        """Close new and open connections at once (see ITCPProxy)."""

    def _await_flowing(link):
        """Block while stalled; False when ``link`` died meanwhile."""

    def _forget(link):
        """``link`` closed: drop it and wake whoever waits on a change."""

    def _count(messages):
        """Count the client's ``messages`` (pgwire Messages)."""

    def _take_trap(message):
        """The trap ``message`` springs, taken off the list, or None."""

    def _sprang():
        """A trap sprang: count it."""

    def _notify():
        """Wake whoever waits on a change of the proxy's state."""
