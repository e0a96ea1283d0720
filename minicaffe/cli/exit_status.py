"""Exit statuses of the ``minicaffe`` command: a user error or an interrupt becomes one line
on stderr and a status (1 or 130), never a traceback."""
import sys

from ..errors import MiniCaffeError


def run_guarded(command, user_errors=(MiniCaffeError,)):
    """``command()``'s status (None counts as 0); ``user_errors`` exit 1 with their message."""
    try:
        return command() or 0
    except user_errors as e:
        sys.stderr.write(f"minicaffe: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("minicaffe: interrupted\n")
        return 130
