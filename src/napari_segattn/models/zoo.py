"""Imports every model module so that each registers itself."""

from . import pam, fanet, fbunet, brunet  # noqa: F401
