"""Dead letters: list, show, requeue, discard."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query

from netjobs.api import auth
from netjobs.api.deps import acting, celery, page, plain
from netjobs.services.tokens import TokenUser

router = APIRouter(prefix="/deadletters", tags=["dead letters"])

LETTER_ID = Path(..., ge=1, le=2**63 - 1, description="the dead letter's id")
MAX_ROWS = 10_000


@router.get("", summary="Dead letters, newest first")
def list_letters(all: bool = Query(False, description="include those already requeued"),
                 limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=MAX_ROWS),
                 user: TokenUser = Depends(auth.viewer)) -> dict:
    from netjobs.services.deadletters import list_dead_letters

    rows = list_dead_letters(limit=min(MAX_ROWS, offset + limit + 1), include_requeued=all)
    return page(rows, limit, offset)


@router.get("/{letter_id}", summary="One dead letter with its arguments and traceback")
def show(letter_id: int = LETTER_ID, user: TokenUser = Depends(auth.viewer)) -> dict:
    from netjobs.services.deadletters import get_dead_letter

    return plain(get_dead_letter(letter_id))


@router.post("/{letter_id}/requeue", summary="Send the task again with its arguments (operator)")
def requeue(letter_id: int = LETTER_ID, user: TokenUser = Depends(auth.operator)) -> dict:
    from netjobs.services.deadletters import requeue_dead_letter

    with acting(user):
        task_id = requeue_dead_letter(letter_id, celery().send_task)
    return {"dead_letter": letter_id, "task_id": task_id}


@router.delete("/{letter_id}", summary="Discard a dead letter for good (operator)")
def discard(letter_id: int = LETTER_ID, user: TokenUser = Depends(auth.operator)) -> dict:
    from netjobs.services.deadletters import discard_dead_letter

    with acting(user):
        discard_dead_letter(letter_id)
    return {"dead_letter": letter_id, "discarded": True}
