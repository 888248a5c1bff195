"""Frames <-> messages.

A message on the wire is `[header, *blobs]`: `header` is the msgpack encoding of one
tagged struct from `ipc.messages`, `blobs` are raw byte frames (images) sent without
copying. Each direction has its own decoder, so a message sent the wrong way is a
protocol error rather than a surprise.
"""

from __future__ import annotations

from typing import Any, Sequence

import msgspec

from ipc.messages import Message, SupervisorMessage, WorkerMessage


class ProtocolError(Exception):
    """A frame sequence that is not a valid message for this direction."""


_encoder = msgspec.msgpack.Encoder()


def encode(message: Message, *blobs: Any) -> list[Any]:
    if len(blobs) != message.BLOBS:
        raise ProtocolError(
            f"{type(message).__name__} carries {message.BLOBS} frame(s), got {len(blobs)}"
        )
    return [_encoder.encode(message), *blobs]


class Decoder:
    def __init__(self, union: Any) -> None:
        self._decoder = msgspec.msgpack.Decoder(union)

    def decode(self, frames: Sequence[Any]) -> tuple[Message, list[Any]]:
        """Decode `frames` (bytes or zmq.Frame) into the message and its blob frames."""
        if not frames:
            raise ProtocolError("empty message")
        header = frames[0]
        raw = header.buffer if hasattr(header, "buffer") else header
        try:
            message = self._decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError(f"undecodable header: {exc}") from None
        blobs = list(frames[1:])
        if len(blobs) != message.BLOBS:
            raise ProtocolError(
                f"{type(message).__name__} expects {message.BLOBS} frame(s), got {len(blobs)}"
            )
        return message, blobs


def worker_message_decoder() -> Decoder:
    """Used by the supervisor: decodes what the worker sends."""
    return Decoder(WorkerMessage)


def supervisor_message_decoder() -> Decoder:
    """Used by the worker: decodes what the supervisor sends."""
    return Decoder(SupervisorMessage)


def frame_bytes(frame: Any) -> bytes:
    """The payload of a received frame as bytes (one copy, out of ZeroMQ's buffer)."""
    return frame.bytes if hasattr(frame, "bytes") else bytes(frame)
