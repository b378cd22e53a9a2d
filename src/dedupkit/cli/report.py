"""``dedupkit report`` (HTML page) and ``dedupkit inspect`` (terminal view) of a finished run."""

from __future__ import annotations

import json
import os
import sys

import click

from dedupkit.cli.schema import config_options
from dedupkit.settings import InspectConfig, ReportConfig

from dedupkit.cli.options import PathOrURL, handle_errors
from dedupkit.terminal import safe_json, safe_text

_OUT_ARG = click.argument("out", metavar="OUT", type=PathOrURL(exists=True, file_okay=False))
_STAGE_OPT = click.option("--stage", default=None, metavar="NAME",
                          help="Only this stage of a `dedupkit run` folder (name or sub-folder, "
                               "e.g. fuzzy or 02-fuzzy).")


@click.command(epilog="""\b
Example:
  dedupkit report out/exact -o report.html
  dedupkit report out/run -o run.html --largest 50 --sample 100
""")
@_OUT_ARG
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The HTML file to write (written to a temporary name, then renamed).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing report page. Other files (an input, a summary) are never replaced.")
@config_options(ReportConfig)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout.")
@handle_errors
def report(out, output, overwrite, largest, sample, max_members, max_chars, seed, max_mb, title, as_json):
    """Write a self-contained HTML report of the finished run in OUT.

    OUT is a stage's output folder or a `dedupkit run` folder. The page (no network needed) shows
    per-stage counts and settings, the cluster size and score distributions (and the LSH curve of
    a fuzzy stage), the largest clusters and a random sample with word-level diffs, and a doc_id
    search. Texts come from the input shards named in OUT/summary.json. Its size is bounded: large
    runs are sampled, and the page says so. Prints the page's path.
    """
    from dedupkit import api

    res = api.report(out, output, largest=largest, sample=sample, max_members=max_members,
                     max_chars=max_chars, seed=seed, title=title, max_mb=max_mb, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps({"path": str(res.path), "bytes": res.bytes, "clusters_listed": res.clusters_listed,
                               "clusters_total": res.clusters_total, "sampled": res.sampled,
                               "notes": res.notes}, indent=2))
    else:
        click.echo(str(res.path))
    for n in res.notes:
        click.echo(f"note: {safe_text(n, one_line=True)}", err=True)
    click.echo(f"report: {res.clusters_listed} of {res.clusters_total} clusters listed"
               f"{' (sampled)' if res.sampled else ''}, {res.bytes / 1e6:.2f} MB", err=True)


@click.command(epilog="""\b
Example:
  dedupkit inspect out/fuzzy --largest 3
  dedupkit inspect out/run --doc doc-000123 | less -R
""")
@_OUT_ARG
@click.option("--cluster", "cluster", type=int, default=None, metavar="ID", help="Show cluster ID.")
@click.option("--doc", "doc", default=None, metavar="DOC_ID", help="Show the cluster of DOC_ID.")
@click.option("--largest", type=click.IntRange(min=1), default=None, metavar="N",
              help="Show the N largest clusters of each stage.")
@_STAGE_OPT
@config_options(InspectConfig)
@click.option("--color/--no-color", default=None,
              help="Highlight the diff with colors (default: when stdout is a terminal and NO_COLOR "
                   "is unset). Without colors, removed words print as [-word-] and added as {+word+}.")
@click.option("--json", "as_json", is_flag=True, help="Print the clusters as JSON.")
@handle_errors
def inspect(out, cluster, doc, largest, stage, max_members, max_chars, color, as_json):
    """Show duplicate clusters of the finished run in OUT in the terminal.

    Give one of --cluster ID, --doc DOC_ID or --largest N. Each cluster shows the kept
    representative, then each duplicate with its score and a word-level diff against the
    representative.
    """
    from dedupkit import api
    from dedupkit.report.model import cluster_dict

    if sum(x is not None for x in (cluster, doc, largest)) != 1:
        raise click.UsageError("pass exactly one of --cluster ID, --doc DOC_ID, --largest N")
    from dedupkit.decontaminate import is_decontamination_run

    if stage is None and is_decontamination_run(out):
        from dedupkit.cli.decontaminate import print_inspection

        print_inspection(out, doc=doc, cluster=cluster, largest=largest, max_members=max_members,
                         max_chars=max_chars, as_json=as_json)
        return
    if cluster is None and _inspect_spans(out, doc, largest, stage, max_chars, color, as_json):
        return  # every stage shown cut spans (substring, decontaminate --mode cut): shown as cuts
    res = api.inspect(out, cluster=cluster, doc=doc, largest=largest, stage=stage,
                      max_members=max_members, max_chars=max_chars)
    if as_json:
        click.echo(safe_json(json.dumps([
            {"stage": f.stage.label, "note": f.note,
             "cluster": cluster_dict(f.cluster) if f.cluster else None} for f in res.findings
        ], indent=2, ensure_ascii=False)))
        return
    if color is None:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for n in res.notes:
        click.echo(f"note: {safe_text(n, one_line=True)}", err=True)
    first = True
    for f in res.findings:
        if not first:
            click.echo("")
        first = False
        if f.cluster is None:
            click.echo(safe_text(f.note or "", one_line=True))
            continue
        click.echo(format_cluster(f.stage.label, f.cluster, color, f.highlight), color=color)


def _indent(text: str, pad: str = "    ", styled: bool = False) -> str:
    if not styled:  # data: no control sequence reaches the terminal (see dedupkit.terminal)
        text = safe_text(text)
    return "\n".join(pad + line for line in text.splitlines()) if text else pad


def _diff_text(diff, color: bool) -> str:
    from dedupkit.report.diff import plain

    if not color:
        return safe_text(plain(diff))
    parts = []
    for tag, text in diff:
        text = safe_text(text)
        if tag == "=":
            parts.append(text)
        elif tag == "-":
            parts.append(click.style(text, fg="red", strikethrough=True))
        else:
            parts.append(click.style(text, fg="green", bold=True))
    return "".join(parts)


def format_cluster(label: str, c, color: bool, highlight: str | None = None) -> str:
    """A cluster as terminal text (ANSI-styled when ``color``)."""
    from dedupkit.report.diff import diff_stats

    def b(s: str) -> str:
        return click.style(s, bold=True) if color else s

    def head(kind: str, m, rep: bool = False) -> str:
        score = f" score {m.score:.3f}" if m.score is not None and not rep else ""
        return (f"  {b(kind)} {safe_text(str(m.doc_id), True)} ({safe_text(str(m.shard), True)} row {m.row})"
                f"{score}{' [truncated]' if m.truncated else ''}")

    def mark(m) -> str:
        return "  <-- this document" if highlight is not None and m.doc_id == highlight else ""

    lines = [b(f"{safe_text(label, True)} cluster {c.cluster_id}: {c.size} documents")]
    r = c.representative
    lines.append(head("KEPT" if r.keep else "REPRESENTATIVE", r, rep=True) + mark(r))
    lines.append(_indent(r.text if r.text is not None else "(text unavailable)"))
    for m in c.duplicates:
        h = head("ALSO KEPT" if m.keep else "DROPPED", m)
        if m.diff is not None:
            st = m.words or diff_stats(m.diff)
            h += f"  -{st['removed']} +{st['added']} words" if st["removed"] or st["added"] else "  same words"
            if st.get("same_ignoring_case"):
                h += " (same words ignoring case)"
            lines.append(h + mark(m))
            if st["removed"] or st["added"]:
                lines.append(_indent(_diff_text(m.diff, color), styled=True))
            else:
                lines.append("    (the representative's words; spacing may differ)")
        else:
            lines.append(h + mark(m))
            lines.append(_indent(m.text if m.text is not None else "(text unavailable)"))
    if c.hidden:
        lines.append(f"  ... and {c.hidden} more (raise --max-members)")
    return "\n".join(lines)


def _inspect_spans(out, doc, largest, stage, max_chars, color, as_json) -> bool:
    """Show what span stages cut (a diff of each document against its cut text); True when the
    run holds only span stages, so that nothing else is left to show."""
    from dedupkit.report.spans_view import cut_doc_dict, cut_documents

    view = cut_documents(out, doc=doc, largest=largest, stage=stage, max_chars=max_chars)
    if not view.span_stages:
        return False
    if color is None:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    if as_json:
        click.echo(json.dumps([cut_doc_dict(d) for d in view.docs], indent=2, ensure_ascii=False))
    else:
        for n in view.notes:
            click.echo(n if doc is not None and n.startswith(doc) else f"note: {n}", err=not n.startswith(str(doc)))
        for i, d in enumerate(view.docs):
            if i:
                click.echo("")
            head = (f"{d.stage}: {d.doc_id} ({d.shard} row {d.row}): {len(d.spans)} span(s), {d.bytes_cut} bytes cut"
                    f"{'' if d.keep else ', document DROPPED (too short after cutting)'}")
            click.echo(click.style(head, bold=True) if color else head, color=color)
            for sp in d.spans[:10]:
                src = (f"kept in {sp['duplicate_of']} at byte {sp['duplicate_start']}" if sp["duplicate_of"]
                       else (sp["source"] or "every copy cut"))
                click.echo(f"  bytes {sp['start']}..{sp['end']}: {src}")
            if len(d.spans) > 10:
                click.echo(f"  ... and {len(d.spans) - 10} more spans")
            if d.diff is None:
                click.echo("    (text unavailable)")
            else:
                click.echo(_indent(_diff_text(d.diff, color) + (" [truncated]" if d.truncated else "")), color=color)
    return not view.other_stages
