"""All models, imported so that Base.metadata knows every table."""

from app.models.base import Base
from app.models.guest import Guest
from app.models.host import Host

__all__ = ["Base", "Guest", "Host"]
