"""`cursor_with_setting`: the statements inside run with the setting, and the one it replaced is back after."""

import pytest
from django.db import connection

from config.db import cursor_with_setting


def _jit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('jit')")
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_setting_holds_inside_and_is_put_back():
    before = _jit()
    inside = "off" if before == "on" else "on"
    with cursor_with_setting("jit", inside) as cursor:
        cursor.execute("SELECT current_setting('jit')")
        assert cursor.fetchone()[0] == inside
    assert _jit() == before  # the test's own transaction is still open: set_config(..., true) would outlive it


@pytest.mark.django_db
def test_setting_is_put_back_when_the_statement_fails():
    before = _jit()
    with pytest.raises(Exception, match="division by zero"):
        with cursor_with_setting("jit", "off" if before == "on" else "on") as cursor:
            cursor.execute("SELECT 1 / 0")
    assert _jit() == before
