"""Reading and writing text protos (prototxt) with errors that name file, line and column."""
import os
import re

from google.protobuf import text_format

from ..errors import MiniCaffeError, PrototxtError
from .atomic_file import write_bytes_atomically

# Control characters other than whitespace: "Invalid control characters encountered in text."
CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1f]")


def read_text(path):
    if not os.path.exists(path):
        raise MiniCaffeError(f"{path}: no such file")
    if os.path.isdir(path):
        raise MiniCaffeError(f"{path}: is a directory, expected a prototxt file")
    with open(path, "rb") as f:
        data = f.read()
    if CONTROL_BYTES.search(data):  # Caffe's tokenizer refuses them; binary protos hold them
        from .protobinary import describe_binary
        raise PrototxtError(f"{path}: not a text prototxt: it holds {describe_binary(data)}")
    # Invalid UTF-8 in a string field is accepted, as Caffe's parser does (with a warning).
    return data.decode("utf-8", errors="replace")


def parse_text(text, message, source="<string>"):
    """Parse ``text`` into ``message`` (cleared first); an error names ``source``:line:column.

    Parse, not Merge: like Caffe's ``TextFormat::Parse``, a non-repeated field given twice is
    an error instead of the last value silently winning."""
    message.Clear()  # as C++ Parse does; Python's Parse would refuse fields already set
    try:
        text_format.Parse(text, message, allow_unknown_extension=False)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        msg = str(e)
        # ParseError's text starts with "line:col : "; keep only the explanation.
        if line is not None and msg.startswith(f"{line}:"):
            msg = msg.split(" : ", 1)[-1]
        msg = "".join(c if c.isprintable() else repr(c)[1:-1] for c in msg)
        where = f"{source}:{line}:{col}" if line is not None else source
        raise PrototxtError(f"{where}: {msg}") from None
    return message


def read_prototxt(path, message):
    parse_text(read_text(path), message, source=path)
    if message.DESCRIPTOR.full_name == "caffe.NetParameter":
        # Here the warning can name the file; the layer's own check then stays silent.
        from ..data.fork_transforms import warn_ignored_fields
        warn_ignored_fields(message, path)
    return message


def write_prototxt(message, path):
    """Write atomically, as the binary files are (``atomic_file``)."""
    write_bytes_atomically(path, text_format.MessageToString(message).encode("utf-8"))
