"""Built-in pooling operators; importing this package registers them."""
import importlib

BUILTIN_MODULES = ("max", "avg", "skip", "blur", "mixed", "gated", "gauss", "spectral",
                   "wavelet", "dpp", "s3", "lift",
                   # beyond the LiftPool paper's twelve (docs/pools.md, "Beyond the twelve")
                   "gfgp", "softpool", "lip", "polyphase", "asap",
                   # the layers 2020-2025 papers compare against (docs/pools.md, "Beyond eighteen")
                   "tips", "adapool", "hwd", "diffstride", "pasa", "nlp", "fractional", "lppool")

for _name in BUILTIN_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
