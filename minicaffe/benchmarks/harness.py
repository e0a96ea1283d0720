"""Timing harness of the benchmarks: timed rounds, per-layer timing, and sides run in child
processes one after the other, pass after pass, their results pooled."""
import json
import resource
import statistics
import subprocess
import sys
import time

from .nets import ROOT

RESULT = "RESULT "


def rounds(candidates, n, warmup=2):
    """Time each named callable once per round, ``n`` rounds after ``warmup``; all candidates
    meet the same load from other processes. Returns name -> list of seconds."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    out = {k: [] for k in candidates}
    for _ in range(n):
        for k, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    return out


def sample_rounds(fn, n, warmup=2):
    """``n`` calls of ``fn`` (returning name -> seconds) after ``warmup``; name -> list."""
    for _ in range(warmup):
        fn()
    out = {}
    for _ in range(n):
        for k, v in fn().items():
            out.setdefault(k, []).append(v)
    return out


def timed(fn, iters, n_rounds, sync, warmup=3):
    """Median ms per call over ``n_rounds`` rounds of ``iters`` calls, each round timed
    between two ``sync()`` (device synchronisations)."""
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(n_rounds):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        out.append((time.perf_counter() - t0) * 1e3 / iters)
    return statistics.median(out)


def no_sync():
    pass


def layer_times(net, sync=no_sync):
    """Seconds of each layer's forward and backward in one pass over ``net``, as ``minicaffe
    time`` measures them (``sync()`` before and after each layer on a device)."""
    layers, bottoms, tops = net.layers, net._bottom_vecs, net._top_vecs
    need = net._bottom_need_backward
    clock = time.perf_counter
    fwd, bwd = [0.0] * len(layers), [0.0] * len(layers)
    for i, layer in enumerate(layers):
        sync()
        t0 = clock()
        layer.reshape(bottoms[i], tops[i])
        layer.forward(bottoms[i], tops[i])
        sync()
        fwd[i] = clock() - t0
    for i in range(len(layers) - 1, -1, -1):
        if net.layer_need_backward(i):
            sync()
            t0 = clock()
            layers[i].backward(tops[i], need[i], bottoms[i])
            sync()
            bwd[i] = clock() - t0
    return fwd, bwd


def layer_sample(keys, fwd, bwd):
    """One per-layer sample as {"<row> fwd": s, "<row> bwd": s, ...} in layer order; layers
    sharing a row add up."""
    out = {}
    for key, f, b in zip(keys, fwd, bwd):
        for label, v in (("fwd", f), ("bwd", b)):
            out[f"{key} {label}"] = out.get(f"{key} {label}", 0.0) + v
    return out


def own_peak_mib():
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited through fork
    from the parent that started it)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------- children
def emit_result(result):
    """A child's answer to its parent: one ``RESULT {json}`` line on stdout."""
    print(RESULT + json.dumps(result), flush=True)


def run_module(module, args):
    """Run ``python -m module args`` in a fresh process (cwd ROOT: the prototxts' data paths
    are relative to the repository; the environment as the parent got it, without the thread
    defaults importing minicaffe added); return (exit status, output)."""
    import minicaffe
    cmd = [sys.executable, "-m", module] + [str(a) for a in args]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(minicaffe.user_environ),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc.returncode, proc.stdout.decode(errors="replace")


def run_child(module, args, what):
    """The result dict a child ``python -m module args`` emitted; exits on a failed child."""
    rc, out = run_module(module, args)
    for line in out.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    raise SystemExit(f"{what} child failed ({rc}):\n{out[-2000:]}")


def alternate(keys, passes, run):
    """``passes`` passes over ``keys`` (tuples of names), ``run(key)`` each, one right after
    the other so that all meet the same load; returns one {key: result} per pass."""
    out = []
    for p in range(passes):
        print(f"pass {p + 1}/{passes}:", end="", flush=True)
        results = {}
        for key in keys:
            print(" " + "/".join(key), end="", flush=True)
            results[key] = run(key)
        out.append(results)
        print(flush=True)
    return out


def pool(results):
    """Child results pooled: "timings" and "layers" samples concatenated (name -> list),
    "peak_mib" the largest."""
    into = {"timings": {}, "layers": {}, "peak_mib": 0.0}
    for res in results:
        for part in ("timings", "layers"):
            for k, v in res[part].items():
                into[part].setdefault(k, []).extend(v)
        into["peak_mib"] = max(into["peak_mib"], res["peak_mib"])
    return into
