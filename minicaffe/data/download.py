"""Downloading a file with a progress bar and an MD5 check (the CIFAR-10 tarball)."""
import hashlib
import os
import sys
import urllib.error
import urllib.request

from ..errors import MiniCaffeError


def _print(msg):
    print(msg, flush=True)


def md5_file(path, chunk=1 << 20):
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def download(url, dest, md5=None, progress=True, timeout=60, chunk=1 << 20,
             log=_print):
    """Download ``url`` to ``dest`` with a progress bar and an MD5 check.

    The file is written as ``dest + ".part"`` and renamed only when complete and verified: an
    interrupted transfer or a wrong checksum raises MiniCaffeError and leaves no ``dest``.
    """
    from tqdm import tqdm
    part = f"{dest}.part"
    d = os.path.dirname(os.path.abspath(dest))
    os.makedirs(d, exist_ok=True)
    log(f"Downloading {url} to {dest}")
    h = hashlib.md5()
    got = 0
    total = None
    try:
        try:
            resp = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError) as e:
            raise MiniCaffeError(f"cannot download {url}: {getattr(e, 'reason', e)} (without "
                                 "internet, pass a local copy with --from PATH)") from None
        with resp, open(part, "wb") as f:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=os.path.basename(dest), disable=not progress, file=sys.stderr) as bar:
                while True:
                    try:
                        b = resp.read(chunk)
                    except Exception as e:  # connection reset, IncompleteRead, timeout
                        raise MiniCaffeError(f"download of {url} interrupted after {got} bytes"
                                             f"{f' of {total}' if total else ''}: {e}") from None
                    if not b:
                        break
                    f.write(b)
                    h.update(b)
                    got += len(b)
                    bar.update(len(b))
        if total is not None and got != total:
            raise MiniCaffeError(f"download of {url} interrupted: got {got} of {total} bytes")
        if got == 0:
            raise MiniCaffeError(f"download of {url} returned no data")
        digest = h.hexdigest()
        if md5 and digest != md5.lower():
            raise MiniCaffeError(f"checksum mismatch for {url}: MD5 {digest}, expected {md5}; "
                                 "the file was discarded")
        os.replace(part, dest)
    except BaseException:
        if os.path.exists(part):
            os.remove(part)
        raise
    log(f"Downloaded {got} bytes" + (f", MD5 {digest} verified" if md5 else ""))
    return dest
