"""The rollback pattern every family follows: one CID, behind a confirmation phrase."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class RollbackConfig(dg.Config):
    """Run config of a family's rollback job."""

    cid: str = Field(description="The CID to roll back.")
    confirm: str = Field(
        default="", description="Must be exactly 'ROLLBACK <cid>' to delete anything."
    )


def confirmation_phrase(cid: str) -> str:
    """The phrase that must be typed to roll ``cid`` back."""
    return f"ROLLBACK {cid}"


def require_confirmation(config: RollbackConfig) -> None:
    """Raise ``dg.Failure`` (nothing deleted) unless ``config.confirm`` is the CID's phrase."""
    expected = confirmation_phrase(config.cid)
    if config.confirm != expected:
        raise dg.Failure(
            description=f"Refusing to roll back CID {config.cid}: set confirm to '{expected}'."
        )
