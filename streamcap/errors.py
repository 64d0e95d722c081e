"""One exception tree for the whole toolkit.

Every error the library raises on bad input is a ``StreamcapError``; leaves also
subclass the matching built-in so callers can catch either. The CLI turns any
``StreamcapError`` into one line on stderr and exit code 2.
"""

from __future__ import annotations


class StreamcapError(Exception):
    """Root of all errors raised by streamcap on bad input or environment."""


class InputError(StreamcapError, ValueError):
    """A user-supplied file or argument cannot be used (not an image, empty video...)."""


class InputNotFound(StreamcapError, FileNotFoundError):
    """A user-supplied path does not exist."""


class NoFaceFound(InputError):
    """Detection found no face where the command needs at least one."""


class CameraUnavailable(StreamcapError, OSError):
    """The requested camera cannot be opened or stopped delivering frames."""


class VideoError(InputError):
    """A video file cannot be demuxed or decoded."""


class BundleError(StreamcapError, ValueError):
    """A model bundle is missing, corrupt or does not match this runtime."""


class BackendUnavailable(StreamcapError, RuntimeError):
    """An inference backend cannot load here (missing library, no GPU...)."""


class CodecError(StreamcapError, ValueError):
    """A stream message is malformed, truncated, forged or of an unknown version."""


class TransportTimeout(StreamcapError, TimeoutError):
    """No message arrived from the peer within the allowed time."""


class NotImplementedYet(StreamcapError, NotImplementedError):
    """A command whose implementation lands in a later issue."""
