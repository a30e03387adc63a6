"""The operator console: server-rendered pages over the query API (``runstate console``).

It reads the query API and acts through its command endpoints as the signed-in user, so it has
no write path and no state of its own (docs/console.md). Its modules: :mod:`.session`
(signed cookies, CSRF), :mod:`.app` (the application, sign-in), :mod:`.pages` and
:mod:`.actions` (the routes), :mod:`.viewer` (buttons and masking), :mod:`.timeline`,
:mod:`.dead_letters`, :mod:`.api` (the query API as the user), :mod:`.serve` (start-up).
"""

from __future__ import annotations
