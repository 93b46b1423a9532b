"""Shared fixtures: users by role, a real Celery worker on the real Redis broker, a headless browser."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(autouse=True)
def _model_store(settings, tmp_path_factory):
    """Each test writes models and job outputs into its own temporary model store."""
    settings.MODEL_STORE = str(tmp_path_factory.mktemp("model_store"))


def make_user(username: str, *roles: str, password: str = "pw-for-tests-123"):
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user(username=username, password=password)
    for role in roles:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def labeler(db):
    return make_user("lab1", "labeler")


@pytest.fixture
def labeler2(db):
    return make_user("lab2", "labeler")


@pytest.fixture
def researcher(db):
    return make_user("res1", "researcher")


@pytest.fixture
def admin_user(db):
    return make_user("adm1", "admin")


@pytest.fixture
def demo_project(db, researcher):
    """A project with K=4, overlap 2 and three tasks, built like the demo seed."""
    from labeling_app.models import Completion, Prompt
    from labeling_app.services.projects import project_create, task_create

    project = project_create(name="Test project", user=researcher, completions_per_task=4, overlap=2)
    for i in range(3):
        prompt = Prompt.objects.create(project=project, text=f"Prompt number {i}?")
        completions = [
            Completion.objects.create(
                prompt=prompt, text=f"Answer {j} to prompt {i}", source=Completion.Source.IMPORTED
            )
            for j in range(4)
        ]
        task_create(project=project, prompt=prompt, completions=completions)
    return project


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker):
    """A real Celery worker (in a thread) consuming a queue of its own on the real Redis broker.

    The queue name is unique per test session, so a `make run` worker on the same Redis never
    takes the tests' tasks. Tests that use it need `django_db(transaction=True)`: the worker
    thread has its own database connection and sees only committed rows.
    """
    from celery.contrib.testing.worker import start_worker
    from django.conf import settings

    from config.celery import app

    from celery.signals import task_postrun
    from django.db import connections

    def close_worker_connections(task=None, **kwargs):
        # The worker thread's connection would outlive the test database otherwise (CONN_MAX_AGE).
        # A task run in the test's own thread (`.apply()`) shares the test's connection: leave it open.
        if task is not None and task.request.is_eager:
            return
        connections.close_all()

    task_postrun.connect(close_worker_connections, weak=False)
    queue = f"test-{uuid.uuid4().hex[:10]}"
    old_default, old_training = app.conf.task_default_queue, settings.TRAINING_QUEUE
    app.conf.task_default_queue = queue
    settings.TRAINING_QUEUE = queue
    try:
        with start_worker(
            app,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            loglevel="WARNING",
            queues=[queue],
            shutdown_timeout=30,
        ) as worker:
            worker.test_queue = queue
            yield worker
    finally:
        task_postrun.disconnect(close_worker_connections)
        app.conf.task_default_queue = old_default
        settings.TRAINING_QUEUE = old_training


@pytest.fixture
def training_queue(celery_worker, settings):
    """Keeps settings.TRAINING_QUEUE pointed at the test worker's queue inside a test."""
    settings.TRAINING_QUEUE = celery_worker.test_queue
    return celery_worker.test_queue


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright. Skipped where chromium is not installed,
    unless RLHF_REQUIRE_BROWSER=1 (CI sets it), where a missing browser is a failure."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("RLHF_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed: apt-get install -y chromium")
        pytest.skip("browser tests need Debian's chromium package (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser page; a screenshot of its last state is saved under test-artifacts/."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-final.png"), full_page=True)
    except Exception:  # the page may already be gone after a failure; the test result says why
        pass
    context.close()


def login(page, live_server, username: str, password: str = "pw-for-tests-123") -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
