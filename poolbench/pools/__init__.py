"""Built-in pooling operators; importing this package registers them."""
import importlib

BUILTIN_MODULES = ("max", "avg", "skip", "blur", "mixed", "gated", "gauss", "spectral",
                   "wavelet", "dpp", "s3", "lift")

for _name in BUILTIN_MODULES:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _exc:  # a family not written yet
        if _exc.name != f"{__name__}.{_name}":
            raise

