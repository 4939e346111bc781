"""/api/v1/jobs/{id}: a long task's status and progress, and asking it to stop."""

from typing import Any

from fastapi import APIRouter, status

from app.api.schemas import JobOut
from app.deps import SessionDep, guard
from app.models import Job
from app.services import jobs as job_service
from app.services.auth import Permission

router = APIRouter(tags=["jobs"])


@router.get("/jobs/{job_id:id}", response_model=JobOut, dependencies=guard(Permission.VIEW))
def get_job(job_id: int, session: SessionDep) -> Job:
    """One job: its status, progress, error and result."""
    return job_service.get_job(session, job_id)


@router.post(
    "/jobs/{job_id:id}/cancel",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=guard(Permission.OPERATE, "job.cancel"),
    responses={404: {"description": "no such job"}, 409: {"description": "finished already"}},
)
def cancel_job(job_id: int, session: SessionDep) -> Any:
    """Ask a backup or restore job to stop; it cleans up and ends as cancelled."""
    job = job_service.request_cancel(session, job_id)
    session.commit()
    return job
