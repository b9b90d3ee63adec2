"""Optional dependencies of some families, checked before anything is loaded.

Granite Speech's feature extractor needs torchaudio; Gemma 3n's model always builds its timm
vision tower (timm imports torchvision). PyPI's builds of those match one torch build each:
beside the CPU torch wheel that scripts/install.sh pins they do not import, so they are extras
(`granite`, `gemma3n` in pyproject.toml), installed where torch and they match (GPU machines).
"""

from __future__ import annotations

import importlib

from biasbench.errors import BiasbenchError
from biasbench.paths import install_extra


def require_extra(title: str, extra: str, modules: tuple[str, ...], why: str) -> None:
    """BiasbenchError naming the extra to install unless every module in `modules` imports.

    A real import, not a metadata check: a torchaudio/torchvision built for another torch is
    installed but fails to import, and that is the case to report."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or a build for another torch (OSError, RuntimeError)
            failed.append(f"{name}: {type(exc).__name__}: {exc}".strip())
    if failed:
        raise BiasbenchError(
            f"{title} needs {' and '.join(modules)} ({why}), which cannot be imported here ({'; '.join(failed)}). "
            f"Install them with {install_extra(extra)}, on a machine whose torch build has matching "
            f"{' / '.join(modules)} wheels (e.g. a CUDA machine); beside the pinned CPU torch wheel they do not import."
        )
