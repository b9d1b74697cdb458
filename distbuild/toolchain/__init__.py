"""Client toolchains as content: rustc, its sysroot and a linker, packaged for remote images.

Public surface::

    tc = ensure_toolchain(rustc_path, store, cache_dir)   # packaged once, then remembered
    tc.digest               # the archive's BLAKE3 digest in ``store``
    tc.platform_property    # ("toolchain", "<hash>/<size>") for the action's platform
    tc.rustc_in_image       # "/toolchain/bin/rustc"
"""

from __future__ import annotations

from distbuild.toolchain.discover import IMAGE_ROOT, RUSTC_IN_IMAGE
from distbuild.toolchain.package import PROPERTY, Toolchain, build_rootfs, ensure_toolchain

__all__ = ["IMAGE_ROOT", "PROPERTY", "RUSTC_IN_IMAGE", "Toolchain", "build_rootfs",
           "ensure_toolchain"]
