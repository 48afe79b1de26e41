"""Annotated dependency aliases: routes ask for what they need; tests override with dependency_overrides."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.gallery.store import GalleryStore
from app.services.recognition import FaceService


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_service(request: Request) -> FaceService:
    """The gallery a route acts on: the collection its path names (`/collections/{collection}/...`), else the
    default (404 unknown_collection for one that does not exist)."""
    name = request.path_params.get("collection")
    if name is None or name == "default":
        return request.app.state.service
    return await request.app.state.collections.get(name)


def get_store(service: Annotated[FaceService, Depends(get_service)]) -> GalleryStore:
    return service.store


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ServiceDep = Annotated[FaceService, Depends(get_service)]
StoreDep = Annotated[GalleryStore, Depends(get_store)]
