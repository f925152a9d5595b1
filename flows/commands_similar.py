"""``scopeflow store similar``, ``store embed`` and ``store map``: similarity search on the command line.

``register(store_app)`` adds them to the store's Typer group. They live here, not in
``storage``, because a query image is embedded on the caller's side (``tasks.embedding``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from scopeflow.errors import InputError, ScopeflowError

console = Console(stderr=True)

UrlOpt = typer.Option("--url", envvar="SCOPEFLOW_STORE_URL", help="Store URL.", show_envvar=True)
#: Candidates ``store similar`` re-ranks unless told: ~0.14 s a query on a 2-core machine
#: (see benchmarks/README.md), worth it at the command line, where one query is asked at a time.
RERANK_DEFAULT = 20
TokenOpt = typer.Option("--token", envvar="SCOPEFLOW_STORE_TOKEN", help="Bearer token.", show_envvar=False)


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code=2)


def _client(url: str | None, token: str | None) -> Any:
    from storage.federation.client import DEFAULT_URL, StoreClient
    from storage.federation.paths import read_token

    return StoreClient(url or DEFAULT_URL, token or read_token(None))


def similar(
    target: Annotated[str, typer.Argument(help="A record (d/12, alias) with --frame, or an image file.")],
    frame: Annotated[int | None, typer.Option("--frame", min=0, help="Frame of the record to match.")] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=1000, help="How many frames to return.")] = 10,
    md: Annotated[str | None, typer.Option(help="Metadata expression, as in 'store search'.")] = None,
    tag: Annotated[list[str], typer.Option(help="Required tag (repeatable).")] = [],  # noqa: B006
    owner: Annotated[str | None, typer.Option(help="Owner's user name.")] = None,
    collection: Annotated[str | None, typer.Option(help="Within a collection.")] = None,
    after: Annotated[str | None, typer.Option(help="Record created at or after (ISO date/time).")] = None,
    before: Annotated[str | None, typer.Option(help="Record created before (ISO date/time).")] = None,
    pixel_size: Annotated[
        float | None, typer.Option("--pixel-size", help="Å/px of an image file without that metadata.")
    ] = None,
    rerank: Annotated[
        int,
        typer.Option(
            "--rerank",
            min=0,
            max=200,
            help="Re-rank the index's N nearest by registering the query frame onto each (0: off).",
        ),
    ] = RERANK_DEFAULT,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    url: Annotated[str | None, UrlOpt] = None,
    token: Annotated[str | None, TokenOpt] = None,
) -> None:
    """The K frames most like the query that you may read: record id, frame, distance, metadata
    (and with re-ranking, ``match``: how well the query registers onto the frame)."""
    from storage.federation.similarity.client import image_payload
    from storage.federation.similarity.client import similar as ask
    from tasks.embedding import EMBEDDER_VERSION, embed_frame

    query: dict[str, Any] = {
        "embedder": EMBEDDER_VERSION,
        "k": k,
        "md": md,
        "tags": tag,
        "owner": owner,
        "collection": collection,
        "created_after": after,
        "created_before": before,
        "rerank": rerank or None,
    }
    try:
        path = Path(target)
        if frame is None:
            if not path.is_file():
                raise InputError(f"{target}: no such image file (a record query needs --frame N)")
            from tasks.acquisition.readers import read_image

            image, file_pixel_size, _ = read_image(path)
            size = pixel_size if pixel_size is not None else file_pixel_size
            if size is None:
                raise InputError(f"{path}: the file records no pixel size; pass --pixel-size (Å/px)")
            query["vector"] = embed_frame(image, size).tolist()
            if rerank:
                query["image"] = image_payload(image, size)
        else:
            query["record"], query["frame"] = target, frame
        with _client(url, token) as client:
            answer = ask(client, **query)
    except ScopeflowError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    for item in answer["items"]:
        match = item.get("match")
        scored = "" if match is None else f"\t{match:.3f}"
        typer.echo(
            f"{item['id']}\t{item['frame']}\t{item['distance']:.4f}{scored}\t{item['title']}\t{json.dumps(item['metadata'])}"
        )


def embed(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory (Zarr group).")],
    record: Annotated[str, typer.Option("--record", help="The store record that holds this dataset.")],
    url: Annotated[str | None, UrlOpt] = None,
    token: Annotated[str | None, TokenOpt] = None,
) -> None:
    """Embed the dataset's frames that have no embedding yet, and send all to the record in the store."""
    from storage.datasets import frame_count
    from tasks.embedding import EMBEDDER_VERSION
    from tasks.embedding.ingest import embed_missing, send_to_store

    try:
        if not (Path(dataset) / "zarr.json").exists():
            raise InputError(f"no scopeflow dataset at {dataset} (no zarr.json)")
        if frame_count(dataset) == 0:
            raise InputError(f"{dataset}: no frames to embed")
        added = embed_missing(dataset)
        with _client(url, token) as client:
            sent = send_to_store(client, dataset, record)
    except ScopeflowError as exc:
        raise _fail(exc) from None
    console.print(f"{added} frames embedded; {sent} embeddings ({EMBEDDER_VERSION}) sent to {record}")


def map_url(
    url: Annotated[str | None, UrlOpt] = None,
    token: Annotated[str | None, TokenOpt] = None,
) -> None:
    """Print the address of the store's map page (the token rides in the fragment, never sent)."""
    from storage.federation.client import DEFAULT_URL
    from storage.federation.paths import read_token
    from tasks.embedding import EMBEDDER_VERSION

    base = (url or DEFAULT_URL).rstrip("/")
    tok = token or read_token(None) or ""
    typer.echo(f"{base}/map#embedder={EMBEDDER_VERSION}&token={tok}")


def register(store_app: typer.Typer) -> None:
    """Add ``similar``, ``embed`` and ``map`` to the store's command group."""
    store_app.command()(similar)
    store_app.command()(embed)
    store_app.command("map")(map_url)
