"""CLI commands: `lmforge serve`, `lmforge keys create|policy|list|revoke`, `lmforge usage` (registered in cli.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

DbOption = Annotated[Optional[str], typer.Option("--database-url", help="SQLAlchemy URL; default SQLite in LMFORGE_HOME.")]


def _settings(**overrides):
    from .settings import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _db(database_url: str | None):
    from ..store import Database

    db = Database(_settings(database_url=database_url).database)
    db.migrate()
    return db


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/] {e}")
    raise typer.Exit(1)


def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default 8000).")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="A model folder, GGUF file or name; repeat for several. Default: the bundled chat model, the demo models and the embedder.")] = None,
    quantize: Annotated[Optional[str], typer.Option(help="Weights: int8, none, or auto (int8 for GPT-2 decoders on the CPU).")] = None,
    database_url: DbOption = None,
) -> None:
    """Start the OpenAI-compatible API server."""
    from .app import create_app, load_models
    from .engine import single_threaded_main

    single_threaded_main()  # before any model is loaded: the engines' threads compute, with all cores
    from .auth import create_key, list_keys

    try:
        settings = _settings(host=host, port=port, models=model or None, quantize=quantize, database_url=database_url)
    except ValueError as e:  # pydantic's ValidationError names the setting and the allowed values
        _fail(e)
    db = _db(settings.database_url)
    if not list_keys(db):
        _, key = create_key(db, "development")
        console.print("[bold]A development key was created (it is shown only this once; only its hash is stored):[/]")
        console.print(f"    {key}")
    from ..studio import announce_admin  # studio: create the admin account on first start, show its password once
    announce_admin(db, console, settings)
    db.dispose()
    try:
        with console.status("loading models…"):
            models = load_models(settings)
    except (ValueError, OSError) as e:
        _fail(e)
    url = f"http://{settings.host}:{settings.port}"
    for m in models:
        console.print(f"  {m.name}: {m.card.parameters / 1e6:,.1f}M parameters, {m.card.context_length} tokens of "
                      f"context, {m.card.quantization if m.card.quantization != 'none' else 'float'} weights")
    console.print(f"lmforge serves {len(models)} models at [bold]{url}/v1[/]; the studio is at [bold]{url}/studio[/]")
    console.print(f'    try: curl {url}/v1/models -H "Authorization: Bearer $KEY"')
    from .server import run

    run(create_app(settings, models), settings)  # uvicorn with timeouts and connection limits (server.py)


PolicyFile = Annotated[Optional[Path], typer.Option("--policy", help="Filter policy (YAML; see docs/responsible-ai.md).")]
InputOption = Annotated[Optional[str], typer.Option(help="Moderation of prompts, every category: block, flag, allow or off.")]
OutputOption = Annotated[Optional[str], typer.Option(help="Moderation of completions, every category: block, flag, allow or off.")]
RefusalOption = Annotated[Optional[str], typer.Option("--refusal", help="The refusal message of blocked requests.")]
SwitchOption = Annotated[Optional[bool], typer.Option(help="Overrides the policy file.")]


def _policy(file, input, output, refusal, redact_output, watermark, base=None):
    """The filter policy from --policy (or `base`) and the flags, which override it; None: nothing given."""
    from ..safety.filters import build_policy

    return build_policy(file, base=base, input=input, output=output, refusal_message=refusal,
                        redact_output=redact_output, watermark=watermark)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name for the key (unique).")],
    rpm: Annotated[Optional[int], typer.Option(help="Requests per minute (default unlimited).")] = None,
    tpm: Annotated[Optional[int], typer.Option(help="Tokens per minute (default unlimited).")] = None,
    budget: Annotated[Optional[float], typer.Option(help="Budget in USD (default unlimited).")] = None,
    policy: PolicyFile = None,
    input: InputOption = None,
    output: OutputOption = None,
    refusal: RefusalOption = None,
    redact_output: SwitchOption = None,
    watermark: SwitchOption = None,
    database_url: DbOption = None,
) -> None:
    """Create a key and print it once; only its SHA-256 digest is stored. The filter policy (default: flag
    only) comes from --policy FILE and/or the flags."""
    from .auth import create_key

    try:
        rules = _policy(policy, input, output, refusal, redact_output, watermark)
        row, key = create_key(_db(database_url), name, rpm, tpm, budget, policy=rules)
    except ValueError as e:
        _fail(e)
    console.print(f"key '{row.name}' created. Copy it now, it will not be shown again:")
    typer.echo(key)


@keys_app.command("policy")
def keys_policy(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    policy: PolicyFile = None,
    input: InputOption = None,
    output: OutputOption = None,
    refusal: RefusalOption = None,
    redact_output: SwitchOption = None,
    watermark: SwitchOption = None,
    database_url: DbOption = None,
) -> None:
    """Show a key's filter policy, or replace it with --policy FILE and/or the flags."""
    import json

    from sqlalchemy import select

    from ..safety.policies import get_policy, set_policy
    from ..store import ApiKey

    db = _db(database_url)
    with db.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.name == name))
    if row is None:
        _fail(ValueError(f"no key named {name!r}"))
    current = get_policy(db, key_id=row.id)
    try:
        rules = _policy(policy, input, output, refusal, redact_output, watermark, base=current)
    except ValueError as e:
        _fail(e)
    if any(v is not None for v in (policy, input, output, refusal, redact_output, watermark)):
        set_policy(db, rules, key_id=row.id)
        current = rules
    typer.echo(json.dumps(current.to_dict(), indent=2))


@keys_app.command("list")
def keys_list(database_url: DbOption = None) -> None:
    """List keys (names, prefixes, limits, spending); never the keys themselves."""
    from .auth import list_keys

    table = Table("name", "prefix", "rpm", "tpm", "budget $", "spent $", "created", "status")
    for k in list_keys(_db(database_url)):
        table.add_row(k.name, k.prefix + "…", str(k.rpm or "-"), str(k.tpm or "-"),
                      "-" if k.budget_usd is None else f"{k.budget_usd:.2f}", f"{k.spent_usd:.4f}",
                      k.created_at.strftime("%Y-%m-%d %H:%M"), "revoked" if k.revoked_at else "active")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name.")], database_url: DbOption = None) -> None:
    """Revoke a key: requests with it answer 401 from now on."""
    from .auth import revoke_key

    try:
        revoke_key(_db(database_url), name)
    except ValueError as e:
        _fail(e)
    console.print(f"key '{name}' revoked")


def usage(
    days: Annotated[int, typer.Option(help="Report the last N days.")] = 30,
    key: Annotated[Optional[str], typer.Option(help="Only this key (by name).")] = None,
    database_url: DbOption = None,
) -> None:
    """Tokens and cost per key and model over a period."""
    from .accounting import usage_report

    start = datetime.now(timezone.utc) - timedelta(days=days)
    rows = [r for r in usage_report(_db(database_url), start=start) if key is None or r["key"] == key]
    table = Table("key", "model", "requests", "prompt tokens", "completion tokens", "cost $",
                  title=f"usage, last {days} days")
    for r in rows:
        table.add_row(r["key"], r["model"], str(r["requests"]), f"{r['prompt_tokens']:,}",
                      f"{r['completion_tokens']:,}", f"{r['cost_usd']:.6f}")
    table.add_row("total", "", str(sum(r["requests"] for r in rows)), f"{sum(r['prompt_tokens'] for r in rows):,}",
                  f"{sum(r['completion_tokens'] for r in rows):,}", f"{sum(r['cost_usd'] for r in rows):.6f}")
    console.print(table)
