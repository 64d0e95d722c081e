"""Live link over OSC in the VMC protocol (Virtual Motion Capture protocol, protocol.vmc.info),
sent with python-osc.

streamcap acts as a VMC *Performer* sending to a *Marionette* (an avatar app: VSeeFace, Warudo,
VNyan, EVMC4U in Unity, VMC4B in Blender; VMC's usual port is 39539). Every frame goes out as
one OSC bundle:

- ``/VMC/Ext/OK 1 3 0 <tracking>``: model loaded, calibrated, normal mode, and tracking status
  (1 while a face is tracked, 0 when it is lost: then nothing else is sent for that frame);
- ``/VMC/Ext/T <seconds>``: the frame's timestamp;
- ``/VMC/Ext/Bone/Pos "Head" px py pz qx qy qz qw``: head pose in Unity axes (left-handed,
  x right, y up, z away from the camera, metres), mirrored like a webcam preview, so an avatar
  facing the camera copies the performer the way a mirror does. Position is relative to the
  image centre, scaled so that the face is ``FACE_WIDTH_M`` wide at its first tracked size;
- ``/VMC/Ext/Blend/Val <name> <value>`` for each ARKit-named coefficient (VMC's "perfect sync"
  names are ARKit's), then ``/VMC/Ext/Blend/Apply``.

One face drives the avatar: the tracked face with the lowest id.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .geometry.gltf import FACE_WIDTH_M

UNITY = np.diag([1.0, -1.0, -1.0])  # streamcap image axes -> Unity axes (a rotation: both are left-handed)
DEFAULT_PORT = 39539


def parse_hostport(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or ':PORT' for localhost, '[v6]:PORT') -> (host, port); InputError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--osc {text!r}: expected HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT})")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class VmcSender:
    """Sends one face's pose and expression coefficients per frame as VMC bundles over UDP."""

    def __init__(self, host: str, port: int) -> None:
        from pythonosc.udp_client import SimpleUDPClient

        try:
            self.client = SimpleUDPClient(host, port)
        except OSError as exc:  # an unresolvable host name
            raise InputError(f"--osc {host}:{port}: {exc.strerror or exc}") from exc
        self._m_per_px: float | None = None
        self.sent = 0
        self.errors = 0

    def send(self, timestamp: float, sample, image_size: tuple[int, int]) -> None:
        """``sample`` is a take ``FaceSample`` (or None when no face is tracked this frame)."""
        from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
        from pythonosc.osc_message_builder import OscMessageBuilder

        def msg(address: str, *args) -> None:
            b = OscMessageBuilder(address=address)
            for a in args:
                b.add_arg(a)
            bundle.add_content(b.build())

        bundle = OscBundleBuilder(IMMEDIATELY)
        msg("/VMC/Ext/OK", 1, 3, 0, int(sample is not None))
        msg("/VMC/Ext/T", float(timestamp))
        if sample is not None:
            from scipy.spatial.transform import Rotation

            if self._m_per_px is None:
                self._m_per_px = FACE_WIDTH_M / (sample.scale * sample.canonical_width)
            rot = UNITY @ np.asarray(sample.rotation, np.float64) @ UNITY
            mirror = np.diag([-1.0, 1.0, 1.0])  # webcam-preview mirror (x -> -x) in Unity axes
            q = Rotation.from_matrix(mirror @ rot @ mirror).as_quat()
            centre = np.array([image_size[0] / 2, image_size[1] / 2, 0.0])
            p = mirror @ UNITY @ (np.asarray(sample.head_position, np.float64) - centre) * self._m_per_px
            msg("/VMC/Ext/Bone/Pos", "Head", *(float(v) for v in p), *(float(v) for v in q))
            for name, value in sample.expressions.items():
                msg("/VMC/Ext/Blend/Val", name, float(value))
            msg("/VMC/Ext/Blend/Apply")
        try:
            self.client.send(bundle.build())
            self.sent += 1
        except OSError:  # nobody listening (ICMP refused) or the network went away: keep capturing
            self.errors += 1

    def close(self) -> None:
        sock = getattr(self.client, "_sock", None)
        if sock is not None:
            sock.close()
