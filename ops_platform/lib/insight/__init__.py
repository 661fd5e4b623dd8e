"""Operations insight: database statistics, uptime and backup history, as plain Python."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields


def known_fields(cls, data: Mapping) -> dict:
    """The items of ``data`` that are fields of the dataclass ``cls``: a ``from_dict`` reading
    stored metadata ignores keys a newer version added."""
    names = {field.name for field in fields(cls)}
    return {key: value for key, value in dict(data).items() if key in names}
