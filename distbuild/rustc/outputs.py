"""Every file a rustc compilation writes, predicted from its arguments.

The prediction covers ``--emit`` kinds, crate types, ``-o``, ``--out-dir``, the crate name and
``-C extra-filename``; after a real run the master also picks up any other new file carrying
the same stem (split debuginfo ``.dwo``/``.dwp`` and the like), so nothing is left behind.
"""

from __future__ import annotations

import os

from distbuild.rustc.args import Compilation

# Linux naming; other hosts are not supported yet.
_LINK_NAMES = {
    "lib": "lib{stem}.rlib",
    "rlib": "lib{stem}.rlib",
    "dylib": "lib{stem}.so",
    "cdylib": "lib{stem}.so",
    "proc-macro": "lib{stem}.so",
    "staticlib": "lib{stem}.a",
    "bin": "{stem}",
}
_EMIT_SUFFIX = {
    "asm": ".s", "llvm-ir": ".ll", "llvm-bc": ".bc", "obj": ".o", "mir": ".mir",
    "dep-info": ".d",
}


def stem(comp: Compilation) -> str:
    return comp.crate_name + comp.extra_filename


def predicted_outputs(comp: Compilation) -> list[str]:
    """Absolute paths of the outputs rustc will write (sorted, no duplicates)."""
    s = stem(comp)
    outs: set[str] = set()
    crate_types = ["bin"] if comp.is_test else comp.crate_types
    single = len(comp.emit) == 1 and len(crate_types) == 1
    for kind, explicit in comp.emit.items():
        if explicit:
            outs.add(explicit)
            continue
        if kind == "link":
            if comp.output and single:
                outs.add(comp.output)
                continue
            for ct in crate_types:
                outs.add(os.path.join(comp.out_dir, _LINK_NAMES[ct].format(stem=s)))
        elif kind == "metadata":
            if comp.output and single:
                outs.add(comp.output)
            else:
                outs.add(os.path.join(comp.out_dir, f"lib{s}.rmeta"))
        elif kind in _EMIT_SUFFIX:
            if comp.output and single:
                outs.add(comp.output)
            else:
                outs.add(os.path.join(comp.out_dir, s + _EMIT_SUFFIX[kind]))
    return sorted(outs)


def dep_info_path(comp: Compilation) -> str | None:
    """Where rustc writes the dep-info file, if it writes one."""
    if "dep-info" not in comp.emit:
        return None
    explicit = comp.emit["dep-info"]
    if explicit:
        return explicit
    if comp.output and len(comp.emit) == 1:
        return comp.output
    return os.path.join(comp.out_dir, stem(comp) + ".d")

