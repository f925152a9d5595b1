"""``python -m storage.federation …``: the store CLI without the rest of scopeflow."""

from storage.federation.cli import app

app(prog_name="python -m storage.federation")
