"""POST/GET/DELETE /webhooks, their dead letters and replay (admin scope); the events declared as OpenAPI 3.1
`webhooks` (what each delivery's body is)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Path, Query, Response, status
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServiceDep
from app.core.security import AdminKey
from app.gallery.models import MAX_ID
from app.schemas import (DeadLettersPage, ErrorResponse, Event, IdentifyEvent, ReplayRequest, ReplayResult,
                         WebhookCreate, WebhookCreated, WebhookPublic)

router = APIRouter(prefix="/webhooks", tags=["events"], responses={400: {"model": ErrorResponse},
    401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
NOT_FOUND = {404: {"model": ErrorResponse}}
WebhookId = Annotated[int, Path(ge=1, le=MAX_ID, description="webhook id")]


@router.post("", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED,
             summary="Subscribe a URL to events (signed deliveries, at least once; the secret is shown once)")
async def create_webhook(body: WebhookCreate, service: ServiceDep, _key: AdminKey) -> dict:
    return await run_in_threadpool(service.events.create_webhook, body.url, list(body.events), body.secret)


@router.get("", response_model=list[WebhookPublic], summary="Webhooks and how far behind each is")
async def list_webhooks(service: ServiceDep, _key: AdminKey) -> list[dict]:
    return await run_in_threadpool(service.events.webhooks)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND,
               summary="Unsubscribe (its dead letters go too)")
async def delete_webhook(webhook_id: WebhookId, service: ServiceDep, _key: AdminKey) -> Response:
    await run_in_threadpool(service.events.delete_webhook, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/dead-letters", response_model=DeadLettersPage, responses=NOT_FOUND,
            summary="Events given up on (after FACEID_EVENTS_MAX_ATTEMPTS tries, or too far behind)")
async def dead_letters(webhook_id: WebhookId, service: ServiceDep, _key: AdminKey,
                       offset: int = Query(0, ge=0, le=10**9), limit: int = Query(50, ge=1, le=500)) -> dict:
    return await run_in_threadpool(service.events.dead_letters, webhook_id, offset, limit)


@router.post("/{webhook_id}/dead-letters/replay", response_model=ReplayResult, responses=NOT_FOUND,
             summary="Queue dead letters again (all, or those listed): delivered before newer events")
async def replay(webhook_id: WebhookId, service: ServiceDep, _key: AdminKey,
                 body: ReplayRequest | None = None) -> dict:
    ids = body.ids if body is not None else None
    return {"queued": await run_in_threadpool(service.events.replay, webhook_id, ids)}


SignatureHeader = Annotated[str, Header(description="t=<unix seconds>,v1=<hex HMAC-SHA256(secret, '<t>.<body>')>; "
                                         "refuse a t more than 5 minutes away from now")]
EventIdHeader = Annotated[str, Header(description="the event id: deduplicate by it")]


def _identify_delivery(body: IdentifyEvent, faceid_signature: SignatureHeader, faceid_event_id: EventIdHeader,
                       faceid_event_type: Annotated[str, Header()]) -> None:
    """Answer 2xx within FACEID_WEBHOOK_TIMEOUT_S; anything else (or no answer) is retried."""


def _delivery(body: Event, faceid_signature: SignatureHeader, faceid_event_id: EventIdHeader,
              faceid_event_type: Annotated[str, Header()]) -> None:
    """Answer 2xx within FACEID_WEBHOOK_TIMEOUT_S; anything else (or no answer) is retried."""


def declare_events(app: FastAPI) -> None:
    """Each event type as an OpenAPI 3.1 webhook: the POST a subscriber receives."""
    from app.services.events import EVENT_TYPES

    for type_ in EVENT_TYPES:
        receiver = _identify_delivery if type_.startswith("identify.") else _delivery
        app.webhooks.post(type_, summary=f"the `{type_}` event", tags=["events"])(receiver)
