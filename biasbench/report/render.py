"""Render the report's blocks as markdown and as one self-contained HTML page.

The HTML page has no external asset: its style is inline and its figures are base64 PNG
data URIs, so the file can be mailed or archived alone. Its template is rendered by
jinja2 with autoescaping on (every value of the report is text from the run, escaped).
The markdown references the same figures as PNG files next to it.
"""

from __future__ import annotations

import base64

from jinja2 import DictLoader, Environment, select_autoescape

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .88em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
caption { caption-side: bottom; text-align: left; font-size: .85em; color: #555; padding-top: .3em; max-width: 900px; }
.banner { background: #fff3cd; border: 2px solid #d39e00; padding: .6em .9em; font-weight: bold; }
.note { color: #555; font-size: .9em; }
figure { margin: 1em 0; } figure img { max-width: 100%; } figcaption { font-size: .85em; color: #555; }
ul.conclusions li { margin-bottom: .4em; }
"""

HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ style }}</style>
</head>
<body>
{% for b in blocks %}
{% if b.h is defined %}<h{{ b.level }}>{{ b.h }}</h{{ b.level }}>
{% elif b.p is defined %}<p{% if b.style %} class="{{ b.style }}"{% endif %}>{{ b.p }}</p>
{% elif b.list is defined %}<ul class="conclusions">{% for item in b.list %}<li>{{ item }}</li>{% endfor %}</ul>
{% elif b.table is defined %}<table>
{% if b.caption %}<caption>{{ b.caption }}</caption>{% endif %}
<thead><tr>{% for c in b.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in b.table %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>
{% elif b.figure is defined %}<figure><img alt="{{ b.caption }}" src="data:image/png;base64,{{ images[b.figure] }}">
<figcaption>{{ b.caption }}</figcaption></figure>
{% endif %}
{% endfor %}
</body>
</html>
"""

_ENV = Environment(loader=DictLoader({"report.html": HTML}), autoescape=select_autoescape(default=True,
                                                                                        default_for_string=True))


def to_html(blocks: list[dict], figures: dict[str, tuple[bytes, str]]) -> str:
    images = {name: base64.b64encode(png).decode("ascii") for name, (png, _) in figures.items()}
    title = next((b["h"] for b in blocks if "h" in b), "biasbench report")
    return _ENV.get_template("report.html").render(blocks=blocks, images=images, title=title, style=STYLE)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[dict], figure_dir: str) -> str:
    lines: list[str] = []
    for b in blocks:
        if "h" in b:
            lines += ["#" * b["level"] + " " + b["h"], ""]
        elif "p" in b:
            lines += [f"> **{b['p']}**" if b["style"] == "banner" else b["p"], ""]
        elif "list" in b:
            lines += [f"- {item}" for item in b["list"]] + [""]
        elif "table" in b:
            lines += ["| " + " | ".join(_cell(c) for c in b["columns"]) + " |",
                      "|" + "---|" * len(b["columns"])]
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in b["table"]]
            lines += ([""] + [f"*{b['caption']}*"] if b["caption"] else []) + [""]
        elif "figure" in b:
            lines += [f"![{b['caption']}]({figure_dir}/{b['figure']}.png)", "", f"*{b['caption']}*", ""]
    return "\n".join(lines)
