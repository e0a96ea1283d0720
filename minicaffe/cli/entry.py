"""The ``minicaffe`` command line: Caffe's flags, the verbs, and dispatch to them."""
import argparse
import sys

from ..errors import MiniCaffeError
from ..logging_setup import setup_logging
from .brew import cmd_test, cmd_time, cmd_train
from .device import cmd_device_query
from .exit_status import run_guarded
from .subcommands import is_subcommand_verb, run_subcommand

VERBS = {
    "train": "train or finetune a model",
    "test": "score a model",
    "device_query": "show GPU diagnostic information",
    "time": "benchmark model execution time",
}
# Caffe's flags (tools/caffe.cpp); every one takes a value, but for minicaffe's own
# --allow_nonfinite (a gflags-style bool: --allow_nonfinite or --allow_nonfinite=true).
FLAGS = ("gpu", "solver", "model", "phase", "level", "stage", "snapshot", "weights",
         "iterations", "sigint_effect", "sighup_effect", "allow_nonfinite")
EFFECTS = ("stop", "snapshot", "none")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write(f"minicaffe: error: {message} (see 'minicaffe --help')\n")
        sys.exit(2)


def build_parser():
    usage = "minicaffe <command> [--flag value ...]"
    epilog = "commands:\n" + "\n".join(f"  {k:<15} {v}" for k, v in VERBS.items()) + (
        "\n  data cifar10    get CIFAR-10 and convert it to LMDBs (see its --help)" +
        "\n  export onnx     write a deploy net and its weights as an ONNX model" +
        "\n  classify        top-k classes of images through a deploy net" +
        "\n  draw            render a net prototxt with graphviz" +
        "\n  fold-bn         fold BatchNorm/Scale/Bias into the preceding conv/ip weights" +
        "\n\nFlags may also be written Caffe's way: -solver s.prototxt, -solver=s.prototxt.")
    p = _Parser(prog="minicaffe", usage=usage, allow_abbrev=False, epilog=epilog,
                description="command line brew (Caffe's `caffe` tool)",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=list(VERBS), metavar="command",
                   help="one of: " + ", ".join(VERBS))
    p.add_argument("--gpu", default="",
                   help="run in GPU mode on the given device id; train with a list or "
                        "'all' runs one process per GPU (test and time use the first); an "
                        "unusable GPU is an error. 'auto': the GPU if there is one, else the "
                        "CPU (MINICAFFE_GPU_FALLBACK=1 makes every request fall back so)")
    p.add_argument("--solver", default="", help="the solver definition prototxt")
    p.add_argument("--model", default="", help="the model definition prototxt")
    p.add_argument("--phase", default="", choices=["", "TRAIN", "TEST"], metavar="PHASE",
                   help="network phase (TRAIN or TEST); only used by 'time'")
    p.add_argument("--level", type=int, default=None, help="network level")
    p.add_argument("--stage", default="", help="network stages, separated by ','")
    p.add_argument("--snapshot", default="", help="a .solverstate to resume training from")
    p.add_argument("--weights", default="",
                   help="pretrained weights (.caffemodel, several separated by ',')")
    p.add_argument("--iterations", type=int, default=50, help="iterations to run (test, time)")
    p.add_argument("--sigint_effect", default="stop", choices=EFFECTS,
                   help="on SIGINT (Ctrl-C) and SIGTERM (a batch scheduler's stop): "
                        "snapshot, stop or none (default stop)")
    p.add_argument("--sighup_effect", default="snapshot", choices=EFFECTS,
                   help="on SIGHUP: snapshot, stop or none (default snapshot)")
    p.add_argument("--allow_nonfinite", action="store_true",
                   help="keep training when the loss becomes NaN or Inf (default: stop with "
                        "the iteration and the first layer that went non-finite; also "
                        "MINICAFFE_ALLOW_NONFINITE=1)")
    from .. import __version__
    p.add_argument("--version", action="version", version=f"minicaffe {__version__}")
    return p


def normalize_argv(argv):
    """Rewrite gflags' single-dash spellings (-solver x, -solver=x) into --solver x, and
    the bool's --allow_nonfinite=true/false into the flag or nothing."""
    out = []
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            name = arg[1:].split("=", 1)[0]
            if name in FLAGS or name in ("help", "version"):
                arg = "-" + arg
        if arg.startswith("--allow_nonfinite="):
            if arg.split("=", 1)[1].lower() not in ("true", "1", "yes"):
                continue
            arg = "--allow_nonfinite"
        out.append(arg)
    return out


COMMANDS = {"train": cmd_train, "test": cmd_test, "time": cmd_time,
            "device_query": cmd_device_query}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and is_subcommand_verb(argv[0]):
        return run_subcommand(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(normalize_argv(argv))
    handler = setup_logging()
    return run_guarded(lambda: COMMANDS[args.command](args, parser, handler),
                       (MiniCaffeError, OSError))
