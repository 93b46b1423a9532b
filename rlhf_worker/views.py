"""Admin pages for training jobs."""
from django.shortcuts import render

from labeling_app.roles import RESEARCHER, role_required
from rlhf_worker.models import TrainingJob


@role_required(RESEARCHER)
def job_list(request):
    jobs = TrainingJob.objects.select_related("created_by")[:100]
    return render(request, "jobs/list.html", {"jobs": jobs})
