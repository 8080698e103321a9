"""Replays recorded array calls on real CuPy without a GPU (run under a CuPy interpreter).

    python tests/cupy_replay.py stub DIR          builds DIR/libcublas.so.12 (see below)
    python tests/cupy_replay.py replay CALLS.json DIR  replays the calls (stub in DIR), prints
                                                      one JSON report
    python tests/cupy_replay.py mlpcli MODE DIR ARGS...  mlpcli ARGS on a stand-in GPU (see
                                                      run_mlpcli)

CuPy checks a call's arguments (shapes, dtypes, casting, `out=`, keywords) on the host and
then launches work on the device. Without a device, most calls would stop before those
checks, at the first CUDA runtime query; so this module stands in for the few entry points
reached on the way, and each replayed call must get as far as the device:

- CUDA runtime (linked statically into CuPy, so not replaceable by a library): the Cython
  functions CuPy's modules import from `cupy_backends.cuda.api.runtime` are looked up, at
  import time, in that module's `__pyx_capi__` table of C function pointers. Replacing those
  entries before `cupy` is imported swaps device queries, memset and memcpy for ctypes
  callbacks; memcpy and memset record that the device was reached.
- Memory: an allocator hands out `UnownedMemory` at made-up addresses that nothing reads.
  Pinned host memory (`cudaHostAlloc`) is real host memory, and remembered, so that an
  asynchronous host -> device copy (`cudaMemcpyAsync`) reports whether its source is pinned
  (CuPy copies a non-contiguous source into ordinary memory first) and which stream it runs
  on (the null stream, or one created: streams and events are made-up handles).
- Runtime queries that the engine calls from Python (`memGetInfo`) run for real: without a
  driver the runtime answers with an error, which is as far as a call can get here.
- Kernels: compiling one (NVRTC) raises `ReachedDevice`; every check has run by then.
  CUB, which would launch precompiled kernels out of sight, is switched off.
- cuBLAS: a stub `libcublas.so.12`, built by `stub`, stands in for the library: its handle
  calls succeed, and each BLAS routine counts itself as reached and returns success.

A replayed call passes when it reaches the device (or, like a reshape, needs no device
work at all) and fails on any other exception: that is a call real CuPy refuses.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

# --------------------------------------------------------------------------- the cuBLAS stub

# cuBLAS calls that set up or query a handle: these succeed without reaching the device
_SETUP = re.compile(r"cublas(Create|Destroy|Set|Get|LoggerConfigure)")


def build_stub(cupy_dir: Path, out_dir: Path) -> Path:
    """A libcublas.so.12 defining every cuBLAS symbol CuPy's cublas module imports."""
    module = next((cupy_dir.parent / "cupy_backends" / "cuda" / "libs").glob("cublas*.so"))
    table = subprocess.run(
        ["readelf", "--dyn-syms", "-W", str(module)], capture_output=True, text=True, check=True
    ).stdout
    names = sorted(set(re.findall(r"UND (cublas\w+)@libcublas\.so\.12", table)))
    lines = [
        "#include <string.h>",
        "long mlpcli_blas_calls = 0;",
        "char mlpcli_blas_last[64];",
        "static int reached(const char *name) {",
        "  mlpcli_blas_calls++;",
        "  strncpy(mlpcli_blas_last, name, 63);",
        "  return 0;",
        "}",
    ]
    for name in names:
        if name == "cublasCreate_v2":
            lines.append(f"int {name}(void **h) {{ *h = (void *)0x1000; return 0; }}")
        elif name in ("cublasGetVersion_v2", "cublasGetProperty"):
            lines.append(f"int {name}(void *a, int *v) {{ *v = 120000; return 0; }}")
        elif _SETUP.match(name):
            lines.append(f"int {name}(void) {{ return 0; }}")
        else:
            lines.append(f'int {name}(void) {{ return reached("{name}"); }}')
    out_dir.mkdir(parents=True, exist_ok=True)
    source = out_dir / "cublas_stub.c"
    source.write_text("\n".join(lines) + "\n", encoding="ascii")
    (out_dir / "cublas.map").write_text("libcublas.so.12 { global: *; };\n", encoding="ascii")
    # cuBLAS loads cuBLASLt first (CuPy 14 looks it up by name): an empty one will do
    (out_dir / "cublasLt_stub.c").write_text("int mlpcli_blaslt_stub;\n", encoding="ascii")
    for lib, src, extra in [
        ("libcublasLt.so.12", "cublasLt_stub.c", []),
        ("libcublas.so.12", "cublas_stub.c", [f"-Wl,--version-script={out_dir / 'cublas.map'}"]),
    ]:
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-o", str(out_dir / lib), str(out_dir / src)]
            + [f"-Wl,-soname,{lib}", *extra],
            check=True,
        )
    return out_dir


# --------------------------------------------------------------------------- the stand-ins


class ReachedDevice(Exception):
    """The call got past CuPy's checks to work on the device (here: a kernel compile)."""


REACHED: list[str] = []  # what each call reached: "memcpy", "memset", "kernel", "cublas..."
PINNED: dict[int, int] = {}  # pinned host memory allocated and not yet freed: address -> size
STREAMS: set[int] = set()  # the handles of the streams created
RUNTIME: dict = {}  # the runtime's own Python functions that fake_device replaces
_MEMCPY_KINDS = {0: "host-to-host", 1: "host-to-device", 2: "device-to-host"}
_MEMCPY_KINDS.update({3: "device-to-device", 4: "default"})
_KEEP: list = []  # ctypes callbacks and capsules that must stay alive

_api = ctypes.pythonapi
_api.PyCapsule_GetName.restype = ctypes.c_char_p
_api.PyCapsule_GetName.argtypes = [ctypes.py_object]
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


def _new_ref(value) -> int:
    """`value` as the new reference a C function returning PyObject * hands back."""
    _KEEP.append(value)
    _api.Py_IncRef(ctypes.py_object(value))
    return id(value)


def _none(*args) -> int:
    return _new_ref(None)


def _swap(module, name: str, restype, argtypes, fn) -> None:
    """Replace the C function `name` that other Cython modules import from `module`."""
    capsule = module.__pyx_capi__[name]
    signature = _api.PyCapsule_GetName(capsule)
    callback = ctypes.CFUNCTYPE(restype, *argtypes)(fn)
    pointer = ctypes.cast(callback, ctypes.c_void_p).value
    _KEEP.extend([callback, capsule, signature])
    module.__pyx_capi__[name] = _api.PyCapsule_New(pointer, signature, None)


def _reach(what: str):
    def record(*args) -> int:
        REACHED.append(what)
        return _new_ref(None)

    return record


def fake_device(name: bytes = b"Stand-in GPU") -> None:
    """One GPU as the CUDA runtime sees it (device queries, memcpy, memset, host memory),
    and nothing else: cuBLAS and NVRTC are whatever the machine has. Call before `import
    cupy`."""
    if "cupy" in sys.modules:
        raise RuntimeError("the stand-ins must be installed before cupy is imported")
    import cupy_backends.cuda.api.runtime as rt

    i, p, s = ctypes.c_int, ctypes.c_ssize_t, ctypes.c_size_t
    obj = ctypes.c_void_p  # a PyObject * return
    _swap(rt, "getDevice", i, [i], lambda skip: 0)
    _swap(rt, "getDeviceCount", i, [i], lambda skip: 1)
    _swap(rt, "setDevice", obj, [i, i], _none)
    _swap(rt, "_ensure_context", obj, [], _none)
    _swap(rt, "streamIsCapturing", i, [p, i], lambda stream, skip: 0)
    if "pointerGetMemoryType" in rt.__pyx_capi__:  # CuPy 14: 0 is unregistered host memory
        _swap(rt, "pointerGetMemoryType", i, [p, i], lambda ptr, skip: 0)
    # host memory is real (CuPy copies arrays through it); device pointers never are
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [s]
    libc.free.argtypes = [ctypes.c_void_p]

    def host_alloc(size: int, flags: int, skip: int) -> int:
        ptr = libc.malloc(max(size, 1))
        PINNED[ptr] = size
        REACHED.append("hostAlloc")
        return ptr

    def free_host(ptr: int, skip: int) -> int:
        PINNED.pop(ptr, None)
        libc.free(ptr)
        return _new_ref(None)

    _swap(rt, "hostAlloc", p, [s, ctypes.c_uint, i], host_alloc)
    _swap(rt, "freeHost", obj, [p, i], free_host)
    _swap(
        rt,
        "pointerGetAttributes",
        obj,
        [p, i],
        lambda ptr, skip: _new_ref(rt.PointerAttributes(0, 0, ptr, 0)),  # plain host memory
    )

    def event_create(flags: int, skip: int) -> int:
        REACHED.append("eventCreate")
        return 0x2000

    _swap(rt, "eventCreateWithFlags", p, [ctypes.c_uint, i], event_create)
    _swap(rt, "eventRecord", obj, [p, p, i], _reach("eventRecord"))
    _swap(rt, "eventQuery", obj, [p, i], _reach("eventQuery"))
    _swap(rt, "eventSynchronize", obj, [p, i], _reach("eventSynchronize"))
    _swap(rt, "eventDestroy", obj, [p, i], _none)

    def stream_create(*args) -> int:  # (flags, [priority,] skip): a new made-up handle
        ptr = 0x3000 + 0x10 * len(STREAMS)
        STREAMS.add(ptr)
        REACHED.append("streamCreate")
        return ptr

    for create, flags in [("streamCreate", []), ("streamCreateWithFlags", [ctypes.c_uint])]:
        _swap(rt, create, p, [*flags, i], stream_create)
    if "streamCreateWithPriority" in rt.__pyx_capi__:  # what CuPy 14's Stream() calls
        _swap(rt, "streamCreateWithPriority", p, [ctypes.c_uint, i, i], stream_create)
    _swap(rt, "streamDestroy", obj, [p, i], _none)
    _swap(rt, "streamQuery", obj, [p, i], _reach("streamQuery"))
    # (stream, event, skip, the optional flags)
    _swap(rt, "streamWaitEvent", obj, [p, p, i, ctypes.c_void_p], _reach("streamWaitEvent"))
    # cudaDevAttrComputeCapabilityMajor (75) is 8, Minor (76) and the rest 0: an sm_80
    _swap(rt, "deviceGetAttribute", i, [i, i, i], lambda attr, dev, skip: 8 * (attr == 75))
    _swap(rt, "memcpy", obj, [p, p, s, i, i], _reach("memcpy"))

    def memcpy_async(dst: int, src: int, size: int, kind: int, stream: int, skip: int) -> int:
        pinned = any(lo <= src and src + size <= lo + n for lo, n in PINNED.items())
        on = "a stream of its own" if stream in STREAMS else f"stream {stream:#x}"
        REACHED.append("memcpy")
        REACHED.append(
            f"memcpyAsync {_MEMCPY_KINDS.get(kind, kind)} "
            f"from {'pinned' if pinned else 'pageable'} memory on {on}"
        )
        return _new_ref(None)

    _swap(rt, "memcpyAsync", obj, [p, p, s, i, p, i], memcpy_async)
    _swap(rt, "memset", obj, [p, i, s, i], _reach("memset"))
    _swap(rt, "memsetAsync", obj, [p, i, s, p, i], _reach("memset"))
    _swap(rt, "streamSynchronize", obj, [p, i], _reach("streamSynchronize"))
    _swap(rt, "deviceSynchronize", obj, [i], _none)
    real_mem_get_info = rt.memGetInfo  # replayed for real (the engine calls it from Python)

    def mem_get_info(*args, **kwargs):
        try:
            free_total = real_mem_get_info(*args, **kwargs)
        except rt.CUDARuntimeError as e:  # no driver: the runtime got the call
            REACHED.append("runtime")
            raise ReachedDevice("memGetInfo") from e
        REACHED.append("runtime")
        return free_total

    RUNTIME["memGetInfo"] = mem_get_info
    # and for Python callers (cupy.copyto asks which device is current)
    rt.getDevice, rt.getDeviceCount, rt.setDevice = (lambda: 0), (lambda: 1), (lambda d: None)
    rt.getDeviceProperties = lambda device: {"name": name, "major": 8, "minor": 0}
    rt.memGetInfo = lambda: (3 << 30, 16 << 30)  # 3 GiB free of 16 GiB


def install() -> None:
    """The device of fake_device, plus: NVRTC's version, a kernel compile that raises
    ReachedDevice, and device memory at made-up addresses. Call before `import cupy`."""
    # CuPy hands some reductions to CUB, whose precompiled kernels launch from C++ where no
    # stand-in can see them (and fail there without a word); without CUB they compile a
    # kernel like the rest. The arguments are checked before either path is chosen.
    os.environ["CUPY_ACCELERATORS"] = ""
    fake_device()
    import cupy_backends.cuda.libs.nvrtc as nvrtc

    _swap(nvrtc, "getVersion", ctypes.c_void_p, [ctypes.c_int], lambda skip: _new_ref((12, 4)))

    import cupy
    import cupy.cuda.compiler as compiler

    def compile_kernel(*args, **kwargs):
        REACHED.append("kernel")
        raise ReachedDevice("kernel compile")

    compiler._compile_module_with_cache = compile_kernel
    compiler.compile_with_cache = compile_kernel

    state = {"next": 1 << 40}

    def allocate(size: int):
        ptr = state["next"]
        state["next"] += (max(size, 1) + 511) // 512 * 512
        mem = cupy.cuda.memory.UnownedMemory(ptr, size, None, device_id=0)
        return cupy.cuda.memory.MemoryPointer(mem, 0)

    cupy.cuda.set_allocator(allocate)


def load_stub(stub_dir: Path) -> ctypes.CDLL:
    """Load the cuBLAS stub under its soname, so CuPy's cublas module links to it."""
    ctypes.CDLL(str(stub_dir / "libcublasLt.so.12"), mode=ctypes.RTLD_GLOBAL)
    return ctypes.CDLL(str(stub_dir / "libcublas.so.12"), mode=ctypes.RTLD_GLOBAL)


# --------------------------------------------------------------------------- the replay

_ALLOCATED = [0]  # bytes the allocator handed out during the current call


def _decode(value, cupy, np, buffers: dict, objects: dict):
    """A recorded argument as a CuPy (or host) value; see standin_xp.encode."""
    if isinstance(value, dict):
        if "device" in value:
            if value["object"] in objects:
                return objects[value["object"]]
            if value["device"] not in buffers:
                buffers[value["device"]] = cupy.cuda.alloc(value["nbytes"])
            array = cupy.ndarray(
                tuple(value["shape"]),
                np.dtype(value["dtype"]),
                memptr=buffers[value["device"]] + value["offset"],
                strides=tuple(value["strides"]),
            )
            objects[value["object"]] = array
            return array
        if "host" in value:
            return _host_array(value, cupy, np)
        if "stream" in value:
            if value["stream"] == "current":
                return cupy.cuda.get_current_stream()
            return cupy.cuda.Stream(**value["stream"])
        if "event" in value:
            return cupy.cuda.Event(**value["event"])
        if "memory_pool" in value:
            return cupy.get_default_memory_pool()
        if "scalar" in value:
            return np.dtype(value["dtype"]).type(value["scalar"])
        if "tuple" in value or "list" in value:
            items = [_decode(v, cupy, np, buffers, objects) for v in value.get("tuple", [])]
            items += [_decode(v, cupy, np, buffers, objects) for v in value.get("list", [])]
            return tuple(items) if "tuple" in value else items
        if "slice" in value:
            return slice(*value["slice"])
        if "ellipsis" in value:
            return Ellipsis
        if "type" in value:
            return np.dtype(value["type"]).type
        raise ValueError(f"unknown recorded argument {value!r}")
    return value


def _host_array(value: dict, cupy, np):
    """A host array of the recorded shape, dtype and strides, in pinned memory where the
    recorded one was (and zeros, where only shape and dtype were recorded)."""
    shape, dtype = tuple(value["host"]), np.dtype(value["dtype"])
    if "strides" not in value:
        return np.zeros(shape, dtype)
    strides = tuple(value["strides"])
    steps = [(n - 1) * st for n, st in zip(shape, strides, strict=True)]
    lo = 0 if 0 in shape else sum(x for x in steps if x < 0)  # the lowest byte, from item 0
    size = 0 if 0 in shape else sum(x for x in steps if x > 0) - lo + dtype.itemsize
    pinned = value.get("pinned")
    buffer = cupy.cuda.alloc_pinned_memory(size) if pinned else bytearray(size)
    return np.ndarray(shape, dtype, buffer=buffer, offset=-lo, strides=strides)


def replay_one(call: dict, cupy, np) -> dict:
    """Run one recorded call on CuPy: how far it got, and what it allocated on the way."""
    buffers: dict = {}
    objects: dict = {}
    args = [_decode(a, cupy, np, buffers, objects) for a in call["args"]]
    kwargs = {k: _decode(v, cupy, np, buffers, objects) for k, v in call["kwargs"].items()}
    kind, name = call["call"].split(".", 1)
    blas_before = _blas_calls()
    cupy.get_default_pinned_memory_pool().free_all_blocks()  # so that pinned memory is made
    REACHED.clear()
    _ALLOCATED[0] = 0
    result = {"call": call["call"], "error": None}
    try:
        if kind == "xp":  # a function of cupy, cupy.cuda or the runtime's own
            target = RUNTIME.get(name.removeprefix("cuda.runtime.")) if "runtime." in name else None
            if target is None:
                target = functools.reduce(getattr, name.split("."), cupy)
            target(*args, **kwargs)
        else:  # a method or a property (ndarray.T, Event.done) of the first argument
            attribute = getattr(args[0], name)
            if callable(attribute):
                attribute(*args[1:], **kwargs)
    except ReachedDevice:
        pass
    except Exception as e:  # CuPy refused the call before it reached the device
        result["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    if _blas_calls() > blas_before:
        REACHED.append("cublas")
    result["reached"] = sorted(set(REACHED))
    result["allocated"] = _ALLOCATED[0]
    return result


_STUB: list = []


def _blas_calls() -> int:
    return ctypes.c_long.in_dll(_STUB[0], "mlpcli_blas_calls").value if _STUB else 0


def replay(calls: list[dict], stub_dir: Path) -> dict:
    """Replay every call; the report holds one result per call and the versions used."""
    _STUB.append(load_stub(stub_dir))
    install()
    import cupy
    import numpy as np

    # CuPy 13 launches reductions from a function whose exceptions are printed, not raised
    sys.unraisablehook = lambda hook: REACHED.append(
        "kernel" if isinstance(hook.exc_value, ReachedDevice) else f"unraisable {hook.exc_value!r}"
    )
    allocate = cupy.cuda.get_allocator()

    def counting(size: int):
        _ALLOCATED[0] += size
        return allocate(size)

    cupy.cuda.set_allocator(counting)
    results = []
    for call in calls:
        try:
            results.append(replay_one(call, cupy, np))
        except Exception:
            results.append({"call": call["call"], "error": traceback.format_exc(limit=3)})
    report = {"cupy": cupy.__version__, "numpy": np.__version__, "results": results}
    report["pinned_empty"] = _pinned_empty(cupy, np)
    return report


def _pinned_empty(cupy, np) -> list[dict]:
    """What mlpcli's Backend.pinned_empty makes on this CuPy (a NumPy array over CuPy's
    pinned memory, into which the feed gathers each batch): its layout, whether NumPy may
    write into it, and whether it lies in pinned memory."""
    from mlpcli.backend import Backend

    backend = Backend("cuda", cupy, "replay")
    made = []
    for shape, dtype in [((5, 3), "float32"), ((7,), "int64"), ((0, 4), "float64")]:
        a = backend.pinned_empty(shape, dtype)
        lo = a.__array_interface__["data"][0]
        inside = any(p <= lo and lo + a.nbytes <= p + max(n, 1) for p, n in PINNED.items())
        made.append(
            {
                "shape": list(a.shape),
                "dtype": a.dtype.str,
                "writeable": bool(a.flags.writeable),
                "c_contiguous": bool(a.flags.c_contiguous),
                "pinned": inside,
            }
        )
    return made


def run_mlpcli(mode: str, stub_dir: Path, args: list[str]) -> None:
    """mlpcli's command line on real CuPy and a stand-in GPU (modes below); exits with its
    exit code.

    - "no-libraries": a GPU, and no cuBLAS or NVRTC (a CuPy wheel without the CUDA Toolkit)
    - "no-nvrtc": a GPU and cuBLAS (the stub), no NVRTC
    - "oom-data", "oom-fit": a GPU that passes the device check, and runs out of memory on the
      first allocation of MLPCLI_OOM_BYTES or more (oom-data), or on the first allocation
      once the run folder is made (oom-fit)
    """
    if mode != "no-libraries":
        _STUB.append(load_stub(stub_dir))
    if mode in ("no-libraries", "no-nvrtc"):
        fake_device()
    else:
        install()
        import cupy

        import mlpcli.backend
        import mlpcli.train

        mlpcli.backend._probe = lambda cupy: None  # the check needs a real kernel launch
        allocate, training = cupy.cuda.get_allocator(), [False]
        limit = int(os.environ.get("MLPCLI_OOM_BYTES", "0")) if mode == "oom-data" else 0

        def allocate_or_fail(size: int):
            if (limit and size >= limit) or training[0]:
                raise cupy.cuda.memory.OutOfMemoryError(size, 12 << 20)
            return allocate(size)

        cupy.cuda.set_allocator(allocate_or_fail)
        fit = mlpcli.train.Run.fit

        def fit_or_fail(self, run_dir):
            training[0] = mode == "oom-fit"
            return fit(self, run_dir)

        mlpcli.train.Run.fit = fit_or_fail
    from mlpcli.cli import main

    main(args)


def main(argv: list[str]) -> int:
    if argv[:1] == ["stub"] and len(argv) == 2:
        import importlib.util

        cupy_dir = Path(importlib.util.find_spec("cupy").origin).parent
        print(build_stub(cupy_dir, Path(argv[1])))
        return 0
    if argv[:1] == ["replay"] and len(argv) == 3:
        calls = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
        json.dump(replay(calls, Path(argv[2])), sys.stdout)
        return 0
    if argv[:1] == ["mlpcli"] and len(argv) > 3:
        run_mlpcli(argv[1], Path(argv[2]), argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
