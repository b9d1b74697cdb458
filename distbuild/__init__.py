"""cargo-distbuild: distributed compilation and content-addressed caching for Rust."""

__version__ = "0.1.0"
