"""The only package that talks to libvirt; it returns plain dataclasses and raises app.errors."""
