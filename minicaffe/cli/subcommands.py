"""``minicaffe`` verbs whose module parses its own arguments: data tools, export, classify,
draw, fold-bn. Each one is named as "module:function", a function(argv) -> exit status."""
import importlib
import sys

from ..logging_setup import setup_logging
from .exit_status import run_guarded

# Verbs with subcommands: name -> {subcommand: "module:function"}.
WITH_SUBCOMMANDS = {"data": {"cifar10": "minicaffe.data.cifar10:main_cifar10"},
                    "export": {"onnx": "minicaffe.export.onnx:main_export_onnx"}}
# Verbs that are one function: name -> "module:function".
SINGLE = {"draw": "minicaffe.draw:main_draw", "fold-bn": "minicaffe.fold_bn:main_fold_bn",
          "classify": "minicaffe.cli.classify:main_classify"}


def is_subcommand_verb(verb):
    return verb in WITH_SUBCOMMANDS or verb in SINGLE


def run_subcommand(verb, argv):
    if verb in SINGLE:
        subs, argv = {verb: SINGLE[verb]}, [verb] + list(argv)
    else:
        subs = WITH_SUBCOMMANDS[verb]
    if not argv or argv[0] not in subs:
        sys.stderr.write(f"minicaffe: error: '{verb}' needs one of: {', '.join(subs)} "
                         f"(e.g. minicaffe {verb} {next(iter(subs))} --help)\n")
        return 2
    module, func = subs[argv[0]].split(":")
    setup_logging()
    return run_guarded(lambda: getattr(importlib.import_module(module), func)(argv[1:]))
