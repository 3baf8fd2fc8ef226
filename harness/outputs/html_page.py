"""Markdown to one self-contained HTML page, for report.html.

markdown_to_html understands only the subset of Markdown the report writes and the summaries it
embeds: headings, paragraphs, bullet lists, pipe tables (a cell may hold an escaped \\|), fenced
code, `code`, **bold** and images. Text is HTML-escaped; images are read from the results folder and
embedded as base64 data URIs, and the style sheet (STYLE) is inlined, so the page fetches nothing
and still opens offline once the folder's other files are gone.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1360px; margin: 0.5em auto;
       padding: 0 1em; line-height: 1.4; color: #222; font-size: 14px; }
h1 { font-size: 1.45em; margin: 0.2em 0; } h2 { font-size: 1.2em; margin: 0.6em 0 0.3em; }
p { margin: 0.3em 0; } ul { margin: 0.3em 0; padding-left: 1.4em; } li { margin: 0.1em 0; }
h2#headline-findings + ul { font-size: 13px; line-height: 1.35; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.82em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
table.verdict { font-size: 12px; margin: 0.3em 0; } table.verdict td, table.verdict th { padding: 1px 6px;
       line-height: 1.25; max-width: 18em; }
td.ok { background: #e3f4e1; } td.warn { background: #fdf1cf; } td.bad { background: #f9dcdc; }
td.na { background: #eeeeee; color: #666; }
p.legend { font-size: 12px; color: #555; }
details { margin: 0.4em 0; border-top: 1px solid #ddd; padding-top: 0.3em; }
summary { font-size: 1.1em; font-weight: 600; cursor: pointer; }
pre { background: #f6f6f6; padding: 0.7em; overflow-x: auto; font-size: 0.85em; }
code { background: #f6f6f6; padding: 0 0.2em; }
img { max-width: 100%; border: 1px solid #ddd; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
"""


def _inline(text: str) -> str:
    """Escape, then `code` and **bold**."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


def _row_cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def _td(text: str, column: int, table_class: str, classify) -> str:
    """A cell; in a marked table it wraps only after a comma or semicolon, and gets its class."""
    if not table_class:
        return f"<td>{_inline(text)}</td>"
    shown = re.sub(r"(?<![,;]) ", "\u00a0", _inline(text))
    css = classify(text) if classify is not None and column > 0 else ""
    return f'<td class="{css}">{shown}</td>' if css else f"<td>{shown}</td>"


def _image(alt: str, target: str, run_dir: Path) -> str:
    path = run_dir / target
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return f"<p>(image {html.escape(target)} missing)</p>"
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(target)}</figcaption></figure>"
    )


RAW = re.compile(r"^(<details><summary>.*</summary>|</details>)$")  # passed through as written
MARK = re.compile(r"^<!-- (\w+) -->$")  # names the class of the table that follows


def markdown_to_html(markdown: str, run_dir: Path, title: str, classify=None) -> str:
    """The report's Markdown as one HTML page: headings, paragraphs, lists, tables, code, images.

    Only the subset the report writes (and the summaries it embeds) is understood; images become
    data URIs read from run_dir, so the page needs no other file. Headings get ids from their text.
    A table or paragraph after a `<!-- name -->` line gets class `name`; a marked table's body cells
    get `classify(text)`.
    """
    out, lines, i, table_class, used = [], markdown.splitlines(), 0, "", {}
    while i < len(lines):
        line = lines[i]
        if RAW.match(line):
            out.append(line)
            i += 1
        elif m := MARK.match(line):
            table_class = m.group(1)
            i += 1
        elif line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1 : j])) + "</code></pre>")
            i = j + 1
        elif m := re.match(r"^(#{1,6}) (.*)$", line):
            level, slug = len(m.group(1)), re.sub(r"[^a-z0-9]+", "-", m.group(2).lower()).strip("-") or "section"
            used[slug] = used.get(slug, 0) + 1
            slug += f"-{used[slug]}" if used[slug] > 1 else ""
            out.append(f'<h{level} id="{slug}">{_inline(m.group(2))}</h{level}>')
            i += 1
        elif m := re.match(r"^!\[(.*)\]\((.*)\)\s*$", line):
            out.append(_image(m.group(1), m.group(2), run_dir))
            i += 1
        elif line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            block = [_row_cells(row) for row in lines[i:j] if not re.match(r"^\|[\s|:-]*\|$", row)]
            head = "".join(f"<th>{_inline(c)}</th>" for c in block[0])
            body = "".join(
                "<tr>" + "".join(_td(c, k, table_class, classify) for k, c in enumerate(row)) + "</tr>"
                for row in block[1:]
            )
            attribute = f' class="{table_class}"' if table_class else ""
            out.append(f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            i, table_class = j, ""
        elif line.startswith("- "):
            j = i
            while j < len(lines) and lines[j].startswith("- "):
                j += 1
            out.append("<ul>" + "".join(f"<li>{_inline(item[2:])}</li>" for item in lines[i:j]) + "</ul>")
            i = j
        elif line.strip():
            j = i
            while j < len(lines) and lines[j].strip() and not re.match(r"^(#|```|\||- |!\[|<)", lines[j]):
                j += 1
            attribute = f' class="{table_class}"' if table_class else ""
            out.append(f"<p{attribute}>" + _inline(" ".join(lines[i:j])) + "</p>")
            i, table_class = max(j, i + 1), ""
        else:
            i += 1
    body = "\n".join(out)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
