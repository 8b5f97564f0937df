"""Decoding just the frames a clip needs from a video file, with PyAV.

Eight frames of a ten-second clip are a few percent of its frames, so the decoder seeks to the keyframe
before each wanted frame and decodes forward only until it has it. A seek pays off only when a keyframe
lies between the current position and the next wanted frame; the container does not say where keyframes
are, so each seek's landing teaches the longest keyframe-free stretch seen, and the decoder seeks only
across gaps longer than that. Long-GOP videos thus fall back to decoding forward after one wasted seek,
and short-GOP videos seek for every frame. On the way to a wanted frame, frames no other frame references
(most B-frames) are skipped by the decoder: nothing needs them, and skipping saves about a fifth of the
decode time of x264 video.

Frames are converted to RGB (and scaled so their short side is `short_side`, inside swscale) only when
they are kept. Frame numbers come from presentation timestamps, so B-frame reordering and variable
packet sizes do not shift them.

Everything that can go wrong with a file becomes a `BadVideoError` naming it: missing, empty,
unreadable container, no video stream, a stream without frames, decode errors, fewer frames than expected,
and a decode taking longer than `timeout_s` (also passed to FFmpeg's I/O so a stalled read is interrupted).
"""
import os
import time

import av
from av.video.reformatter import VideoReformatter
import numpy as np

from data_pipelines.bad_videos import BadVideoError

# An estimated frame count (from the container's duration) may be off by rounding; a shortfall larger
# than this is a truncated file, not rounding.
_ESTIMATE_SLACK = 2


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
  """(width, height) with the short side `short_side` and the aspect kept; unchanged for None."""
  if short_side is None:
    return width, height
  if width <= height:
    return short_side, max(1, round(height * short_side / width))
  return max(1, round(width * short_side / height)), short_side


def decode_frames(path: str, pick, *, num_frames: int | None = None, short_side: int | None = None,
                  timeout_s: float = 60.0, threads: int = 1) -> np.ndarray:
  """Frames `pick(frame_count)` of `path` as uint8 `[*indices.shape, H, W, 3]`.

  Args:
    path: the video file.
    pick: maps the video's frame count to an integer index array of any shape (a sampler).
    num_frames: the count from the list file, trusted and enforced; None reads it from the container.
    short_side: scale frames so their short side has this many pixels; None keeps the stored size.
    timeout_s: wall-clock limit for the whole read.
    threads: decoder threads; 1 suits data loaders, which get their parallelism from worker processes.
  """
  deadline = time.monotonic() + timeout_s
  if not os.path.isfile(path):
    raise BadVideoError(path, 'file not found')
  if os.path.getsize(path) == 0:
    raise BadVideoError(path, 'file is empty')
  try:
    with av.open(path, timeout=timeout_s) as container:
      if not container.streams.video:
        raise BadVideoError(path, 'no video stream')
      stream = container.streams.video[0]
      stream.thread_count = threads
      count, exact = _frame_count(container, stream)
      if num_frames is None:
        num_frames = count
      elif 0 < count < num_frames - (0 if exact else _ESTIMATE_SLACK):
        raise BadVideoError(path, f'has {count} frames, the list says {num_frames}')
      else:
        exact = True  # a listed count is enforced: running out of frames before it is an error
      if num_frames < 1:
        raise BadVideoError(path, 'container reports no frames')
      indices = np.asarray(pick(num_frames))
      targets = np.unique(indices)
      frames = _decode_targets(path, container, stream, targets.tolist(), num_frames, exact,
                               scaled_size(stream.width, stream.height, short_side), deadline)
  except av.ExitError as e:  # FFmpeg's I/O interrupted at the timeout
    raise BadVideoError(path, 'decoding timed out') from e
  except av.FFmpegError as e:
    raise BadVideoError(path, f'{type(e).__name__}: {e}') from e
  frames = np.stack(frames)
  if np.array_equal(indices, targets):
    return frames  # each frame wanted once, in order (the usual training clip): no gather copy
  return frames[np.searchsorted(targets, indices)]


def _frame_count(container, stream) -> tuple[int, bool]:
  """The stream's frame count and whether it is exact (an index entry) or estimated from duration."""
  if stream.frames > 0:
    return stream.frames, True
  rate = stream.average_rate or stream.guessed_rate
  if stream.duration is not None:
    seconds = float(stream.duration * stream.time_base)
  elif container.duration is not None:
    seconds = container.duration / av.time_base
  else:
    return 0, False
  return round(seconds * float(rate)), False


def _decode_targets(path, container, stream, targets, num_frames, exact, size, deadline):
  rate = stream.average_rate or stream.guessed_rate
  if not rate:
    raise BadVideoError(path, 'stream has no frame rate')
  frames_per_tick = float(stream.time_base * rate)
  start = stream.start_time or 0
  to_rgb = VideoReformatter()  # one scaler for the whole read: building one costs more than a frame
  width, height = size
  keyframe_free = 0  # longest stretch before a wanted frame that a seek showed has no keyframe
  position = -1  # index of the last decoded frame
  decoded = frame = None
  kept = []

  def index_of(timestamp):
    return round((timestamp - start) * frames_per_tick)

  def decode_from(index):
    try:
      container.seek(start + int(index / frames_per_tick), stream=stream, backward=True)
    except av.FFmpegError:
      # A stream without frames fails the seek with an error that does not say so (EPERM from an AVI whose header
      # promises frames its file lacks): name the real reason when it is that one.
      if not any(packet.size for packet in container.demux(stream)):
        raise BadVideoError(path, 'the video stream holds no frames') from None
      raise
    for packet in container.demux(stream):
      # A frame before the wanted one matters only if later frames reference it.
      early = packet.pts is not None and index_of(packet.pts) < target
      stream.codec_context.skip_frame = 'NONREF' if early else 'DEFAULT'
      yield from packet.decode()

  for target in targets:
    if target >= num_frames:
      raise BadVideoError(path, f'frame {target} asked of a video with {num_frames} frames')
    just_seeked = decoded is None or target - position > keyframe_free
    if just_seeked:
      decoded = decode_from(target)
    while position < target:
      previous, frame = frame, next(decoded, None)
      if frame is None:
        if exact or target - position > _ESTIMATE_SLACK or previous is None:
          raise BadVideoError(path, f'ends after {position + 1} decodable frames, expected {num_frames}')
        frame = previous  # the duration estimate overshot by rounding: repeat the last frame
        break
      if time.monotonic() > deadline:
        raise BadVideoError(path, 'decoding timed out')
      timestamp = frame.pts if frame.pts is not None else frame.dts
      if timestamp is None:
        raise BadVideoError(path, 'frames carry no timestamps')
      index = index_of(timestamp)
      if just_seeked:
        just_seeked = False
        if index > target:
          # The seek landed past the frame (an imprecise index): decode this frame from the start.
          decoded, position = decode_from(0), -1
          continue
        keyframe_free = max(keyframe_free, target - index)
      position = index
    kept.append(to_rgb.reformat(frame, width, height, format='rgb24', threads=1).to_ndarray())
  return kept
