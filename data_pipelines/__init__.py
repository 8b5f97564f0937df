"""grain input pipelines for ActionCLIP: sources, sampling, augmentation, batching (see `pipeline`).

Importing the package turns on Pillow's pool of freed image blocks (the `PILLOW_BLOCKS_MAX` setting of
Pillow's block allocator) unless the environment already set it. Pillow otherwise returns every image's
memory to the system when the image is freed, and the next image of the same size page-faults its memory
back in: for the few dozen 224² frames a clip makes and drops, that was a quarter of the cost of a JPEG
decode or a resize. The pool keeps at most `_PIL_BLOCKS` freed blocks, each at most one image (and at most 16 MB).
"""
import os

from PIL import Image

_PIL_BLOCKS = 32

if 'PILLOW_BLOCKS_MAX' not in os.environ:
  Image.core.set_blocks_max(_PIL_BLOCKS)
