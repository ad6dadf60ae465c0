"""A small HTML page per model to try a prediction by hand (no external JS or CSS)."""

from __future__ import annotations

import html
import json
from typing import Any

__all__ = ["render_form"]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; }}
label {{ display: block; margin: .4rem 0; }} label span {{ display: inline-block; width: 14rem; }}
pre {{ background: #f3f3f3; padding: .8rem; white-space: pre-wrap; }}
.error {{ color: #a00; }}
</style></head><body>
<h1>{title}</h1>
<p>Version {version}{sha}. Fields are prefilled from the model's input example.</p>
<form id="f">{fields}<button type="submit">Predict</button></form>
<pre id="out">Result appears here.</pre>
<script>
const types = {types};
document.getElementById("f").addEventListener("submit", async (event) => {{
  event.preventDefault();
  const record = {{}};
  for (const [name, type] of Object.entries(types)) {{
    const raw = event.target.elements[name].value;
    if (raw === "") continue;
    if (type === "boolean") record[name] = raw === "true";
    else if (["double", "float", "long", "integer"].includes(type)) record[name] = Number(raw);
    else record[name] = raw;
  }}
  const out = document.getElementById("out");
  out.className = "";
  out.textContent = "…";
  try {{
    const response = await fetch({url}, {{method: "POST",
      headers: {{"content-type": "application/json"}},
      body: JSON.stringify({{records: [record]}})}});
    const body = await response.json();
    if (!response.ok) out.className = "error";
    out.textContent = response.status + "\\n" + JSON.stringify(body, null, 2);
  }} catch (error) {{ out.className = "error"; out.textContent = String(error); }}
}});
</script></body></html>
"""


def render_form(status: dict[str, Any], example: dict[str, Any], predict_url: str) -> str:
    """The page for one served model, from its status (columns) and an input example."""
    fields, types = [], {}
    for column in status["columns"]:
        name, kind = column["name"], column["type"]
        types[name] = kind
        value = example.get(name)
        label = f"<span>{html.escape(name)} <small>({html.escape(kind)})</small></span>"
        attr = f'name="{html.escape(name)}"'
        if column["categories"] is not None or kind == "boolean":
            options = column["categories"] if kind != "boolean" else ["true", "false"]
            chosen = str(value).lower() if kind == "boolean" else value
            items = "".join(
                f"<option{' selected' if option == chosen else ''}>{html.escape(str(option))}"
                "</option>"
                for option in options
            )
            fields.append(f"<label>{label}<select {attr}>{items}</select></label>")
        else:
            step = ' step="any"' if kind in ("double", "float") else ""
            kind_attr = "number" if kind in ("double", "float", "long", "integer") else "text"
            shown = "" if value is None else html.escape(str(value))
            fields.append(
                f'<label>{label}<input type="{kind_attr}"{step} {attr} value="{shown}"></label>'
            )
    sha = f", commit {html.escape(status['sha'][:12])}" if status.get("sha") else ""

    # </script> cannot appear in JSON from json.dumps of these strings once "/" is escaped.
    def script_json(value: Any) -> str:
        return json.dumps(value).replace("</", "<\\/")

    return _PAGE.format(
        title=html.escape(f"Model {status['name']}"),
        version=html.escape(str(status["version"])),
        sha=sha,
        fields="".join(fields),
        types=script_json(types),
        url=script_json(predict_url),
    )
