"""``dedupkit cache info|clear``."""

from __future__ import annotations

import json

import click

from dedupkit.cli.options import handle_errors

_DIR = click.option("--cache-dir", default=None, envvar="DEDUPKIT_CACHE_DIR", type=click.Path(file_okay=False),
                    help="Cache root [default: $XDG_CACHE_HOME/dedupkit, else ~/.cache/dedupkit].")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@click.group(epilog="""\b
Example:
  dedupkit cache info
  dedupkit cache clear --part embeddings
""")
def cache():
    """Show or remove what dedupkit caches (semantic embeddings, distilled static models).

    Everything lives under one folder: --cache-dir, else $DEDUPKIT_CACHE_DIR, else
    $XDG_CACHE_HOME/dedupkit, else ~/.cache/dedupkit. Removing it is always safe: a later run
    recomputes what it needs.
    """


@cache.command("info", short_help="Show the cache folder and the size of each part.", epilog="""\b
Example:
  dedupkit cache info --json
""")
@_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the info as JSON on stdout.")
@handle_errors
def info(cache_dir, as_json):
    """Show the cache folder, and per part (embeddings, static, onnx) its entries, files and size."""
    from dedupkit.cache import cache_info

    d = cache_info(cache_dir)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(f"{d['path']}: {_mb(d['bytes'])} in {d['files']} files" + ("" if d["exists"] else " (not created yet)"))
    for kind, p in d["parts"].items():
        click.echo(f"  {kind:<10} {_mb(p['bytes']):>10}  {p['entries']} entries  {p['what']}")


@cache.command("clear", short_help="Remove cached embeddings and distilled models.", epilog="""\b
Example:
  dedupkit cache clear
  dedupkit cache clear --part static --cache-dir /scratch/dedupkit-cache
""")
@_DIR
@click.option("--part", "parts", multiple=True, type=click.Choice(["embeddings", "static", "onnx"]),
              help="Remove only this part (repeatable) [default: all].")
@handle_errors
def clear(cache_dir, parts):
    """Remove the cached embeddings, distilled static models and ONNX exports (or only --part); other files in
    the folder stay. Prints the folder on stdout."""
    from dedupkit.cache import KINDS, clear_cache

    d = clear_cache(cache_dir, tuple(parts) or tuple(KINDS))
    click.echo(d["path"])
    click.echo(f"cache: removed {_mb(d['removed_bytes'])} from {d['path']}", err=True)
