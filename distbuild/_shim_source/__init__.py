"""The compiled shim's Rust source (``wrapper/distbuild_wrap.rs``), shipped as package data.

``distbuild_wrap.rs`` here is a symbolic link to the one source in ``wrapper/``; building a
wheel or an sdist copies its contents, so every install, not only an editable checkout, can
build the compiled shim (``distbuild/master/shim.py``).
"""
