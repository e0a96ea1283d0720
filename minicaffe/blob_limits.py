"""How large a blob may be: Caffe's INT_MAX count, and this machine's physical memory."""
import math
import os

import numpy as np

from .errors import BlobSizeError

# Caffe's Blob::Reshape refuses a count above INT_MAX ("blob size exceeds INT_MAX").
INT_MAX = 2 ** 31 - 1


def physical_memory():
    """Bytes of physical memory of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def check_blob_size(shape, dtype):
    """Refuse a shape before allocating it: above INT_MAX values (Caffe's limit), or more bytes
    than physical memory, fails at once instead of swapping or a MemoryError minutes later."""
    count = math.prod(int(s) for s in shape)
    text = " x ".join(str(s) for s in shape)
    if count > INT_MAX:
        raise BlobSizeError(f"blob shape {text} holds {count} values: blob size exceeds INT_MAX "
                            f"({INT_MAX}), the most Caffe allows")
    need = count * np.dtype(dtype).itemsize
    have = physical_memory()
    if have and need > have:
        raise BlobSizeError(f"blob shape {text} needs {need / 2**30:.1f} GiB, more than this "
                            f"machine's physical memory ({have / 2**30:.1f} GiB)")
    return count
