"""lmlab.core: the lowest layer — errors, atomic I/O, seeding, devices, progress, registries."""

from .device import resolve_device, resolve_dtype
from .errors import (
    ConfigError,
    DataError,
    InputError,
    LmlabError,
    MissingDependencyError,
    ModelError,
)
from .io import atomic_path, atomic_write, write_bytes, write_json, write_text
from .progress import progress, set_quiet
from .registry import Registry
from .seed import make_generator, seed_everything
from .validate import check_choice, check_number

__all__ = [
    "ConfigError", "DataError", "InputError", "LmlabError", "MissingDependencyError",
    "ModelError", "Registry", "atomic_path", "check_choice", "check_number", "atomic_write", "make_generator", "progress",
    "resolve_device", "resolve_dtype", "seed_everything", "set_quiet", "write_bytes",
    "write_json", "write_text",
]
