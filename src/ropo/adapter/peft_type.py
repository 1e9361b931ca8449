"""The one place where ropo reaches into PEFT's internals: a ``ROPO`` member of ``PeftType``.

PEFT 0.21 resolves every adapter through its ``PeftType`` enum (``register_peft_method`` refuses a
name the enum lacks, and ``adapter_config.json`` is read back through ``PeftType(value)``), and
the enum has no public way to grow. This module adds the member the way ``enum`` itself stores
members, once, at import. ``test_import_registers_ropo_with_peft`` (``tests/test_peft_integration.py``)
fails loudly if PEFT or Python change how that works; the PEFT versions it is tested with are pinned in ``pyproject.toml``.
Once PEFT ships RoPO (or lets plugins add types), this module is all that goes away.
"""

from __future__ import annotations

from peft.utils import PeftType

#: The name PEFT knows RoPO adapters by (``"peft_type": "ROPO"`` in ``adapter_config.json``).
ROPO_NAME = "ROPO"


def _add_peft_type_member(name: str) -> PeftType:
    """``PeftType.<name>``, created if missing, indistinguishable from the enum's own members."""
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member._sort_order_ = len(PeftType._member_names_)
    member.__objclass__ = PeftType
    PeftType._member_names_.append(name)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    type.__setattr__(PeftType, name, member)
    return member


ROPO_PEFT_TYPE: PeftType = _add_peft_type_member(ROPO_NAME)
