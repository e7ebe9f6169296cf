"""A small report: PNG figures plus a Markdown and an HTML page in one folder."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Report:
    """Collects sections (heading, text, figures, tables) and writes report.md and report.html."""

    folder: Path
    title: str
    sections: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def add(self, heading: str, text: str = "", figures: list[tuple[object, str, str]] | None = None,
            table: list[list[str]] | None = None) -> None:
        """Add a section; ``figures`` are (matplotlib Figure, file stem, caption)."""
        saved = []
        for fig, stem, caption in figures or []:
            path = self.folder / f"{stem}.png"
            fig.savefig(path, dpi=110)
            saved.append((path.name, caption))
        self.sections.append((heading, text, saved, table))

    def write(self) -> Path:
        """Write report.md and report.html; returns the HTML path."""
        md = [f"# {self.title}", ""]
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for heading, text, figs, table in self.sections:
            md += [f"## {heading}", "", text, ""]
            body += [f"<h2>{html.escape(heading)}</h2>"]
            body += [f"<p>{html.escape(par)}</p>" for par in text.split("\n\n") if par.strip()]
            if table:
                md += ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
                md += ["| " + " | ".join(r) + " |" for r in table[1:]] + [""]
                body += ["<table border='1' cellpadding='4' style='border-collapse:collapse'>"]
                body += ["<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in table[0]) + "</tr>"]
                body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in table[1:]]
                body += ["</table>"]
            for name, caption in figs:
                md += [f"![{caption}]({name})", "", f"*{caption}*", ""]
                body += [f"<figure><img src='{name}' style='max-width:100%'><figcaption>{html.escape(caption)}"
                         "</figcaption></figure>"]
        (self.folder / "report.md").write_text("\n".join(md))
        page = ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(self.title)
                + "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}</style></head><body>"
                + "\n".join(body) + "</body></html>")
        out = self.folder / "report.html"
        out.write_text(page)
        return out
