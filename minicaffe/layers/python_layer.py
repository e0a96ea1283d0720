"""``type: "Python"``: a layer written by the user in Python, pycaffe's interface.

    layer {
      name: "loss" type: "Python" bottom: "pred" bottom: "label" top: "loss"
      python_param { module: "pyloss" layer: "EuclideanLossLayer" param_str: "{'scale': 2}" }
      loss_weight: 1
    }

``module`` is imported (from ``sys.path``; the current directory is tried as well) and
``layer`` names a class in it. As in pycaffe, the class subclasses ``caffe.Layer`` (here
``minicaffe.Layer``; ``import minicaffe as caffe`` keeps user code unchanged), is built with
the LayerParameter, and defines:

* ``setup(self, bottom, top)``: read ``self.param_str`` (and ``self.phase``: caffe.TRAIN or
  caffe.TEST), check the bottoms, add parameters with ``self.blobs.add_blob(*shape)``;
* ``reshape(self, bottom, top)``: ``top[i].reshape(*shape)``;
* ``forward(self, bottom, top)``: read ``bottom[i].data``, write ``top[i].data[...]``;
* ``backward(self, top, propagate_down, bottom)``: read ``top[i].diff``, write
  ``bottom[i].diff[...]`` where ``propagate_down[i]``, add parameter gradients into
  ``self.blobs[k].diff``.

Why a wrapper: ``minicaffe.Layer.setup`` is the Net's driver (count checks, ``layer_setup``,
``reshape``, loss weights) while pycaffe's ``setup`` is the user's one-time setup: the same
name with two meanings. The registered "Python" layer owns the driver role; it builds the
user's object and calls the user's ``setup`` from its ``layer_setup`` (or the object's
``layer_setup`` when the class is written in minicaffe's own style and has no ``setup``), and
delegates ``reshape``/``forward``/``backward``. The user's object and the wrapper share one
``blobs`` list, so weights load, save and share as for any layer.

``share_in_parallel`` is accepted and has no effect: minicaffe runs one solver per process.
A class that is not a ``minicaffe.Layer`` subclass also works if it has the four methods.
"""
import importlib
import logging
import os
import sys

from ..blob import Blob
from ..errors import MiniCaffeError
from ..layer import Layer, register

log = logging.getLogger("minicaffe")


class BlobVec(list):
    """``self.blobs`` of a Python layer: a list of Blobs with pycaffe's ``add_blob``."""

    def add_blob(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        self.append(Blob(tuple(int(s) for s in shape)))
        return self[-1]


def _import_module(name):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        cwd = os.getcwd()
        if name.split(".")[0] != missing.split(".")[0] or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        log.info("Python layer module '%s' imported from the current directory %s", name, cwd)
        return importlib.import_module(name)


def _import_failure(exc):
    """Where a module raised on import: its file and line, then the exception."""
    if isinstance(exc, SyntaxError):
        return f"{exc.filename}:{exc.lineno}: SyntaxError: {exc.msg}"
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}: " if tb is not None else ""
    return f"{where}{type(exc).__name__}: {exc}"


@register("Python")
class PythonLayer(Layer):
    def __init__(self, param):
        super().__init__(param)
        pp = param.python_param
        if not pp.module or not pp.layer:
            self.fail("python_param needs both 'module' and 'layer' (the module to import "
                      "and the class in it)")
        try:
            module = _import_module(pp.module)
        except ImportError as e:
            self.fail(f"cannot import python_param.module '{pp.module}': {e} (put its "
                      "directory on PYTHONPATH or run from that directory)")
        except Exception as e:  # the module itself raised (or has a syntax error) on import
            self.fail(f"importing python_param.module '{pp.module}' failed: "
                      f"{_import_failure(e)}")
        cls = getattr(module, pp.layer, None)
        if cls is None:
            self.fail(f"module '{pp.module}' ({getattr(module, '__file__', '?')}) has no "
                      f"class '{pp.layer}'")
        self.param_str = pp.param_str
        self.impl = cls(param)
        impl = self.impl
        impl.param_str = pp.param_str
        impl.phase = param.phase
        if not getattr(impl, "name", None):
            impl.name = param.name
        if not getattr(impl, "type", None):
            impl.type = "Python"
        blobs = getattr(impl, "blobs", None)
        impl.blobs = BlobVec(blobs if blobs else self.blobs)
        self.blobs = impl.blobs
        self.user_class = f"{pp.module}.{pp.layer}"

    def _user(self, verb):
        fn = getattr(self.impl, verb, None)
        if fn is None or getattr(type(self.impl), verb, None) is getattr(Layer, verb):
            self.fail(f"class {self.user_class} defines no {verb}()")
        return fn

    def layer_setup(self, bottom, top):
        impl = self.impl
        impl.param_str = self.layer_param.python_param.param_str
        impl.phase = self.phase
        own_setup = getattr(type(impl), "setup", None)
        try:
            if own_setup is not None and own_setup is not Layer.setup:
                impl.setup(bottom, top)
            elif hasattr(impl, "layer_setup"):
                impl.layer_setup(bottom, top)
        except MiniCaffeError:
            raise
        except Exception as e:  # the user's own check, e.g. raise Exception("Need two inputs")
            self.fail(f"{self.user_class}.setup failed: {type(e).__name__}: {e}")
        if impl.blobs is not self.blobs:  # the user rebound self.blobs
            impl.blobs = BlobVec(impl.blobs)
            self.blobs = impl.blobs

    def reshape(self, bottom, top):
        self._user("reshape")(bottom, top)

    def forward(self, bottom, top):
        self._user("forward")(bottom, top)

    def backward(self, top, propagate_down, bottom):
        self.impl.param_propagate_down = self.param_propagate_down
        self._user("backward")(top, propagate_down, bottom)

    def __repr__(self):
        return f"<Python layer '{self.name}' ({self.user_class})>"
