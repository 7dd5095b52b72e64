"""Bodies of /admin/profiles."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from modules.llm.inference import SamplingParams
from modules.profiles.models import Profile

ProfileName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$")
]
SystemPrompt = Annotated[str, msgspec.Meta(min_length=1, max_length=32000)]
Description = Annotated[str, msgspec.Meta(max_length=2000)]


class ProfileCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: ProfileName
    system_prompt: SystemPrompt
    description: Description = ""
    settings: SamplingParams = msgspec.field(default_factory=SamplingParams)


class ProfileUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: ProfileName | None = None
    system_prompt: SystemPrompt | None = None
    description: Description | None = None
    settings: SamplingParams | None = None


class ProfileRead(msgspec.Struct):
    id: uuid.UUID
    name: str
    description: str
    system_prompt: str
    settings: SamplingParams
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, profile: Profile) -> ProfileRead:
        return msgspec.convert(profile, cls, from_attributes=True)
